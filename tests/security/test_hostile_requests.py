"""Hostile requests each get a JSON 4xx, never a 500, and write nothing.

Vectors: no endpoint of this API accepts a vector (item and user vectors are computed by
training and fold-in, never sent by clients). The closest inputs are the lists a client does
send — a feedback batch and a feature list — so "vectors of the wrong size" is tested as lists
that are empty, too long, or of the wrong element shape.
"""

from __future__ import annotations

import json

import pytest
from django.test import Client

from catalog.models import Feedback, Item
from recommender.rerank.models import Rule
from tests.security.conftest import api_client

pytestmark = pytest.mark.django_db


# Client(raise_request_exception=False) turns a crash into the 500 a real client would see.
def _raw_client(user=None) -> Client:
    client = Client(raise_request_exception=False)
    if user is not None:
        client.force_login(user)
    return client


def assert_json_4xx(response, *expected: int):
    assert response.status_code in (expected or range(400, 500)), (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    assert "detail" in response.json() or response.json()  # a body that says something


def _counts() -> tuple[int, int, int]:
    return Item.objects.count(), Feedback.objects.count(), Rule.objects.count()


# --- NUL bytes --------------------------------------------------------------------------------

NUL_PATHS = [
    "/api/v1/items/item%00a",
    "/api/v1/items/item%00a/related",
    "/api/v1/users/owner%00profile",
    "/api/v1/users/owner%00profile/feedback",
    "/api/v1/users/owner%00profile/recommendations",
    "/api/v1/rules/1%00",
    "/api/v1/models/1%00/activate",
    "/api/v1/%00",
]


@pytest.mark.parametrize("path", NUL_PATHS)
def test_nul_byte_in_an_api_path_is_a_json_400(world, path):
    response = _raw_client(world.staff).get(path)
    assert_json_4xx(response, 400, 404)


@pytest.mark.parametrize(
    "query", ["search=a%00b", "sort=title%00", "page=1%00", "page_size=5%00", "include_inactive=true%00", "a%00b=1"]
)
def test_nul_byte_in_a_query_parameter_is_a_json_400(world, query):
    assert_json_4xx(_raw_client(world.staff).get(f"/api/v1/items?{query}"), 400)
    assert_json_4xx(_raw_client(world.owner).get(f"/api/v1/users/owner-profile/recommendations?k=3&{query}"), 400)


@pytest.mark.parametrize("path", ["/items/item%00a/", "/catalogue/?q=a%00b", "/rules/preview?user=a%00"])
def test_nul_byte_on_a_page_is_a_plain_400_not_a_500(world, path):
    response = _raw_client(world.staff).get(path)
    assert response.status_code == 400


@pytest.mark.parametrize(
    "body",
    [
        {"item": "item\u0000a", "kind": "rating", "value": 4},
        {"item": "item-a", "kind": "rat\u0000ing", "value": 4},
        {"item": "item-a", "kind": "rating", "value": 4, "idempotency_key": "k\u0000"},
        {"user": "owner\u0000profile", "item": "item-a", "kind": "rating", "value": 4},
    ],
)
def test_nul_character_in_a_json_body_is_a_400_and_writes_nothing(world, body):
    before = _counts()
    response = api_client(world.staff).post("/api/v1/feedback", body, format="json")
    assert_json_4xx(response, 400)
    assert _counts() == before


def test_nul_character_in_item_and_rule_bodies_is_a_400(world):
    before = _counts()
    staff = api_client(world.staff)
    assert_json_4xx(staff.post("/api/v1/items", {"external_id": "x\u0000", "title": "t"}, format="json"), 400)
    assert_json_4xx(
        staff.post(
            "/api/v1/items",
            {"external_id": "x", "title": "t", "features": [{"type": "genre", "value": "a\u0000"}]},
            format="json",
        ),
        400,
    )
    assert_json_4xx(
        staff.post(
            "/api/v1/rules",
            {"name": "n", "kind": "filter_feature", "params": {"feature_type": "genre", "values": ["a\u0000"]}},
            format="json",
        ),
        400,
    )
    assert_json_4xx(staff.post("/api/v1/rules", {"name": "n\u0000", "kind": "filter_inactive"}, format="json"), 400)
    assert _counts() == before


# --- Huge bodies --------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_a_json_413_and_is_not_read(world, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    events = [{"item": "item-a", "kind": "view"}] * 1000  # ~30 kB
    before = _counts()
    response = api_client(world.owner).post("/api/v1/feedback", {"events": events}, format="json")
    assert_json_4xx(response, 413)
    assert response.json()["limit_bytes"] == 10_000
    assert _counts() == before


def test_the_default_limit_refuses_a_five_megabyte_body(world):
    body = json.dumps({"external_id": "big", "title": "x" * (5 * 1024 * 1024)})
    response = _raw_client(world.staff).post("/api/v1/items", body, content_type="application/json")
    assert_json_4xx(response, 413)
    assert not Item.objects.filter(external_id="big").exists()


def test_a_non_numeric_content_length_is_a_json_400(world):
    response = _raw_client(world.staff).generic(
        "POST", "/api/v1/items", b"{}", content_type="application/json", CONTENT_LENGTH="lots"
    )
    assert_json_4xx(response, 400)


def test_deeply_nested_json_is_a_json_400(world):
    body = "[" * 100_000 + "]" * 100_000  # deeper than Python's recursion limit
    response = _raw_client(world.staff).post("/api/v1/rules", body, content_type="application/json")
    assert_json_4xx(response, 400)


def test_malformed_json_is_a_json_400(world):
    response = _raw_client(world.owner).post("/api/v1/feedback", '{"item": "item-a", ', content_type="application/json")
    assert_json_4xx(response, 400)


# --- Paging ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/items", "/api/v1/users", "/api/v1/users/owner-profile/feedback"])
def test_page_size_of_a_billion_is_capped(world, path):
    response = api_client(world.staff).get(f"{path}?page_size={10**9}")
    assert response.status_code == 200
    from catalog.apis import MAX_PAGE_SIZE

    assert len(response.json()["results"]) <= MAX_PAGE_SIZE


@pytest.mark.parametrize("page", ["", "0", "last", "-1", "1.5"])
def test_a_page_that_is_not_a_positive_integer_is_a_json_404(world, page):
    # DRF would serve page 1 for "" and the last page for "last"; the schema promises integers >= 1.
    assert_json_4xx(api_client(world.staff).get(f"/api/v1/items?page={page}"), 404)


def test_page_size_cap_holds_with_more_rows_than_the_cap(world):
    from catalog.apis import MAX_PAGE_SIZE
    from tests.factories import ItemFactory

    ItemFactory.create_batch(MAX_PAGE_SIZE + 5)
    body = api_client(None).get(f"/api/v1/items?page_size={10**9}").json()
    assert len(body["results"]) == MAX_PAGE_SIZE
    assert body["count"] == MAX_PAGE_SIZE + 7


@pytest.mark.parametrize("query", ["page=999999999", "page=-1", "page=abc", f"page={10**30}"])
def test_a_page_that_does_not_exist_is_a_json_404(world, query):
    assert_json_4xx(_raw_client(world.staff).get(f"/api/v1/items?{query}"), 404)


@pytest.mark.parametrize(
    "query",
    ["page_size=-5", "page_size=0", "page_size=abc", "page_size=NaN", "page_size=1e9", "include_inactive=maybe"],
)
def test_a_paging_or_flag_parameter_that_is_not_valid_is_a_json_400(world, query):
    response = _raw_client(world.staff).get(f"/api/v1/items?{query}")
    assert_json_4xx(response, 400)


def test_page_size_of_a_billion_on_the_catalogue_page(world):
    response = _raw_client().get(f"/catalogue/?page_size={10**9}&page={10**30}")
    assert response.status_code == 200


@pytest.mark.parametrize("k", [str(10**9), str(10**30), "1e9", "NaN", "Infinity", "-Infinity", "0x10"])
def test_huge_or_non_finite_k_is_capped_or_a_json_400(world, k):
    response = _raw_client(world.owner).get(f"/api/v1/users/owner-profile/recommendations?k={k}")
    if response.status_code == 200:
        from recommender.serving import K_MAX

        assert len(response.json()["items"]) <= K_MAX
    else:
        assert_json_4xx(response, 400)
    assert_json_4xx(
        _raw_client().get(f"/api/v1/items/item-a/related?k={k}"), 400
    ) if response.status_code != 200 else None


# --- NaN and Inf -------------------------------------------------------------------------------


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_non_finite_numbers_in_json_are_a_400_and_write_nothing(world, literal):
    before = _counts()
    owner = _raw_client(world.owner)
    for body in (
        f'{{"item": "item-a", "kind": "rating", "value": {literal}}}',
        f'{{"item": "item-a", "kind": "rating", "value": "{literal}"}}',
    ):
        assert_json_4xx(owner.post("/api/v1/feedback", body, content_type="application/json"), 400)
    staff = _raw_client(world.staff)
    feature = (
        f'{{"external_id": "n", "title": "n", "features": [{{"type": "g", "value": "v", "weight": "{literal}"}}]}}'
    )
    assert_json_4xx(staff.post("/api/v1/items", feature, content_type="application/json"), 400)
    rule = f'{{"name": "r", "kind": "diversity_mmr", "params": {{"lambda": "{literal}"}}}}'
    assert_json_4xx(staff.post("/api/v1/rules", rule, content_type="application/json"), 400)
    rule = f'{{"name": "r", "kind": "diversity_mmr", "params": {{"lambda": {literal}}}}}'
    assert_json_4xx(staff.post("/api/v1/rules", rule, content_type="application/json"), 400)
    assert _counts() == before


# --- Ratings out of range ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 0.49, 5.01, 6, -1, 1e308, -1e308, True, "five", "4", [], {}])
def test_ratings_out_of_range_are_a_400_and_write_nothing(world, value):
    before = _counts()
    response = api_client(world.owner).post(
        "/api/v1/feedback", {"item": "item-a", "kind": "rating", "value": value}, format="json"
    )
    assert_json_4xx(response, 400)
    assert _counts() == before


def test_one_bad_rating_in_a_batch_rejects_the_whole_batch(world):
    before = _counts()
    events = [{"item": "item-b", "kind": "rating", "value": 5}, {"item": "item-a", "kind": "rating", "value": 9}]
    response = api_client(world.owner).post("/api/v1/feedback", {"events": events}, format="json")
    assert_json_4xx(response, 400)
    assert set(response.json()["events"]) == {"1"}
    assert _counts() == before


def test_out_of_range_rating_on_the_item_page_is_a_400_page_not_a_500(world):
    before = _counts()
    response = _raw_client(world.owner).post("/items/item-a/rate", {"kind": "rating", "value": "99"})
    assert response.status_code == 400
    assert _counts() == before


# --- Lists of the wrong size (the closest thing to vectors) -----------------------------------------


def test_batches_and_feature_lists_of_the_wrong_size_are_a_400(world):
    from catalog.services import FEEDBACK_BATCH_LIMIT

    before = _counts()
    owner, staff = api_client(world.owner), api_client(world.staff)
    too_many = [{"item": "item-a", "kind": "view"}] * (FEEDBACK_BATCH_LIMIT + 1)
    assert_json_4xx(owner.post("/api/v1/feedback", {"events": too_many}, format="json"), 400)
    assert_json_4xx(owner.post("/api/v1/feedback", {"events": []}, format="json"), 400)
    assert_json_4xx(owner.post("/api/v1/feedback", {"events": {"0": {"item": "item-a"}}}, format="json"), 400)
    assert_json_4xx(owner.post("/api/v1/feedback", [1.0, 2.0, 3.0], format="json"), 400)
    features = [{"type": "g", "value": str(i)} for i in range(1001)]
    assert_json_4xx(
        staff.post("/api/v1/items", {"external_id": "f", "title": "f", "features": features}, format="json"), 400
    )
    assert_json_4xx(
        staff.post("/api/v1/items", {"external_id": "f", "title": "f", "features": [[0.1, 0.2]]}, format="json"), 400
    )
    assert _counts() == before


# --- Unknown routes and methods --------------------------------------------------------------------


def test_unknown_api_route_is_a_json_404(world):
    assert_json_4xx(_raw_client().get("/api/v1/no-such-thing"), 404)


def test_unsupported_method_is_a_json_405(world):
    assert_json_4xx(api_client(world.staff).delete("/api/v1/feedback"), 405)


def test_unparseable_content_type_is_a_json_415(world):
    response = _raw_client(world.owner).post("/api/v1/feedback", "item=item-a", content_type="text/csv")
    assert_json_4xx(response, 415)
