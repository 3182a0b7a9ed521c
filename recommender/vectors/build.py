"""How an HNSW index build is sized: memory from the graph it will hold, workers from the machine.

pgvector builds an HNSW graph in ``maintenance_work_mem`` and, when the graph outgrows it, goes on
inserting on disk, several times slower (it logs "hnsw graph no longer fits into
maintenance_work_mem"). Since 0.6 it also builds with ``max_parallel_maintenance_workers``. So a
build asks for what its graph needs, capped by a memory budget, and for every core but one; both
are set for the build's session only and stated in the log. Plain arithmetic, no Django.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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
