"""Deterministic assignment of a unit (a user, a visitor cookie) to a variant, and team-draft
interleaving. Pure Python: no Django, no database, no process state.

A unit's bucket is the first 8 bytes of SHA-256 over ``"<salt>:<unit>"`` mapped onto
``BUCKETS`` slots. The same (salt, unit) gives the same bucket in every process, after every
restart and on every machine (Python's own ``hash`` is salted per process, so it is not used).
Variants own consecutive runs of slots in their order, sized by their shares (percent): with
shares 50/50 a unit lands in A when its bucket is below 5,000. A new salt per experiment keeps
one experiment's split independent of another's.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

BUCKETS = 10_000  # a hundredth of a percent per slot


def unit_bucket(salt: str, unit: str) -> int:
    """The unit's slot in ``[0, BUCKETS)``; uniform and stable for a given salt."""
    digest = hashlib.sha256(f"{salt}:{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def variant_index(shares: Sequence[int], bucket: int) -> int:
    """The index of the variant whose run of slots holds ``bucket``; shares are percents summing to 100."""
    if sum(shares) != 100:
        raise ValueError(f"Shares must sum to 100, not {sum(shares)}.")
    edge = 0
    for index, share in enumerate(shares):
        edge += share * (BUCKETS // 100)
        if bucket < edge:
            return index
    return len(shares) - 1  # unreachable with shares summing to 100


def team_draft(first: Sequence[int], second: Sequence[int], *, k: int, seed: str) -> list[tuple[int, int]]:
    """Team-draft interleaving (Radlinski, Kurup and Joachims 2008) of two rankings.

    Returns up to ``k`` ``(item_id, team)`` pairs, team 0 for ``first`` and 1 for ``second``. In
    each round the team with fewer picks so far picks next (a coin, seeded by ``seed``, breaks
    ties), taking its best item not yet shown. A click then credits the team that contributed the
    item; a unit whose clicks favour one team prefers that ranker.
    """
    coin = random.Random(seed)
    rankings = (list(dict.fromkeys(first)), list(dict.fromkeys(second)))
    positions = [0, 0]
    picks = [0, 0]
    shown: set[int] = set()
    merged: list[tuple[int, int]] = []
    while len(merged) < k:
        exhausted = [_advance(rankings[team], positions, team, shown) for team in (0, 1)]
        if all(exhausted):
            break
        if exhausted[0] or exhausted[1]:
            team = 1 if exhausted[0] else 0
        elif picks[0] != picks[1]:
            team = 0 if picks[0] < picks[1] else 1
        else:
            team = coin.randrange(2)
        item_id = rankings[team][positions[team]]
        merged.append((item_id, team))
        shown.add(item_id)
        picks[team] += 1
    return merged


def _advance(ranking: list[int], positions: list[int], team: int, shown: set[int]) -> bool:
    """Skip the team's items already shown; True when its ranking has nothing left."""
    while positions[team] < len(ranking) and ranking[positions[team]] in shown:
        positions[team] += 1
    return positions[team] >= len(ranking)
