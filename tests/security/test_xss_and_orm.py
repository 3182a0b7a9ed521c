"""Stored XSS: item titles, feature values, rule names and import reports carrying script payloads
render escaped on every page; rule parameters never become ORM field names.

One trained model (planted catalogue) makes the recommendation surfaces real: the signed-in
homepage, the related panel, the rules preview (dashboard and admin) and the embedding map.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.test import Client
from django_celery_results.models import TaskResult

from catalog.models import Feature, ItemFeature
from catalog.services import feedback_record
from recommender.models import ModelVersion
from recommender.rerank.models import Rule
from tests.recommender.conftest import build_planted_catalog
from tests.recommender.test_training import train_inline
from tests.security.conftest import api_client, make_user

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parents[2]

PAYLOADS = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>']
# What must never reach a page unescaped: the opening tags of both payloads.
RAW = ["<script>alert(1)", "<img src=x onerror"]


def _assert_escaped(html: str, *, expect_shown: bool = True, where: str = ""):
    for raw in RAW:
        assert raw not in html, f"unescaped payload on {where}"
    if expect_shown:
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html or "&quot;&gt;&lt;img" in html, (
            f"the payload text is not shown (escaped) on {where}"
        )


@pytest.fixture
def hostile(db):
    catalog = build_planted_catalog(users_per_cluster=10, items_per_cluster=12, ratings_per_user=6)
    items = catalog.items_by_cluster[0][:2] + catalog.items_by_cluster[1][:2]
    for index, item in enumerate(items):
        item.title = f"{PAYLOADS[index % 2]} {index}"
        item.save(update_fields=["title"])
    genre = Feature.objects.create(subject="item", type="genre", value=PAYLOADS[1])
    ItemFeature.objects.create(item=items[0], feature=genre)
    version = train_inline()
    assert version.activated_at is not None
    viewer = catalog.profiles_by_cluster[0][0]
    viewer.user.is_staff = viewer.user.is_superuser = True
    viewer.user.save()
    feedback_record(profile=viewer, item=items[0], kind="rating", value=5)
    feedback_record(profile=viewer, item=items[1], kind="like")
    for payload in PAYLOADS:
        Rule.objects.create(name=payload, kind="filter_inactive")
    from recommender.dashboard.selectors import IMPORT_TASK_NAME

    TaskResult.objects.create(
        task_id="t-xss",
        status="FAILURE",
        task_name=IMPORT_TASK_NAME,
        result=json.dumps({"exc_type": "ValueError", "exc_message": PAYLOADS[0], "directory": PAYLOADS[1]}),
    )
    ModelVersion.objects.filter(pk=version.pk).update(gate_reason=PAYLOADS[1])
    return catalog, items, viewer


PAGES = [
    ("home (signed in)", "/", True),
    ("catalogue", "/catalogue/?sort=title", True),
    ("catalogue search", f"/catalogue/?q={PAYLOADS[0]}", True),
    ("item detail", "/items/{item}/", True),
    ("related panel", "/items/{other_item}/related/", True),
    ("activity", "/activity/", True),
    ("models", "/models/", True),
    ("rules", "/rules/", True),
    ("rules preview", "/rules/preview?user={viewer}", True),
    ("data", "/data/", True),
    ("embedding map", "/models/map/", False),
    ("admin items", "/admin/catalog/item/", True),
    ("admin rules", "/admin/recommender/rule/", True),
    ("admin preview", "/admin/recommender/rule/preview/?user={viewer}", True),
    ("admin item change", "/admin/catalog/item/{item_pk}/change/", True),
]


@pytest.mark.parametrize(("where", "url", "shown"), PAGES, ids=[page[0] for page in PAGES])
def test_payloads_render_escaped(hostile, where, url, shown):
    catalog, items, viewer = hostile
    client = Client()
    client.force_login(viewer.user)
    url = url.format(
        item=items[0].external_id,
        other_item=catalog.items_by_cluster[0][5].external_id,
        viewer=viewer.external_id,
        item_pk=items[0].pk,
    )
    response = client.get(url)
    assert response.status_code == 200, where
    _assert_escaped(response.content.decode(), expect_shown=shown, where=where)


def test_anonymous_home_renders_payload_titles_escaped(hostile):
    _assert_escaped(Client().get("/").content.decode(), where="anonymous home")


def test_embedding_map_json_carries_titles_as_data_and_the_script_draws_them_as_text(hostile):
    _, items, viewer = hostile
    client = Client()
    client.force_login(viewer.user)
    response = client.get("/models/map.json?color=genre")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    titles = {point[4] for point in response.json()["points"]}
    assert items[0].title in titles  # raw in JSON is right: the consumer treats it as text
    categories = {category["name"] for category in response.json()["categories"]}
    assert PAYLOADS[1] in categories
    script = (REPO / "static" / "js" / "embedding_map.js").read_text()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(", script)
    assert "label.textContent = title" in script and "tooltip.textContent" in script


def test_api_returns_titles_as_json_strings_not_markup(hostile):
    _, items, _ = hostile
    body = api_client().get(f"/api/v1/items/{items[0].external_id}")
    assert body["Content-Type"].startswith("application/json")
    assert body.json()["title"] == items[0].title


# --- ORM field names --------------------------------------------------------------------------------


@pytest.fixture
def staff_api(db):
    from tests.factories import ItemFactory

    ItemFactory(external_id="plain", title="Plain", features=[("genre", "Drama")])
    return api_client(make_user("rule-admin", staff=True))


@pytest.mark.parametrize(
    "params",
    [
        {"feature_type": "user__password", "values": ["x"]},
        {"feature_type": "genre__in", "values": ["x"]},
        {"feature_type": "genre", "values": ["Drama"], "title__startswith": "A"},
        {"feature_type": "genre", "values": ["Drama"], "feature__type": "genre"},
        {"feature_type": "genre", "values": ["Drama"], "order_by": "-user__password"},
    ],
)
def test_field_like_rule_parameters_are_refused(staff_api, params):
    response = staff_api.post("/api/v1/rules", {"name": "r", "kind": "filter_feature", "params": params}, format="json")
    assert response.status_code == 400, response.content
    assert "params" in response.json()
    assert not Rule.objects.exists()


def test_a_field_like_feature_type_that_exists_is_only_data(staff_api):
    """An item feature type may legitimately be spelt like a lookup; the rule then matches that
    feature's values, and nothing ever reads the user table."""
    from tests.factories import ItemFactory

    trap = ItemFactory(external_id="trap", title="Trap", features=[("user__password", "x")])
    created = staff_api.post(
        "/api/v1/rules",
        {"name": "r", "kind": "filter_feature", "params": {"feature_type": "user__password", "values": ["x"]}},
        format="json",
    )
    assert created.status_code == 201, created.content
    # Serving with the rule in place answers normally (the parameter is a value in a WHERE clause).
    assert staff_api.get("/api/v1/items/plain/related").status_code == 200
    assert staff_api.get(f"/api/v1/items/{trap.external_id}/related").status_code == 200
    assert Rule.objects.get().params == {"feature_type": "user__password", "values": ["x"]}


@pytest.mark.parametrize("sort", ["user__password", "-user__password", "title__foo", "pk; DROP TABLE x"])
def test_sort_parameters_are_an_allow_list(staff_api, sort):
    response = staff_api.get(f"/api/v1/items?sort={sort}")
    assert response.status_code == 400
    assert Client().get(f"/catalogue/?sort={sort}").status_code == 200  # the page ignores the bad value
