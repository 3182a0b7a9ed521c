"""PCA projection and chart geometry (numeric, no database)."""

from types import SimpleNamespace

import numpy as np
import pytest

from recommender.dashboard.charts import _nice_max, metric_charts, phase_chart
from recommender.dashboard.projection import ProjectionError, pca_2d


def test_pca_separates_two_planted_clusters_along_the_first_axis():
    rng = np.random.default_rng(0)
    direction = rng.normal(size=16)
    a = rng.normal(scale=0.1, size=(50, 16)) + 3 * direction
    b = rng.normal(scale=0.1, size=(50, 16)) - 3 * direction
    coordinates, explained = pca_2d(np.vstack([a, b]))

    assert coordinates.shape == (100, 2)
    assert coordinates.min() >= 0.0 and coordinates.max() <= 1.0 + 1e-12
    first_a, first_b = coordinates[:50, 0], coordinates[50:, 0]
    assert first_a.max() < first_b.min() or first_b.max() < first_a.min()
    assert explained[0] > 0.9 and explained[0] >= explained[1]


def test_pca_is_deterministic_and_sign_stable():
    vectors = np.random.default_rng(3).normal(size=(40, 8))
    first, _ = pca_2d(vectors)
    again, _ = pca_2d(vectors.copy())
    np.testing.assert_array_equal(first, again)


def test_pca_refuses_non_finite_vectors_and_handles_tiny_inputs():
    with pytest.raises(ProjectionError, match="NaN or inf"):
        pca_2d(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ProjectionError, match="expected an"):
        pca_2d(np.zeros(3))
    assert pca_2d(np.zeros((0, 4)))[0].shape == (0, 2)
    np.testing.assert_array_equal(pca_2d(np.ones((1, 4)))[0], [[0.5, 0.5]])


@pytest.mark.parametrize("value, expected", [(0.21, 0.25), (0.3, 0.5), (0.05, 0.05), (1.7, 2.0), (0.0, 1.0)])
def test_axis_maximum_is_a_round_number_above_the_data(value, expected):
    assert _nice_max(value) == pytest.approx(expected)


def _version(pk, metrics, baseline, phases, peak_rss_mib=None):
    return SimpleNamespace(
        pk=pk, metrics=metrics, baseline_metrics=baseline, phase_seconds=phases, phase_peak_rss_mib=peak_rss_mib or {}
    )


def test_bar_heights_are_proportional_to_the_values():
    versions = [
        _version(1, {"precision_at_10": 0.2}, {"precision_at_10": 0.1}, {}),
        _version(2, {"precision_at_10": 0.1}, {"precision_at_10": 0.1}, {}),
    ]
    chart = next(c for c in metric_charts(versions) if c.key == "precision_at_10")
    heights = {(bar["title"].split()[0], bar["series"]): bar["height"] for bar in chart.bars}
    assert heights[("v1", "model")] == pytest.approx(2 * heights[("v1", "baseline")], rel=1e-3)
    assert heights[("v2", "model")] == pytest.approx(heights[("v2", "baseline")])
    assert [group["label"] for group in chart.groups] == ["v1", "v2"]


def test_phase_bars_stack_in_order_and_total():
    chart = phase_chart([_version(5, {}, {}, {"training": 3.0, "building_dataset": 1.0, "publishing": 0.5})])
    (row,) = chart["rows"]
    assert [segment["phase"] for segment in row["segments"]] == ["building dataset", "training", "publishing"]
    assert row["segments"][1]["width"] == pytest.approx(3 * row["segments"][0]["width"], rel=1e-3)
    assert row["total"] == "4.5 s"


def test_a_phase_bar_names_its_peak_memory_when_recorded():
    chart = phase_chart([_version(6, {}, {}, {"training": 2.0, "publishing": 1.0}, peak_rss_mib={"training": 1234})])
    (row,) = chart["rows"]
    titles = {segment["phase"]: segment["title"] for segment in row["segments"]}
    assert titles["training"] == "v6 training: 2.00 s, peak memory 1,234 MiB"
    assert titles["publishing"] == "v6 publishing: 1.00 s"
