"""`DeepRetrievalIndex` on a clustered catalogue of 2000 items, against `ExactIndex` over the same copy.

No database: the copy is a `VersionVectors` built in numpy, and the exact index is the fallback and
the reference. The contract tests (test_contract.py) run the kind on the planted catalogue with a
beam over every path; these check the approximate regime: small candidate sets, exact scores, the
re-ask when filters leave too few candidates, items added after the build, archives.
"""

from __future__ import annotations

import numpy as np
import pytest

from recommender.ml.deep_retrieval import DeepRetrievalError, DeepRetrievalParams
from recommender.vectors.base import AnnFilters
from recommender.vectors.deep_retrieval import DeepRetrievalIndex, deep_retrieval_build, deep_retrieval_index_load
from recommender.vectors.exact import ExactIndex, VersionVectors
from recommender.vectors.pgvector import PgvectorIndex

torch = pytest.importorskip("torch")

N_ITEMS, DIMENSION, CLUSTERS = 2000, 8, 25
PARAMS = DeepRetrievalParams(layers=2, nodes=12, beam=5, em_rounds=2, epochs=2, hidden=48, targets_per_query=50)


def _copy(embeddings: np.ndarray, biases: np.ndarray, item_ids: np.ndarray, active: np.ndarray) -> VersionVectors:
    score_vectors = np.hstack([embeddings, biases, np.ones((len(embeddings), 1))]).astype(np.float32)
    return VersionVectors(
        version_id=7,
        item_ids=item_ids,
        row_of={int(item_id): row for row, item_id in enumerate(item_ids.tolist())},
        score_vectors=score_vectors,
        embeddings=embeddings.astype(np.float32),
        active=active,
    )


@pytest.fixture(scope="module")
def catalogue():
    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    centres = 2.0 * rng.standard_normal((CLUSTERS, DIMENSION))
    embeddings = centres[rng.integers(0, CLUSTERS, N_ITEMS)] + 0.4 * rng.standard_normal((N_ITEMS, DIMENSION))
    biases = rng.normal(0, 0.3, (N_ITEMS, 1))
    active = np.ones(N_ITEMS, dtype=bool)
    active[::50] = False
    vectors = _copy(embeddings, biases, 10 * np.arange(N_ITEMS, dtype=np.int64) + 3, active)
    tastes = centres[rng.integers(0, CLUSTERS, 700)] + 0.5 * rng.standard_normal((700, DIMENSION))
    users = np.hstack([tastes, np.ones((700, 1)), rng.normal(0, 0.3, (700, 1))]).astype(np.float32)
    structure = deep_retrieval_build(vectors, query_vectors=users[:600], params=PARAMS)
    return vectors, structure, users[600:], (embeddings, biases, active)


def _indexes(vectors, structure):
    # No feature filters here, so the fallback is never asked (and these tests need no database).
    exact = ExactIndex(vectors, fallback=PgvectorIndex(vectors.version_id))
    return DeepRetrievalIndex(vectors, structure, fallback=exact), exact


def test_user_answers_score_a_small_candidate_set_exactly_and_match_brute_force(catalogue):
    vectors, structure, held_out, _ = catalogue
    index, exact = _indexes(vectors, structure)
    recall, scored = [], []
    for query in held_out:
        found = index.user_neighbours(query, k=10, filters=AnnFilters())
        expected = exact.user_neighbours(query, k=10, filters=AnnFilters())
        by_id = dict(exact.user_neighbours(query, k=N_ITEMS, filters=AnnFilters()))
        assert all(score == by_id[item_id] for item_id, score in found)  # exact scores, bit for bit
        assert len(found) == 10
        recall.append(len({i for i, _ in found} & {i for i, _ in expected}) / 10)
        scored.append(len(index.candidate_rows(query)) / N_ITEMS)
    assert np.mean(recall) >= 0.93
    assert np.mean(scored) <= 0.15
    inactive = set(vectors.item_ids[~vectors.active].tolist())
    assert not {item_id for item_id, _ in index.user_neighbours(held_out[0], k=100, filters=AnnFilters())} & inactive


def test_filters_that_leave_too_few_candidates_re_ask_exactly(catalogue):
    vectors, structure, held_out, _ = catalogue
    index, exact = _indexes(vectors, structure)
    query = held_out[0]
    candidates = index.candidate_rows(query)
    outside = np.setdiff1d(np.flatnonzero(vectors.active), candidates)
    assert len(outside) >= 20
    # Everything on the beam's paths is excluded: only an exact scan can find the 20 allowed.
    filters = AnnFilters(exclude_item_ids=tuple(vectors.item_ids[candidates].tolist()))
    found = index.user_neighbours(query, k=20, filters=filters)
    assert found == exact.user_neighbours(query, k=20, filters=filters)
    assert len(found) == 20 and not {item_id for item_id, _ in found} & set(vectors.item_ids[candidates].tolist())


def test_item_neighbours_exclude_every_seed_and_mostly_match_brute_force(catalogue):
    vectors, structure, _, _ = catalogue
    index, exact = _indexes(vectors, structure)
    seeds = vectors.item_ids[[1, 2, 3, 400, 401]].tolist()
    for measure in ("dot", "cosine", "euclidean", "norm_damped"):
        found = index.item_neighbours(seeds, k=10, filters=AnnFilters(), measure=measure)
        expected = exact.item_neighbours(seeds, k=10, filters=AnnFilters(), measure=measure)
        assert found.keys() == set(seeds)
        overlap = []
        for seed in seeds:
            assert len(found[seed]) == 10 and not {item_id for item_id, _ in found[seed]} & set(seeds)
            overlap.append(len({i for i, _ in found[seed]} & {i for i, _ in expected[seed]}) / 10)
        assert np.mean(overlap) >= 0.8, measure
    assert index.item_neighbours([10**9], k=5, filters=AnnFilters()) == {10**9: []}


def test_items_added_after_the_build_are_candidates_of_every_query(catalogue):
    vectors, structure, held_out, (embeddings, biases, active) = catalogue
    newcomer = held_out[0][:DIMENSION] * 3.0  # an item every nearby query ranks first
    grown = _copy(
        np.vstack([embeddings, newcomer]),
        np.vstack([biases, [[0.0]]]),
        np.append(vectors.item_ids, 10**6),
        np.append(active, True),
    )
    index, exact = _indexes(grown, structure)
    assert N_ITEMS in index.candidate_rows(held_out[5]).tolist()
    assert index.user_neighbours(held_out[0], k=1, filters=AnnFilters())[0][0] == 10**6
    assert exact.user_neighbours(held_out[0], k=1, filters=AnnFilters())[0][0] == 10**6


def test_a_saved_structure_loads_by_path_with_the_same_answers(catalogue, tmp_path):
    vectors, structure, held_out, _ = catalogue
    index, exact = _indexes(vectors, structure)
    structure.save(tmp_path / "v7.npz")
    loaded = deep_retrieval_index_load(tmp_path / "v7.npz", vectors=vectors, fallback=exact)
    np.testing.assert_array_equal(loaded.structure.item_ids, vectors.item_ids)
    for query in held_out[:10]:
        assert loaded.user_neighbours(query, k=30, filters=AnnFilters()) == index.user_neighbours(
            query, k=30, filters=AnnFilters()
        )


def test_a_structure_for_another_layout_is_refused(catalogue):
    vectors, structure, _, (embeddings, biases, active) = catalogue
    wider = _copy(np.hstack([embeddings, np.zeros((N_ITEMS, 1))]), biases, vectors.item_ids, active)
    with pytest.raises(DeepRetrievalError, match="another version"):
        DeepRetrievalIndex(wider, structure, fallback=PgvectorIndex(wider.version_id))
