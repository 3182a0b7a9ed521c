"""The server-rendered catalogue pages, through Django's test client on the real database."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from catalog import services
from catalog.models import Feedback, Item, UserProfile
from tests.factories import FeedbackFactory, ItemFactory, UserFactory, UserProfileFactory

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def _cards(html: str) -> list[str]:
    """Titles of the item cards on a page, in order."""
    return re.findall(r'<h3 class="card-title"><a href="[^"]+">([^<]*)</a>', html)


@pytest.fixture
def profile():
    return UserProfileFactory()


@pytest.fixture
def signed_in(client, profile):
    client.force_login(profile.user)
    return client


@pytest.fixture
def item():
    return ItemFactory(
        external_id="tt-heat",
        title="Heat (1995)",
        description="A heist thriller.",
        provider="Warner",
        published_at=datetime(1995, 12, 15, tzinfo=UTC),
        features=[("genre", "Crime"), ("genre", "Drama"), ("year", "1995")],
    )


def _post_rating(client, item, data, **extra):
    return client.post(reverse("item-rate", args=[item.external_id]), data, **extra)


# -- home -----------------------------------------------------------------------------------------


def test_home_lists_popular_items_most_popular_first(client):
    quiet, busy = ItemFactory(title="Quiet film"), ItemFactory(title="Busy film")
    FeedbackFactory(item=busy)
    FeedbackFactory(item=busy)
    FeedbackFactory(item=quiet)
    ItemFactory(title="Unseen film")
    response = client.get(reverse("home"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Popular right now" in html
    assert _cards(html) == ["Busy film", "Quiet film"]
    assert "2 interactions" in html


def test_home_falls_back_to_newest_items_without_feedback(client):
    ItemFactory(title="Older", published_at=datetime(1990, 1, 1, tzinfo=UTC))
    ItemFactory(title="Newer", published_at=datetime(2000, 1, 1, tzinfo=UTC))
    html = client.get(reverse("home")).content.decode()
    assert "New in the catalogue" in html
    assert _cards(html) == ["Newer", "Older"]


# -- catalogue ------------------------------------------------------------------------------------


@pytest.fixture
def shelf():
    ItemFactory(title="Toy Story", features=[("genre", "Comedy"), ("year", "1995")], provider="Pixar")
    ItemFactory(title="Heat", features=[("genre", "Crime"), ("year", "1995")], provider="Warner")
    ItemFactory(title="Clueless", features=[("genre", "Comedy"), ("year", "1995")], provider="Paramount")
    ItemFactory(title="Fargo", features=[("genre", "Crime"), ("year", "1996")], provider="Gramercy")


def test_catalogue_lists_items_with_filters_available(client, shelf):
    response = client.get(reverse("catalogue"), {"sort": "title"})
    assert response.status_code == 200
    html = response.content.decode()
    assert _cards(html) == ["Clueless", "Fargo", "Heat", "Toy Story"]
    assert 'name="genre" value="Comedy"' in html and "Comedy (2)" in html
    assert 'name="provider" value="Pixar"' in html
    assert "4 items" in html


def test_catalogue_filters_actually_filter(client, shelf):
    def titles(**params):
        return _cards(client.get(reverse("catalogue"), {"sort": "title", **params}).content.decode())

    assert titles(genre="Comedy") == ["Clueless", "Toy Story"]
    assert titles(genre=["Comedy", "Crime"], year="1996") == ["Fargo"]
    assert titles(provider="Warner") == ["Heat"]
    assert titles(q="toy") == ["Toy Story"]
    assert titles(q="no such title") == []


def test_catalogue_sort_orders(client, shelf):
    toy = Item.objects.get(title="Toy Story")
    FeedbackFactory(item=toy)
    html = client.get(reverse("catalogue"), {"sort": "popular"}).content.decode()
    assert _cards(html)[0] == "Toy Story"
    html = client.get(reverse("catalogue"), {"sort": "title"}).content.decode()
    assert _cards(html)[0] == "Clueless"


def test_catalogue_shows_bad_filter_values_instead_of_failing(client, shelf):
    response = client.get(reverse("catalogue"), {"genre": "Western", "sort": "sideways", "page": "x", "sort_dir": "1"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Select a valid choice. Western is not one of the available choices." in html
    # The invalid filter is ignored, so everything is listed (sorted by the default, popularity).
    assert len(_cards(html)) == 4


def test_catalogue_paginates_24_per_page_and_caps_the_page_size(client):
    Item.objects.bulk_create([Item(external_id=f"bulk-{n:03d}", title=f"Film {n:03d}") for n in range(100)])
    first = client.get(reverse("catalogue"), {"sort": "title"}).content.decode()
    assert _cards(first) == [f"Film {n:03d}" for n in range(24)]
    assert "Page 1 of 5" in first
    assert "sort=title&amp;page=2" in first  # the next link keeps the filters
    last = client.get(reverse("catalogue"), {"sort": "title", "page": 5}).content.decode()
    assert _cards(last) == [f"Film {n:03d}" for n in range(96, 100)]
    huge = client.get(reverse("catalogue"), {"sort": "title", "page_size": 100000}).content.decode()
    assert len(_cards(huge)) == 96
    beyond = client.get(reverse("catalogue"), {"sort": "title", "page": 999}).content.decode()
    assert "Page 5 of 5" in beyond


def test_catalogue_htmx_request_gets_only_the_results_fragment(client, shelf):
    response = client.get(reverse("catalogue"), {"genre": "Crime", "sort": "title"}, HTTP_HX_TARGET="results", **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html and "<form" not in html
    assert _cards(html) == ["Fargo", "Heat"]


def test_catalogue_query_count_does_not_grow_with_items(client, django_assert_max_num_queries):
    for n in range(30):
        ItemFactory(title=f"Film {n}", features=[("genre", "Drama"), ("year", str(1990 + n % 5))])
    FeedbackFactory.create_batch(5)
    # facets (2: features, providers) + count + page + features prefetch
    with django_assert_max_num_queries(5):
        response = client.get(reverse("catalogue"), {"genre": "Drama"})
    assert len(_cards(response.content.decode())) == 24


def test_home_query_count(client, django_assert_max_num_queries):
    for _ in range(15):
        FeedbackFactory(item=ItemFactory(features=[("genre", "Drama")]))
    with django_assert_max_num_queries(3):
        response = client.get(reverse("home"))
    assert len(_cards(response.content.decode())) == 12


# -- item detail and rating -----------------------------------------------------------------------


def test_item_detail_shows_the_item(client, item):
    other, another = UserProfileFactory(), UserProfileFactory()
    services.feedback_record(profile=other, item=item, kind="rating", value=4)
    services.feedback_record(profile=another, item=item, kind="rating", value=3)
    response = client.get(reverse("item-detail", args=[item.external_id]))
    assert response.status_code == 200
    html = response.content.decode()
    for expected in (
        "Heat (1995)",
        "A heist thriller.",
        "Warner",
        "15 December 1995",
        "Crime",
        "Drama",
        "<strong>3.5</strong> / 5 from 2 ratings",
        "Show related items",
        "Sign in</a> to rate this item",
    ):
        assert expected in html


def test_item_detail_unknown_id_is_404(client):
    assert client.get(reverse("item-detail", args=["nope"])).status_code == 404


def test_item_detail_query_count(signed_in, item, django_assert_max_num_queries):
    # session + user + item + features + profile + state + statistics
    with django_assert_max_num_queries(7):
        assert signed_in.get(reverse("item-detail", args=[item.external_id])).status_code == 200


def test_rating_through_the_page_records_and_re_rating_supersedes(signed_in, profile, item):
    response = _post_rating(signed_in, item, {"kind": "rating", "value": "4"})
    assert response.status_code == 302
    assert response.url == reverse("item-detail", args=[item.external_id])
    current = Feedback.objects.get(user=profile, item=item, is_current=True)
    assert (current.kind_id, current.value) == ("rating", 4.0)

    _post_rating(signed_in, item, {"kind": "rating", "value": "2"})
    rows = list(Feedback.objects.filter(user=profile, item=item).order_by("id").values_list("value", "is_current"))
    assert rows == [(4.0, False), (2.0, True)]
    html = signed_in.get(reverse("item-detail", args=[item.external_id])).content.decode()
    assert 'id="star-2" value="2" checked' in html
    assert "Thanks, your feedback was saved." in html


@pytest.mark.parametrize("star", ["", "4", "abc"])
def test_like_button_records_a_like_whatever_star_is_checked(signed_in, profile, item, star):
    response = _post_rating(signed_in, item, {"kind": "like", "value": star})
    assert response.status_code == 302
    rows = Feedback.objects.filter(user=profile).values_list("kind_id", "value", "is_current")
    assert list(rows) == [("like", 1.0, True)]
    html = signed_in.get(reverse("item-detail", args=[item.external_id])).content.decode()
    assert 'aria-pressed="true">✓ Like</button>' in html and 'aria-pressed="false">Dislike</button>' in html


def test_rating_with_htmx_swaps_the_widget(signed_in, profile, item):
    response = _post_rating(signed_in, item, {"kind": "rating", "value": "5"}, **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="rating-widget"')
    assert "Saved. Thanks!" in html and 'id="star-5" value="5" checked' in html
    assert 'id="item-statistics" hx-swap-oob="true"' in html and "from 1 rating" in html
    assert Feedback.objects.get(user=profile, item=item).value == 5.0


def test_signed_in_user_without_profile_gets_one_when_rating(client, item):
    user = UserFactory()
    client.force_login(user)
    _post_rating(client, item, {"kind": "rating", "value": "3"})
    assert Feedback.objects.get(item=item).user.user == user


def test_anonymous_rating_redirects_to_login_and_writes_nothing(client, item):
    response = _post_rating(client, item, {"kind": "rating", "value": "4"})
    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={reverse('item-detail', args=[item.external_id])}"
    htmx_response = _post_rating(client, item, {"kind": "rating", "value": "4"}, **HTMX)
    assert htmx_response["HX-Redirect"].startswith(reverse("login"))
    assert Feedback.objects.count() == 0


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "rating", "value": "9"},
        {"kind": "rating", "value": "abc"},
        {"kind": "rating", "value": "0"},
        {"kind": "rating"},
    ],
)
def test_bad_rating_shows_an_error_and_writes_nothing(signed_in, item, data):
    response = _post_rating(signed_in, item, data)
    assert response.status_code == 400
    assert "Choose a rating from 1 to 5 stars." in response.content.decode()
    htmx_response = _post_rating(signed_in, item, data, **HTMX)
    assert htmx_response.status_code == 200
    assert 'role="alert"' in htmx_response.content.decode()
    assert Feedback.objects.count() == 0


def test_unknown_kind_shows_an_error(signed_in, item):
    response = _post_rating(signed_in, item, {"kind": "purchase", "value": "1"})
    assert response.status_code == 400
    assert "Select a valid choice." in response.content.decode()
    assert Feedback.objects.count() == 0


def test_rate_answers_only_post(signed_in, item):
    assert signed_in.get(reverse("item-rate", args=[item.external_id])).status_code == 405


def test_item_title_is_html_escaped_everywhere(signed_in, profile):
    evil = ItemFactory(external_id="evil", title="<script>alert('x')</script>", features=[("genre", "<b>G</b>")])
    services.feedback_record(profile=profile, item=evil, kind="rating", value=3)
    pages = [reverse("home"), reverse("catalogue"), reverse("item-detail", args=["evil"]), reverse("my-activity")]
    for url in pages:
        html = signed_in.get(url).content.decode()
        assert "<script>alert" not in html, url
        assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html, url
    assert "<b>G</b>" not in signed_in.get(reverse("catalogue")).content.decode()


# -- my activity ----------------------------------------------------------------------------------


def test_activity_requires_sign_in(client):
    response = client.get(reverse("my-activity"))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_activity_lists_my_current_ratings_and_events_only(signed_in, profile, item):
    mine = ItemFactory(title="Mine to view")
    services.feedback_record(profile=profile, item=item, kind="rating", value=2)
    services.feedback_record(profile=profile, item=item, kind="rating", value=5)
    services.feedback_record(profile=profile, item=mine, kind="view")
    services.feedback_record(profile=UserProfileFactory(), item=ItemFactory(title="Not mine"), kind="rating", value=1)
    html = signed_in.get(reverse("my-activity")).content.decode()
    assert "Heat (1995)" in html and "Rating: 5 / 5" in html and "Mine to view" in html
    assert "Not mine" not in html and "Rating: 2 / 5" not in html
    assert html.count('class="activity-row"') == 2


def test_activity_query_count(signed_in, profile, django_assert_max_num_queries):
    for _ in range(20):
        services.feedback_record(profile=profile, item=ItemFactory(), kind="rating", value=3)
    with django_assert_max_num_queries(5):
        html = signed_in.get(reverse("my-activity")).content.decode()
    assert html.count('class="activity-row"') == 20


def test_re_rating_from_activity_returns_to_activity(signed_in, profile, item):
    services.feedback_record(profile=profile, item=item, kind="rating", value=2)
    response = _post_rating(signed_in, item, {"kind": "rating", "value": "4", "next": reverse("my-activity")})
    assert response.url == reverse("my-activity")
    assert Feedback.objects.get(user=profile, is_current=True).value == 4.0
    # An off-site next is ignored.
    response = _post_rating(signed_in, item, {"kind": "rating", "value": "3", "next": "https://evil.example/"})
    assert response.url == reverse("item-detail", args=[item.external_id])


def test_deleting_my_feedback_removes_it(signed_in, profile, item):
    row = services.feedback_record(profile=profile, item=item, kind="rating", value=4)
    response = signed_in.post(reverse("feedback-delete", args=[row.pk]))
    assert response.status_code == 302 and response.url == reverse("my-activity")
    assert not Feedback.objects.filter(pk=row.pk).exists()
    html = signed_in.get(reverse("my-activity")).content.decode()
    assert "Removed your rating of “Heat (1995)”." in html
    assert 'class="activity-row"' not in html


def test_deleting_someone_elses_feedback_is_404(signed_in, item):
    theirs = services.feedback_record(profile=UserProfileFactory(), item=item, kind="rating", value=4)
    assert signed_in.post(reverse("feedback-delete", args=[theirs.pk])).status_code == 404
    assert signed_in.post(reverse("feedback-delete", args=[999_999_999])).status_code == 404
    assert Feedback.objects.filter(pk=theirs.pk).exists()


def test_delete_with_htmx_returns_an_empty_fragment(signed_in, profile, item):
    row = services.feedback_record(profile=profile, item=item, kind="like")
    response = signed_in.post(reverse("feedback-delete", args=[row.pk]), **HTMX)
    assert response.status_code == 200 and response.content == b""
    assert not Feedback.objects.filter(pk=row.pk).exists()


# -- sign in / sign up ----------------------------------------------------------------------------


def test_login_page_renders_and_signs_in(client):
    UserFactory(username="dana")
    assert "Sign in" in client.get(reverse("login")).content.decode()
    response = client.post(reverse("login"), {"username": "dana", "password": "correct-horse-battery"})
    assert response.status_code == 302 and response.url == reverse("home")
    assert "Signed in as <strong>dana</strong>" in client.get(reverse("home")).content.decode()


def test_signup_creates_user_and_profile_and_signs_in(client):
    assert client.get(reverse("signup")).status_code == 200
    response = client.post(
        reverse("signup"),
        {
            "username": "newperson",
            "password1": "a-long-unusual-pass-42",
            "password2": "a-long-unusual-pass-42",
        },
    )
    assert response.status_code == 302 and response.url == reverse("home")
    user = get_user_model().objects.get(username="newperson")
    assert UserProfile.objects.filter(user=user).count() == 1
    assert client.get(reverse("my-activity")).status_code == 200  # signed in


def test_signup_errors_are_shown(client):
    response = client.post(reverse("signup"), {"username": "x", "password1": "abc", "password2": "abd"})
    assert response.status_code == 200
    assert "The two password fields didn’t match." in response.content.decode()
    assert not get_user_model().objects.filter(username="x").exists()
