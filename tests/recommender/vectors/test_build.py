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


def test_hnsw_is_kept_while_its_predicted_builds_fit_the_budget_and_ivfflat_beyond():
    from recommender.vectors.build import HNSW, IVFFLAT, ann_plan_choose, hnsw_seconds_predict

    # n·log n from the pilot: ten times the items costs a bit more than ten times the seconds.
    assert hnsw_seconds_predict(pilot_seconds=2.0, pilot_items=20_000, n_items=20_000) == 2.0
    tenfold = hnsw_seconds_predict(pilot_seconds=2.0, pilot_items=20_000, n_items=200_000)
    assert 20.0 * 1.2 < tenfold < 20.0 * 1.25

    plan = {"n_indexes": 3, "pilot_items": 20_000, "budget_seconds": 240.0, "rows_per_list": 1000}
    kept = ann_plan_choose(n_items=200_000, pilot_seconds=2.0, **plan)
    assert (kept.method, kept.lists) == (HNSW, None)
    assert "<= budget 240 s" in kept.reason
    over = ann_plan_choose(n_items=1_000_000, pilot_seconds=2.0, **plan)
    assert (over.method, over.lists) == (IVFFLAT, 1000)
    assert over.predicted_hnsw_seconds > 240.0
    assert "IVFFlat, 1,000 lists" in over.reason
    # No pilot (a catalogue no larger than the sample): its own build is as cheap, HNSW.
    assert ann_plan_choose(n_items=1682, pilot_seconds=None, **plan).method == HNSW


def test_the_choice_moves_with_the_measured_rate_not_with_a_size():
    from recommender.vectors.build import ann_plan_choose

    plan = {"n_items": 500_000, "n_indexes": 3, "pilot_items": 20_000, "budget_seconds": 240.0, "rows_per_list": 1000}
    # The same catalogue: a fast machine (or a cheap m) keeps HNSW, a slow one falls back.
    assert ann_plan_choose(pilot_seconds=0.5, **plan).method == "hnsw"
    assert ann_plan_choose(pilot_seconds=5.0, **plan).method == "ivfflat"


def test_ivfflat_lists_hold_a_fixed_number_of_rows_each():
    from recommender.vectors.build import ivfflat_lists

    assert ivfflat_lists(1_000_000, 1000) == 1000
    assert ivfflat_lists(1_000_001, 1000) == 1001
    assert ivfflat_lists(60, 1000) == 1
