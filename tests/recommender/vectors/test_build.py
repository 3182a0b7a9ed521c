"""HNSW build sizing (recommender/vectors/build.py): memory from the graph, capped; workers from the cores."""

from __future__ import annotations

from recommender.vectors.build import MIB, MIN_BUILD_MEMORY, hnsw_build_settings, hnsw_graph_bytes


def test_a_small_graph_gets_the_floor_and_every_core_but_one():
    build = hnsw_build_settings(n_items=1682, dimension=34, m=16, budget_bytes=None, cpu_count=2)

    assert build.maintenance_work_mem_bytes == MIN_BUILD_MEMORY
    assert build.maintenance_work_mem == "64MB"
    assert build.parallel_workers == 1


def test_a_large_graph_asks_for_its_size_until_the_budget_caps_it():
    graph = hnsw_graph_bytes(1_000_000, 66, 16)
    assert graph == 1_000_000 * (4 * 66 + 320 + 96)

    roomy = hnsw_build_settings(n_items=1_000_000, dimension=66, m=16, budget_bytes=4096 * MIB, cpu_count=16)
    assert roomy.maintenance_work_mem_bytes == graph + graph // 4
    assert roomy.parallel_workers == 8  # capped: more workers than that stop paying on one build

    capped = hnsw_build_settings(n_items=1_000_000, dimension=66, m=16, budget_bytes=256 * MIB, cpu_count=1)
    assert capped.maintenance_work_mem_bytes == 256 * MIB
    assert capped.parallel_workers == 0


def test_the_size_grows_smoothly_with_the_catalogue():
    sizes = [
        hnsw_build_settings(
            n_items=n, dimension=34, m=16, budget_bytes=8192 * MIB, cpu_count=2
        ).maintenance_work_mem_bytes
        for n in (100_000, 200_000, 400_000, 800_000)
    ]
    assert sizes == sorted(sizes)
    assert sizes[-1] < 2.5 * sizes[-2]  # no step: twice the items, about twice the memory
