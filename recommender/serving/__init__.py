"""Serving: the request's context, the surfaces, results with explanations, fallbacks, the homepage cache.

- `context`: builds the request's `Context` (user vector, seen items, the generation);
- `surfaces`: `recommend_for_user` (home), `related_items` (an item page), `pipeline_preview`
  (the rules admin), each wiring context → candidates → ranking → rerank;
- `results`: cacheable payloads and `Recommendations` with explanations;
- `fallbacks`: popular and fresh items when the model cannot serve, and the guard deciding it;
- `home_cache`, `related_cache`: the result caches keyed by generations;
- `impressions`: impressions written behind the response, in batches.

Views, APIs and the dashboard import the surfaces from here.
"""

from .home_cache import profile_with_generations
from .impressions import impressions_flush
from .related_cache import item_viewer_generations
from .results import Recommendations, RecommendedItem
from .surfaces import K_MAX, pipeline_preview, recommend_for_user, related_items

__all__ = [
    "K_MAX",
    "Recommendations",
    "RecommendedItem",
    "impressions_flush",
    "item_viewer_generations",
    "pipeline_preview",
    "profile_with_generations",
    "recommend_for_user",
    "related_items",
]
