"""The line chart's geometry (pure: plain numbers in, plain dicts out)."""

from recommender.dashboard.charts import line_chart


def test_each_series_is_a_line_over_the_shared_days_with_gaps_for_missing_values():
    chart = line_chart(
        {"A": [("2026-01-02", 0.5), ("2026-01-01", 0.25)], "B": [("2026-01-01", 0.1), ("2026-01-03", None)]},
        label="Click-through",
        width=144,
        height=130,
        percent=True,
    )
    a, b = chart["lines"]
    # x: 44 + index × 92 / 2 over the three days; y: 8 + 100 × (1 - value / 0.5), the top rounded to 0.5.
    assert a["paths"] == ["44.0,58.0 90.0,8.0"]
    assert b["paths"] == ["44.0,88.0"]  # 3 January has no value: no line reaches it
    assert [dot["title"] for dot in a["dots"]] == ["A 2026-01-01: 25%", "A 2026-01-02: 50%"]
    assert a["color"] != b["color"]
    assert [tick["label"] for tick in chart["ticks"]] == ["0%", "12.5%", "25%", "37.5%", "50%"]
    assert [x["label"] for x in chart["x_labels"]] == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert chart["empty"] is False


def test_one_day_sits_in_the_middle_and_no_days_is_empty():
    single = line_chart({"A": [("2026-01-01", 3.0)]}, label="Impressions", width=144, height=130)
    assert single["lines"][0]["dots"][0]["x"] == 90.0
    assert single["ticks"][-1]["label"] == "5"
    assert line_chart({"A": [], "B": []}, label="Impressions")["empty"] is True


def test_long_series_label_at_most_about_eight_days():
    days = [(f"2026-01-{day:02d}", float(day)) for day in range(1, 31)]
    chart = line_chart({"A": days}, label="Impressions")
    assert 6 <= len(chart["x_labels"]) <= 8
    assert chart["x_labels"][0]["label"] == "2026-01-01"
