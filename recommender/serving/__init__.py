"""Serving: the request's context, the surfaces, results with explanations, fallbacks, the homepage cache.

- `context`: builds the request's `Context` (user vector, seen items, the generation);
- `surfaces`: `recommend_for_user` (home), `related_items` (an item page), `pipeline_preview`
  (the rules admin), each wiring context → candidates → ranking → rerank;
- `results`: cacheable payloads and `Recommendations` with explanations;
- `fallbacks`: popular and fresh items when the model cannot serve, and the guard deciding it;
- `home_cache`, `related_cache`: the result caches keyed by generations;
- `impressions`: impressions written behind the response, in batches;
- `stored`: the rendered body of a cached list, answered as bytes by the API's lean hit path.

Views, APIs and the dashboard import the surfaces from here.
"""

from .home_cache import profile_lookup_sql, profile_with_generations
from .impressions import impressions_flush
from .related_cache import item_viewer_generations, item_viewer_lookup_sql
from .results import Recommendations, RecommendedItem
from .stored import home_stored_answer, related_stored_answer, stored_answer_save, stored_answer_served
from .surfaces import K_MAX, pipeline_preview, recommend_for_user, related_items

__all__ = [
    "K_MAX",
    "Recommendations",
    "RecommendedItem",
    "home_stored_answer",
    "impressions_flush",
    "item_viewer_generations",
    "item_viewer_lookup_sql",
    "pipeline_preview",
    "profile_lookup_sql",
    "profile_with_generations",
    "recommend_for_user",
    "related_items",
    "related_stored_answer",
    "stored_answer_save",
    "stored_answer_served",
]
