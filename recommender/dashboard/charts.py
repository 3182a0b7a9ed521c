"""Geometry for the server-rendered SVG charts of the Models and Experiments pages (no JavaScript chart library).

Functions return plain dicts of numbers and labels; the templates only place them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

PHASE_ORDER = ("building_dataset", "training", "evaluating", "publishing")
PHASE_COLORS = {"building_dataset": "#8da0cb", "training": "#2f5fd0", "evaluating": "#e78ac3", "publishing": "#66c2a5"}
METRICS = (
    ("precision_at_10", "Precision@10"),
    ("recall_at_10", "Recall@10"),
    ("ndcg_at_10", "NDCG@10"),
    ("coverage", "Coverage"),
)


@dataclass
class BarChart:
    """Grouped bars: one group per version, two bars (model, popularity baseline)."""

    key: str
    label: str
    width: int
    height: int
    max_value: float
    bars: list[dict] = field(default_factory=list)
    ticks: list[dict] = field(default_factory=list)
    groups: list[dict] = field(default_factory=list)


def _nice_max(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10^k at or above ``value``, so axis ticks read well."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for mantissa in (1.0, 2.0, 2.5, 5.0, 10.0):
        candidate = mantissa * 10**exponent
        if candidate >= value * (1 - 1e-9):
            return candidate
    return 10.0 ** (exponent + 1)


def metric_charts(versions, *, width: int = 320, height: int = 180) -> list[BarChart]:
    """One grouped bar chart per metric over the versions that have metrics (oldest first)."""
    evaluated = [v for v in sorted(versions, key=lambda v: v.pk) if v.metrics]
    charts = []
    left, bottom, top = 36, 22, 8
    plot_w, plot_h = width - left - 6, height - bottom - top
    for key, label in METRICS:
        values = [(v, v.metrics.get(key), v.baseline_metrics.get(key)) for v in evaluated]
        peak = max([x for _, a, b in values for x in (a, b) if x is not None] or [0.0])
        top_value = _nice_max(peak)
        chart = BarChart(key=key, label=label, width=width, height=height, max_value=top_value)
        group_w = plot_w / max(1, len(values))
        bar_w = max(2.0, min(18.0, group_w * 0.35))
        for index, (version, model_value, baseline_value) in enumerate(values):
            x0 = left + index * group_w + (group_w - 2 * bar_w) / 2
            chart.groups.append({"x": left + index * group_w + group_w / 2, "label": f"v{version.pk}"})
            for offset, (series, value) in enumerate((("model", model_value), ("baseline", baseline_value))):
                if value is None:
                    continue
                bar_h = plot_h * min(value, top_value) / top_value
                chart.bars.append(
                    {
                        "x": round(x0 + offset * bar_w, 2),
                        "y": round(top + plot_h - bar_h, 2),
                        "width": round(bar_w - 1, 2),
                        "height": round(bar_h, 2),
                        "series": series,
                        "title": f"v{version.pk} {'model' if series == 'model' else 'popularity baseline'}: "
                        f"{label} {value:.4f}",
                    }
                )
        for step in range(5):
            value = top_value * step / 4
            chart.ticks.append({"y": round(top + plot_h - plot_h * step / 4, 2), "label": f"{value:.2g}"})
        charts.append(chart)
    return charts


def phase_chart(versions, *, width: int = 640, row_height: int = 22) -> dict:
    """Horizontal stacked bars of seconds per training phase, one row per version (newest first)."""
    rows_source = [v for v in versions if v.phase_seconds]
    left, right = 48, 70
    peak = max([sum(v.phase_seconds.get(p, 0.0) for p in PHASE_ORDER) for v in rows_source] or [0.0])
    scale = (width - left - right) / peak if peak > 0 else 0.0
    rows = []
    for index, version in enumerate(rows_source):
        x, segments = float(left), []
        for phase in PHASE_ORDER:
            seconds = float(version.phase_seconds.get(phase, 0.0))
            if seconds <= 0:
                continue
            segments.append(
                {
                    "x": round(x, 2),
                    "width": round(max(seconds * scale, 0.5), 2),
                    "color": PHASE_COLORS[phase],
                    "phase": phase.replace("_", " "),
                    "title": f"v{version.pk} {phase.replace('_', ' ')}: {seconds:.2f} s"
                    + (
                        f", peak memory {version.phase_peak_rss_mib[phase]:,} MiB"
                        if phase in (version.phase_peak_rss_mib or {})
                        else ""
                    ),
                }
            )
            x += seconds * scale
        total = sum(float(version.phase_seconds.get(p, 0.0)) for p in PHASE_ORDER)
        rows.append(
            {
                "y": index * row_height + 4,
                "label": f"v{version.pk}",
                "segments": segments,
                "total_x": round(x + 4, 2),
                "total": f"{total:.1f} s",
            }
        )
    return {
        "width": width,
        "height": len(rows) * row_height + 8,
        "rows": rows,
        "bar_height": row_height - 6,
        "legend": [{"phase": p.replace("_", " "), "color": PHASE_COLORS[p]} for p in PHASE_ORDER],
    }


LINE_COLORS = ("#2f5fd0", "#e15759", "#59a14f", "#f28e2b", "#b07aa1", "#76b7b2")


def line_chart(
    series: dict[str, list[tuple[str, float | None]]],
    *,
    label: str,
    width: int = 640,
    height: int = 200,
    percent: bool = False,
) -> dict:
    """One line per series over the union of their x labels (e.g. days, sorted as strings).

    ``series`` maps a name (a variant key) to (x label, value) points; a None value leaves a gap in
    its line. The y axis runs from 0 to a round maximum; ``percent`` shows the ticks as percentages.
    """
    left, right, top, bottom = 44, 8, 8, 22
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = sorted({x for points in series.values() for x, _ in points})
    peak = max([value for points in series.values() for _, value in points if value is not None] or [0.0])
    top_value = _nice_max(peak)
    step = plot_w / max(1, len(xs) - 1)
    position = {x: left + (index * step if len(xs) > 1 else plot_w / 2) for index, x in enumerate(xs)}

    def y_of(value: float) -> float:
        return round(top + plot_h - plot_h * min(value, top_value) / top_value, 2)

    def tick_label(value: float) -> str:
        return f"{100 * value:.3g}%" if percent else f"{value:.3g}"

    lines = []
    for index, (name, points) in enumerate(series.items()):
        segments: list[list[tuple[float, float]]] = [[]]
        dots = []
        for x, value in sorted(points):
            if value is None:
                segments.append([])
                continue
            point = (round(position[x], 2), y_of(value))
            segments[-1].append(point)
            dots.append({"x": point[0], "y": point[1], "title": f"{name} {x}: {tick_label(value)}"})
        lines.append(
            {
                "name": name,
                "color": LINE_COLORS[index % len(LINE_COLORS)],
                "paths": [" ".join(f"{x},{y}" for x, y in segment) for segment in segments if segment],
                "dots": dots,
            }
        )
    ticks = [{"y": y_of(top_value * i / 4), "label": tick_label(top_value * i / 4)} for i in range(5)]
    shown_every = max(1, math.ceil(len(xs) / 8))  # at most about eight x labels
    x_labels = [{"x": round(position[x], 2), "label": x} for index, x in enumerate(xs) if index % shown_every == 0]
    return {
        "label": label,
        "width": width,
        "height": height,
        "left": left,
        "lines": lines,
        "ticks": ticks,
        "x_labels": x_labels,
        "empty": not xs,
    }
