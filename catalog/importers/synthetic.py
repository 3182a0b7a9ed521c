"""A synthetic catalogue with a planted answer, planned in numpy chunks (no Django here).

The plan is pure and deterministic: the same arguments give the same arrays, chunk by chunk,
whatever else runs. Structure planted for models and tests to find:

- ``clusters`` latent taste clusters of equal size; item ``i`` belongs to one and carries the
  feature ``genre=cluster-<c>`` plus one or two noise tags (``tag=noise-<k>``, cluster-blind);
- every user belongs to one cluster (user feature ``segment=<c>``) and draws
  ``in_cluster_share`` (85 %) of their interactions from it, the rest from other clusters;
- inside a cluster, item popularity follows a Zipf law over a random popularity order;
- user activity is heavy-tailed (Pareto), providers are Zipf-sized, publication dates spread
  uniformly over ``years`` years, and explicit ratings 1..5 are higher inside the user's cluster.

Each (user, item) pair occurs at most once, so ``interactions`` ratings are exactly that many
rows under the "one current rating per pair" rule. Arrays of one value per item or user are
kept whole (a million int32s is 4 MB); interactions are only ever materialised chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

# Fixed epoch (not "now") so that a plan, including its timestamps, is reproducible.
START_UNIX = 1_609_459_200  # 2021-01-01T00:00:00Z
DAY_SECONDS = 86_400
RATING_VALUES = np.arange(1, 6, dtype=np.float32)
RATING_P_IN_CLUSTER = np.array([0.02, 0.06, 0.17, 0.37, 0.38])
RATING_P_OUT_OF_CLUSTER = np.array([0.22, 0.30, 0.28, 0.14, 0.06])
_SAMPLING_ROUNDS = 40

# Independent random streams, so that e.g. changing the interaction chunking never moves items.
_STREAM_ITEMS, _STREAM_ITEM_CHUNK, _STREAM_USERS, _STREAM_INTERACTIONS = 1, 2, 3, 4


class CatalogPlanError(ValueError):
    """The requested catalogue cannot be planned; the message says which number to change."""


@dataclass(frozen=True)
class ItemChunk:
    index: np.ndarray  # (n,) int32, item numbers (external id syn-item-<index>)
    cluster: np.ndarray  # (n,) int32 in [0, clusters)
    provider: np.ndarray  # (n,) int32, provider numbers, Zipf-sized
    published_unix: np.ndarray  # (n,) int64 seconds
    noise_tag: np.ndarray  # (n, 2) int32 noise tag numbers; -1 in column 1 means "only one"


@dataclass(frozen=True)
class UserChunk:
    index: np.ndarray  # (n,) int32, user numbers (external id syn-user-<index>)
    cluster: np.ndarray  # (n,) int32, the user's segment


@dataclass(frozen=True)
class InteractionChunk:
    user: np.ndarray  # (n,) int32 user numbers, grouped by user
    item: np.ndarray  # (n,) int32 item numbers, unique per user
    rating: np.ndarray  # (n,) float32 in 1..5
    created_unix: np.ndarray  # (n,) int64 seconds, after the item's publication
    in_cluster: np.ndarray  # (n,) bool, the item is in the user's cluster


@dataclass(frozen=True)
class CatalogPlan:
    users: int
    items: int
    interactions: int
    seed: int
    clusters: int = 8
    in_cluster_share: float = 0.85
    noise_tags: int = 50
    item_zipf: float = 1.0
    provider_zipf: float = 1.2
    activity_pareto: float = 1.5
    years: float = 5.0
    chunk_size: int = 200_000

    # -- whole-catalogue arrays (one value per item or user) ------------------------------------
    @cached_property
    def item_cluster(self) -> np.ndarray:
        """(items,) int32: equal-sized clusters, items shuffled among them."""
        rng = _rng(self.seed, _STREAM_ITEMS)
        return (rng.permutation(self.items) % self.clusters).astype(np.int32)

    @cached_property
    def cluster_members(self) -> tuple[np.ndarray, np.ndarray]:
        """(members, offsets): items grouped by cluster, most popular first within each.

        ``members[offsets[c]:offsets[c + 1]]`` lists cluster ``c``'s items in popularity rank.
        """
        rng = _rng(self.seed, _STREAM_ITEMS, 1)
        popularity_order = rng.permutation(self.items)
        members = popularity_order[np.argsort(self.item_cluster[popularity_order], kind="stable")]
        offsets = np.zeros(self.clusters + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(np.bincount(self.item_cluster, minlength=self.clusters))
        return members.astype(np.int32), offsets

    @cached_property
    def item_published_unix(self) -> np.ndarray:
        rng = _rng(self.seed, _STREAM_ITEMS, 2)
        days = rng.integers(0, int(self.years * 365), self.items)
        return START_UNIX + days.astype(np.int64) * DAY_SECONDS + rng.integers(0, DAY_SECONDS, self.items)

    @cached_property
    def user_cluster(self) -> np.ndarray:
        return _rng(self.seed, _STREAM_USERS).integers(0, self.clusters, self.users).astype(np.int32)

    @cached_property
    def user_activity(self) -> np.ndarray:
        """(users,) int64 interactions per user: heavy-tailed, capped, summing to ``interactions``."""
        rng = _rng(self.seed, _STREAM_USERS, 1)
        weights = rng.pareto(self.activity_pareto, self.users) + 1.0
        cap = self.per_user_cap
        counts = np.minimum(np.floor(weights / weights.sum() * self.interactions).astype(np.int64), cap)
        remaining = self.interactions - int(counts.sum())
        while remaining > 0:
            open_users = np.flatnonzero(counts < cap)
            chosen_weights = weights[open_users] / weights[open_users].sum()
            chosen = rng.choice(open_users, size=min(remaining, len(open_users)), replace=False, p=chosen_weights)
            counts[chosen] += 1
            remaining -= len(chosen)
        return counts

    @property
    def per_user_cap(self) -> int:
        """At most half a cluster per user, so distinct Zipf draws always stay cheap to find."""
        return max(1, self.items // (2 * self.clusters))

    # -- chunks ------------------------------------------------------------------------------------
    def item_chunks(self) -> Iterator[ItemChunk]:
        providers = max(1, self.items // 100)
        provider_cdf = _zipf_cdf(providers, self.provider_zipf)
        for number, start in enumerate(range(0, self.items, self.chunk_size)):
            stop = min(start + self.chunk_size, self.items)
            rng = _rng(self.seed, _STREAM_ITEM_CHUNK, number)
            size = stop - start
            noise = rng.integers(0, self.noise_tags, (size, 2)).astype(np.int32)
            second = rng.random(size) < 0.5
            noise[~second | (noise[:, 1] == noise[:, 0]), 1] = -1
            yield ItemChunk(
                index=np.arange(start, stop, dtype=np.int32),
                cluster=self.item_cluster[start:stop],
                provider=np.searchsorted(provider_cdf, rng.random(size), side="right").astype(np.int32),
                published_unix=self.item_published_unix[start:stop],
                noise_tag=noise,
            )

    def user_chunks(self) -> Iterator[UserChunk]:
        for start in range(0, self.users, self.chunk_size):
            stop = min(start + self.chunk_size, self.users)
            yield UserChunk(index=np.arange(start, stop, dtype=np.int32), cluster=self.user_cluster[start:stop])

    def interaction_chunks(self) -> Iterator[InteractionChunk]:
        """Interactions for consecutive runs of users holding about ``chunk_size`` rows each."""
        ends = np.cumsum(self.user_activity)
        start_user = 0
        for number in range(int(np.ceil(self.interactions / self.chunk_size)) if self.interactions else 0):
            stop_user = int(np.searchsorted(ends, (number + 1) * self.chunk_size, side="left")) + 1
            stop_user = min(stop_user, self.users)
            if stop_user > start_user:
                yield self._interactions_for(start_user, stop_user, _rng(self.seed, _STREAM_INTERACTIONS, number))
            start_user = stop_user

    def _interactions_for(self, start_user: int, stop_user: int, rng: np.random.Generator) -> InteractionChunk:
        users = np.arange(start_user, stop_user, dtype=np.int64)
        wanted = self.user_activity[start_user:stop_user]
        accepted = np.empty(0, dtype=np.int64)  # keys user * items + item, grouped by user
        needed = wanted.copy()
        for _ in range(_SAMPLING_ROUNDS):
            if not needed.any():
                break
            draws = np.repeat(users, np.ceil(needed * 1.3).astype(np.int64) + (needed > 0))
            accepted = self._keep_first(
                np.concatenate([accepted, draws * self.items + self._draw_items(draws, rng)]), start_user, wanted
            )
            needed = wanted - np.bincount(accepted // self.items - start_user, minlength=len(users))
        if needed.any():  # a rare user stuck on a tiny cluster: fill from all items, uniformly
            accepted = self._fill_uniformly(accepted, users, needed, rng)
        user = (accepted // self.items).astype(np.int32)
        item = (accepted % self.items).astype(np.int32)
        in_cluster = self.item_cluster[item] == self.user_cluster[user]
        rating = np.where(
            in_cluster,
            rng.choice(RATING_VALUES, size=len(item), p=RATING_P_IN_CLUSTER),
            rng.choice(RATING_VALUES, size=len(item), p=RATING_P_OUT_OF_CLUSTER),
        ).astype(np.float32)
        published = self.item_published_unix[item]
        end_unix = START_UNIX + int(self.years * 365) * DAY_SECONDS + DAY_SECONDS
        created = published + (rng.random(len(item)) * (end_unix - published)).astype(np.int64)
        return InteractionChunk(user=user, item=item, rating=rating, created_unix=created, in_cluster=in_cluster)

    def _draw_items(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One Zipf-ranked item per draw: own cluster with ``in_cluster_share``, else another."""
        members, offsets = self.cluster_members
        own = self.user_cluster[users]
        cluster = own.copy()
        if self.clusters > 1:
            away = rng.random(len(users)) >= self.in_cluster_share
            cluster[away] = (own[away] + rng.integers(1, self.clusters, int(away.sum()))) % self.clusters
        items = np.empty(len(users), dtype=np.int64)
        for c in range(self.clusters):
            where = np.flatnonzero(cluster == c)
            size = int(offsets[c + 1] - offsets[c])
            rank = np.searchsorted(_zipf_cdf(size, self.item_zipf), rng.random(len(where)), side="right")
            items[where] = members[offsets[c] + np.minimum(rank, size - 1)]
        return items

    def _keep_first(self, keys: np.ndarray, start_user: int, wanted: np.ndarray) -> np.ndarray:
        """Drop repeated pairs, then keep each user's first ``wanted`` pairs in draw order."""
        _, first = np.unique(keys, return_index=True)
        keys = keys[np.sort(first)]
        keys = keys[np.argsort(keys // self.items, kind="stable")]
        local = keys // self.items - start_user
        group_start = np.searchsorted(local, np.arange(len(wanted)))
        rank = np.arange(len(keys)) - group_start[local]
        return keys[rank < wanted[local]]

    def _fill_uniformly(
        self, accepted: np.ndarray, users: np.ndarray, needed: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        extra = []
        taken = set(accepted.tolist())
        for user, count in zip(users[needed > 0], needed[needed > 0], strict=True):
            for item in rng.permutation(self.items):
                key = int(user) * self.items + int(item)
                if key not in taken:
                    taken.add(key)
                    extra.append(key)
                    count -= 1
                    if count == 0:
                        break
        merged = np.concatenate([accepted, np.array(extra, dtype=np.int64)])
        return merged[np.argsort(merged // self.items, kind="stable")]

    def signature(self) -> str:
        """What must match for a second run to be "the same catalogue" (and add 0 rows)."""
        return (
            f"seed={self.seed} users={self.users} items={self.items} interactions={self.interactions} "
            f"clusters={self.clusters}"
        )


def plan_catalog(
    *,
    users: int,
    items: int,
    interactions: int,
    seed: int,
    clusters: int = 8,
    chunk_size: int = 200_000,
    in_cluster_share: float = 0.85,
) -> CatalogPlan:
    """Validate the sizes and return the deterministic plan of a synthetic catalogue."""
    if seed < 0:
        raise CatalogPlanError("--seed must be a non-negative integer.")
    if min(users, items, clusters, chunk_size) < 1 or interactions < 0:
        raise CatalogPlanError("users, items, clusters and chunk_size must be >= 1 and interactions >= 0.")
    if items < clusters:
        raise CatalogPlanError(f"{items} items cannot fill {clusters} clusters: lower --clusters.")
    if not 0.0 <= in_cluster_share <= 1.0:
        raise CatalogPlanError("in_cluster_share is a share between 0 and 1.")
    plan = CatalogPlan(
        users=users,
        items=items,
        interactions=interactions,
        seed=seed,
        clusters=clusters,
        chunk_size=chunk_size,
        in_cluster_share=in_cluster_share,
    )
    if interactions > users * plan.per_user_cap:
        raise CatalogPlanError(
            f"{interactions} interactions exceed {users} users x {plan.per_user_cap} distinct items each "
            f"(half a cluster): add users or items, or use fewer clusters."
        )
    return plan


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def _zipf_cdf(size: int, exponent: float) -> np.ndarray:
    """(size,) float64 cumulative Zipf probabilities over ranks 1..size (last value 1.0)."""
    weights = 1.0 / np.arange(1, size + 1, dtype=np.float64) ** exponent
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]
