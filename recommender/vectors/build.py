"""How a version's ANN index builds are planned: HNSW or IVFFlat by a time budget, memory and workers sized.

An HNSW build is sized with memory from the graph it will hold and workers from the machine.

pgvector builds an HNSW graph in ``maintenance_work_mem`` and, when the graph outgrows it, goes on
inserting on disk, several times slower (it logs "hnsw graph no longer fits into
maintenance_work_mem"). Since 0.6 it also builds with ``max_parallel_maintenance_workers``. So a
build asks for what its graph needs, capped by a memory budget, and for every core but one; both
are set for the build's session only and stated in the log. Plain arithmetic, no Django.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

MIB = 2**20
# pgvector's own floor, and what the project used before it sized builds (every ml-100k build fits).
MIN_BUILD_MEMORY = 64 * MIB
# A graph element holds its vector (4 bytes a dimension), up to 2·m neighbour slots on layer 0
# (6-byte item pointers plus a 4-byte distance while building) and the element's own header;
# measured pgvector 0.8 builds stay within this bound (elements on upper layers are few).
ELEMENT_OVERHEAD_BYTES = 96


@dataclass(frozen=True)
class HnswBuildSettings:
    maintenance_work_mem_bytes: int
    parallel_workers: int
    graph_bytes: int

    @property
    def maintenance_work_mem(self) -> str:
        """The GUC's value, in whole megabytes."""
        return f"{max(1, self.maintenance_work_mem_bytes // MIB)}MB"


def machine_memory_bytes() -> int:
    """Physical memory of this machine (0 when the platform does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def hnsw_graph_bytes(n_items: int, dimension: int, m: int) -> int:
    """Upper estimate of one HNSW graph's size while it is built, in bytes."""
    return int(n_items) * (4 * int(dimension) + 2 * int(m) * 10 + ELEMENT_OVERHEAD_BYTES)


def hnsw_build_settings(
    *, n_items: int, dimension: int, m: int, budget_bytes: int | None, cpu_count: int | None = None
) -> HnswBuildSettings:
    """Settings for building one HNSW index over ``n_items`` vectors of ``dimension``.

    ``budget_bytes`` caps the memory (None: a quarter of this machine's memory, at least the
    floor); the graph's estimate, with a quarter more for the build's own bookkeeping, is asked
    for when it fits. Workers: every core but one (the leader works too), at most 8.
    """
    graph = hnsw_graph_bytes(n_items, dimension, m)
    if budget_bytes is None:
        budget_bytes = max(MIN_BUILD_MEMORY, machine_memory_bytes() // 4)
    wanted = max(MIN_BUILD_MEMORY, graph + graph // 4)
    cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    return HnswBuildSettings(
        maintenance_work_mem_bytes=int(min(wanted, max(MIN_BUILD_MEMORY, budget_bytes))),
        parallel_workers=int(max(0, min(cores - 1, 8))),
        graph_bytes=graph,
    )


# How a version's ANN indexes are built: HNSW while its builds fit the time budget, else IVFFlat.
#
# Why a time budget and not a catalogue size: an HNSW build costs about n·log n graph insertions at a
# rate that depends on the machine, m, ef_construction and the dimension. On this 2-core machine one
# 1M-item build (34 dimensions, m 16 / ef_construction 64) took 426 s, three of them (a version's
# indexes) ~21 min, while IVFFlat built the same 1M rows in 30 s and reached recall@10 0.985 at 40
# probes of 1,000 lists (docs/operations.md). So publishing times a *pilot* HNSW build on a sample
# of the version's own vectors, predicts the full builds from it, and keeps HNSW when they fit.
HNSW, IVFFLAT = "hnsw", "ivfflat"


@dataclass(frozen=True)
class AnnPlan:
    """Which index method a version's builds use, and why (stated in the log and the phase detail)."""

    method: str
    lists: int | None
    predicted_hnsw_seconds: float | None
    reason: str


def hnsw_seconds_predict(*, pilot_seconds: float, pilot_items: int, n_items: int) -> float:
    """One HNSW build over ``n_items`` from a pilot build's time over ``pilot_items``: n·log n scaling."""
    pilot_items = max(int(pilot_items), 2)
    n_items = max(int(n_items), 2)
    return float(pilot_seconds) * (n_items / pilot_items) * (np.log(n_items) / np.log(pilot_items))


def ivfflat_lists(n_items: int, rows_per_list: int) -> int:
    """IVFFlat lists for ``n_items``: a fixed number of rows per list, so a query probing a fixed
    number of lists reads the same number of rows at any catalogue size (pgvector's rows / 1000)."""
    return max(1, int(np.ceil(int(n_items) / max(int(rows_per_list), 1))))


def ann_plan_choose(
    *,
    n_items: int,
    n_indexes: int,
    pilot_seconds: float | None,
    pilot_items: int,
    budget_seconds: float,
    rows_per_list: int,
) -> AnnPlan:
    """HNSW when ``n_indexes`` builds are predicted to fit ``budget_seconds``, else IVFFlat.

    ``pilot_seconds`` None means no pilot ran because the catalogue is no larger than the pilot
    sample: its full build costs what the pilot would, so it is HNSW.
    """
    if pilot_seconds is None:
        return AnnPlan(HNSW, None, None, f"{n_items:,} items, no more than the pilot sample: HNSW")
    predicted = n_indexes * hnsw_seconds_predict(pilot_seconds=pilot_seconds, pilot_items=pilot_items, n_items=n_items)
    estimate = f"{n_indexes} HNSW builds predicted {predicted:,.0f} s"
    if predicted <= budget_seconds:
        return AnnPlan(HNSW, None, predicted, f"{estimate} <= budget {budget_seconds:,.0f} s")
    lists = ivfflat_lists(n_items, rows_per_list)
    return AnnPlan(IVFFLAT, lists, predicted, f"{estimate} > budget {budget_seconds:,.0f} s: IVFFlat, {lists:,} lists")
