""" "Because you liked X": neighbours of the user's most recent positively rated items."""

from __future__ import annotations

from ._shared import context_positive_seeds, source_filters
from .base import Candidate, Context

DEFAULT_SEEDS = 5


class BecauseYouLikedSource:
    """Up to ``seeds`` recent positive items (ratings >= 4, likes, purchases), newest first.

    Each seed's neighbours are interleaved round-robin, newest seed first, so one seed with many
    close neighbours cannot fill the whole list; an item reached from two seeds keeps the first.
    Every candidate's reason names its seed: ``{"because_item_id": seed}``.
    """

    name = "because_you_liked"

    def __init__(self, seeds: int = DEFAULT_SEEDS):
        self.seeds = seeds

    def generate(self, context: Context, n: int) -> list[Candidate]:
        if context.version_id is None or context.profile_id is None or n < 1:
            return []
        seeds = context_positive_seeds(context, limit=self.seeds)
        if not seeds:
            return []
        filters = source_filters(context)
        # Start at twice the even share (seeds' neighbourhoods overlap, duplicates are skipped);
        # ask again for more only when the interleave came up short and a seed had more to give.
        # Every seed's neighbours come from ONE statement (a LATERAL join over the seeds), which
        # also keeps every seed out of every list: never recommend a seed because of another.
        per_seed = 2 * -(-n // len(seeds))
        while True:
            found = context.vector_index.item_neighbours(
                seeds, k=per_seed, filters=filters, measure=context.measure, alpha=context.norm_damping_alpha
            )
            neighbour_lists = [found.get(seed, []) for seed in seeds]
            candidates = self._interleave(seeds, neighbour_lists, per_seed)
            # A list shorter than asked is everything that seed has under the filters (the index
            # contract: k rows or a stated shortfall), so asking again cannot add to it.
            exhausted = all(len(neighbours) < per_seed for neighbours in neighbour_lists)
            if len(candidates) >= n or exhausted or per_seed >= n:
                return candidates[:n]
            per_seed = min(per_seed * 2, n)

    def _interleave(
        self, seeds: list[int], neighbour_lists: list[list[tuple[int, float]]], per_seed: int
    ) -> list[Candidate]:
        candidates: list[Candidate] = []
        taken: set[int] = set()
        for rank in range(per_seed):
            for seed, neighbours in zip(seeds, neighbour_lists, strict=True):
                if rank < len(neighbours) and neighbours[rank][0] not in taken:
                    item_id, score = neighbours[rank]
                    taken.add(item_id)
                    candidates.append(
                        Candidate(item_id=item_id, source=self.name, score=score, reason={"because_item_id": seed})
                    )
        return candidates
