"""`GenerationMemo`: one per-process memo, valid while the database's ``global`` generation holds.

Serving keeps copies of what it reads on every request (the active version, the rules, item
rows, a version's vectors, the catalogue's features) in each process. They are never
invalidated by deleting them: each copy is keyed by the ``global`` cache generation the request
read first (`recommender.generations`), and every change that could alter a copy bumps that
generation after it commits. A request that read generation g therefore gets a copy at least as
new as g, and the first request after a bump reloads.

The rules every memo shares, written once here:

- **No generation, no memo.** A caller that did not read the generation gets a direct load.
- **Not inside a transaction.** Its own uncommitted writes have bumped nothing yet (tests,
  evaluation, ``ATOMIC_REQUESTS``), so a memoised copy could be older than what it can see.
- **A budget.** Entries stop being added once ``max_entries`` or ``budget_bytes`` (as measured
  by ``size_of``) would be exceeded; a value that does not fit is still answered, loaded on
  every call (the measured fallback: more queries, never a different answer). A loader may also
  refuse a value that would not fit (see `recommender.vectors.exact`), and that refusal is
  memoised like any value. ``budget_bytes`` may be a callable read at each store, so a setting
  (and a test's override of it) takes effect without rebuilding the memo.
- **A lock** around the table; loads run outside it (two threads may load the same value once
  each, never a torn one).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

from django.db import connection

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _no_size(value: object) -> int:
    return 0


class GenerationMemo(Generic[K, V]):
    """Values by key, memoised per process for one ``global`` generation of one database.

    Parameters
    ----------
    name : used in logs (``memo.loaded name=…``).
    load : key → value; called on a miss, and directly whenever the memo may not be used.
    max_entries : at most this many keys per generation (None: no limit).
    budget_bytes : at most this many bytes of values per generation, by ``size_of`` (None: no
        limit); or a callable returning it, read at each store.
    size_of : value → bytes it holds (default 0: only ``max_entries`` bounds the memo).
    """

    def __init__(
        self,
        name: str,
        load: Callable[[K], V],
        *,
        max_entries: int | None = None,
        budget_bytes: int | Callable[[], int] | None = None,
        size_of: Callable[[V], int] = _no_size,
    ):
        self.name = name
        self._load = load
        self.max_entries = max_entries
        self.budget_bytes = budget_bytes
        self._size_of = size_of
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._values: dict[K, V] = {}
        self._bytes = 0
        self._full_logged = False

    @staticmethod
    def usable(generation: int | None) -> bool:
        """True when a request holding ``generation`` may read memoised copies (see the module docstring)."""
        return generation is not None and not connection.in_atomic_block

    def _table(self, generation: int) -> dict[K, V]:
        """The values of ``generation`` (the caller holds the lock); a new generation starts empty."""
        key = (connection.settings_dict["NAME"], int(generation))
        if self._key != key:
            self._key, self._values, self._bytes, self._full_logged = key, {}, 0, False
        return self._values

    def usage(self) -> tuple[int, int]:
        """(entries, bytes by ``size_of``) of the current generation's table."""
        with self._lock:
            return len(self._values), self._bytes

    def _budget(self) -> int | None:
        return self.budget_bytes() if callable(self.budget_bytes) else self.budget_bytes

    def _log_full(self, event: str, **fields: int) -> None:
        # Once per generation: past its budget every request would otherwise log again.
        if not self._full_logged:
            self._full_logged = True
            logger.info(
                "memo.%s name=%s %s", event, self.name, " ".join(f"{key}={value}" for key, value in fields.items())
            )

    def get(self, key: K, *, generation: int | None) -> V:
        """The value of ``key``: memoised for ``generation`` (loaded on a miss), or loaded directly."""
        if generation is None or not self.usable(generation):
            return self._load(key)
        with self._lock:
            values = self._table(generation)
            if key in values:
                return values[key]
        value = self._load(key)
        self._store(generation, {key: value})
        return value

    def get_many(
        self, keys: Iterable[K], *, generation: int | None, load_many: Callable[[list[K]], dict[K, V]]
    ) -> dict[K, V]:
        """Values of several keys, the missing ones loaded in one ``load_many`` call; absent keys stay absent."""
        keys = list(keys)
        if generation is None or not self.usable(generation):
            return load_many(keys)
        with self._lock:
            values = self._table(generation)
            found = {key: values[key] for key in keys if key in values}
        missing = [key for key in keys if key not in found]
        if missing:
            loaded = load_many(missing)
            self._store(generation, loaded)
            found.update(loaded)
        return found

    def _store(self, generation: int, entries: dict[K, V]) -> None:
        sizes = {key: self._size_of(value) for key, value in entries.items()}
        budget = self._budget()
        with self._lock:
            values = self._table(generation)
            for key, value in entries.items():
                if self.max_entries is not None and len(values) >= self.max_entries:
                    self._log_full("full", entries=len(values))
                    return
                if budget is not None and self._bytes + sizes[key] > budget:
                    self._log_full("over_budget", bytes=self._bytes + sizes[key], budget=budget)
                    continue
                if key not in values:
                    self._bytes += sizes[key]
                values[key] = value

    def clear(self) -> None:
        """Forget every value (tests; serving never needs it, a generation bump does the same)."""
        with self._lock:
            self._key, self._values, self._bytes, self._full_logged = None, {}, 0, False


class VersionModels(Generic[K, V]):
    """A version's loaded models (stack, blend) per process, most recently used first, within a byte budget.

    Unlike `GenerationMemo` these values never go stale (a version's artifact is written once), so
    they are kept across generations and evicted only for room: the least recently used go while
    the values' ``size_of`` sum passes ``budget_bytes`` (read at each store, like a setting). The
    most recent value is always kept, whatever its size, since the active version must be
    answerable; a budget smaller than one version's models therefore keeps exactly one. This
    replaces a fixed "three versions": at a million items one version's models can hold a GiB.
    """

    def __init__(self, name: str, *, budget_bytes: Callable[[], int], size_of: Callable[[V], int]) -> None:
        self.name = name
        self.budget_bytes = budget_bytes
        self.size_of = size_of
        self._values: dict[K, V] = {}  # insertion order = least recently used first
        self._sizes: dict[K, int] = {}
        self._lock = threading.Lock()

    def lookup(self, key: K) -> tuple[bool, V | None]:
        """(found, value); a hit becomes the most recently used."""
        with self._lock:
            if key not in self._values:
                return False, None
            value = self._values.pop(key)
            self._values[key] = value
            return True, value

    def store(self, key: K, value: V) -> None:
        size = int(self.size_of(value))
        with self._lock:
            self._values.pop(key, None)
            self._sizes[key] = size
            self._values[key] = value
            budget = int(self.budget_bytes())
            while len(self._values) > 1 and sum(self._sizes[k] for k in self._values) > budget:
                evicted = next(iter(self._values))
                del self._values[evicted]
                del self._sizes[evicted]
                logger.info("memo.evicted name=%s key=%s budget_bytes=%s", self.name, evicted, budget)

    def keys(self) -> list[K]:
        with self._lock:
            return list(self._values)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._sizes.clear()
