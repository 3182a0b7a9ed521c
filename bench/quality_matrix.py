"""Quality on every catalogue shape, against plain exact EASE, each scorer on the same split.

For each catalogue present — MovieLens 100k (explicit ratings), hetrec2011-lastfm-2k (implicit
play counts, 17.6k items) and a synthetic one — in its own scratch database: import it, then run
``manage.py evaluate --ease-baseline --json``: one split per catalogue, and on it the full
pipeline (candidates → the learned scorer → re-ranking, through the real serving code and
database), each model family alone, LightFM's raw model, popularity and exact EASE (no pruning,
λ the best of 50..1000 on a validation split of the training part). Then each family is fitted
once more in its own process on the whole catalogue, to print its peak memory.

Usage: .venv/bin/python -m bench.quality_matrix [--quick] [--only ml-100k,lastfm,synthetic] [--keep]
                                               [--families lightfm,als,ease,two_tower]
``--quick`` evaluates the synthetic catalogue only (the two real ones take minutes each).
``--families`` sets the training configuration's families (the stack) before evaluating; without
it the configuration's default stands (lightfm,als,ease: the two-tower family is measured only
when named, as it adds a fit of tens of seconds to every stage).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

from bench._common import REPO, manage, movielens_dir, print_table, scratch_database

LASTFM = REPO.parent / "shared" / "datasets" / "hetrec2011-lastfm-2k"
SYNTHETIC = ("--users", "3000", "--items", "4000", "--interactions", "120000", "--seed", "7")
FAMILIES = ("lightfm", "als", "ease", "two_tower")  # every family a row can show, in row order
K = 10


def _import_steps(name: str) -> list[tuple[str, ...]] | None:
    if name == "ml-100k":
        directory = movielens_dir()
        return [("import_movielens", str(directory), "--no-progress")] if directory else None
    if name == "lastfm":
        if not (LASTFM / "user_artists.dat").exists():
            return None
        return [
            (
                "import_interactions", str(LASTFM / "user_artists.dat"),
                "--user-col", "1", "--item-col", "2", "--count-col", "3", "--kind", "play",
                "--items-file", str(LASTFM / "artists.dat"), "--item-id-col", "id", "--item-title-col", "name",
                "--no-progress",
            )
        ]  # fmt: skip
    return [("generate_catalog", *SYNTHETIC, "--no-progress")]


def _family_memory(url: str, family: str, families: str) -> dict:
    """Fit one family on the whole catalogue in a fresh process; its peak RSS above the loaded data."""
    probe = _MEMORY_PROBE.replace("FAMILIES_LIST", families).replace("FAMILY", family)
    completed = manage(url, "shell", "-c", probe, check=False)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        return {"error": (completed.stderr or completed.stdout).strip().splitlines()[-1:]}
    return json.loads(lines[-1])


# Run by `manage.py shell -c`: VmHWM is the process's peak RSS; the data is loaded before the reset
# point, so the difference is what the family's fit itself needed.
_MEMORY_PROBE = """
import json, time
from catalog.array_selectors import catalog_arrays_fetch
from recommender.selectors import default_training_config
from recommender.services.training import training_data_build, hyperparameters_from_config
from recommender.services.scorer import stack_config
from recommender.ml.families import FAMILIES
import dataclasses

def hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM'):
            return int(line.split()[1]) * 1024
snapshot = default_training_config().hyperparameters()
data, _ = training_data_build(catalog_arrays_fetch(), snapshot)
params = hyperparameters_from_config(snapshot)
config = stack_config({**snapshot, 'families': 'FAMILIES_LIST'}, dataclasses.asdict(params))
before = hwm(); started = time.perf_counter()
FAMILIES['FAMILY'].fit(data, dict(config.families['FAMILY']))
seconds = round(time.perf_counter() - started, 2)
print(json.dumps({'fit_seconds': seconds, 'peak_bytes_above_data': hwm() - before, 'peak_bytes': hwm()}))
"""

# Run by `manage.py shell -c`: the default configuration's families, validated as the admin does.
_SET_FAMILIES = """
from recommender.selectors import default_training_config
config = default_training_config()
config.families = 'FAMILIES_LIST'
config.full_clean()
config.save(update_fields=['families'])
"""


def _catalogue(name: str, *, keep: bool, families: str | None) -> dict | None:
    steps = _import_steps(name)
    if steps is None:
        print(f"{name}: not found; skipped (see the module docstring for where it is read from).")
        return None
    # Its own database when the stack differs, so two runs with different stacks never share one.
    suffix = "" if families is None else "_" + families.replace(",", "_")
    with scratch_database(f"bench_quality_{name.replace('-', '_')}{suffix}", keep=keep) as url:
        manage(url, "migrate", "--noinput")
        started = time.perf_counter()
        for step in steps:
            manage(url, *step)
        if families is not None:
            manage(url, "shell", "-c", _SET_FAMILIES.replace("FAMILIES_LIST", families))
        imported = time.perf_counter() - started
        started = time.perf_counter()
        completed = manage(url, "evaluate", "--ease-baseline", "--json", check=False)
        if completed.returncode != 0:
            print(f"{name}: evaluate failed:\n{completed.stderr[-3000:]}")
            return None
        results = json.loads(completed.stdout.strip().splitlines()[-1])
        results["_seconds"] = {"import": round(imported, 1), "evaluate": round(time.perf_counter() - started, 1)}
        stack = families or "lightfm,als,ease"
        measured = [family for family in FAMILIES if family == "lightfm" or f"family:{family}" in results]
        results["_memory"] = {family: _family_memory(url, family, stack) for family in measured}
        return results


def _mib(value) -> str:
    return f"{value / 2**20:,.0f}" if isinstance(value, int) else ""


def _row(name: str, label: str, metrics: dict, memory: dict | None = None) -> list:
    memory = memory or {}
    return [
        name,
        label,
        metrics.get(f"precision_at_{K}"),
        metrics.get(f"recall_at_{K}"),
        metrics.get(f"ndcg_at_{K}"),
        metrics.get("coverage"),
        metrics.get("fit_seconds", memory.get("fit_seconds", "")),
        _mib(memory.get("peak_bytes")),
        _mib(memory.get("peak_bytes_above_data")),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Only the synthetic catalogue.")
    parser.add_argument("--only", default="", help="Comma-separated: ml-100k, lastfm, synthetic.")
    parser.add_argument("--keep", action="store_true", help="Keep the scratch databases.")
    parser.add_argument(
        "--families", default=None, help="Stack to evaluate, e.g. lightfm,als,ease,two_tower (default: the config's)."
    )
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or (
        ["synthetic"] if args.quick else ["ml-100k", "lastfm", "synthetic"]
    )
    rows, ratios = [], []
    for name in names:
        results = _catalogue(name, keep=args.keep, families=args.families)
        if results is None:
            continue
        memory = results["_memory"]
        rows.append(_row(name, "popularity", results["popularity"]))
        rows.append(
            _row(
                name,
                f"EASE exact (λ={results['ease_exact']['l2']}, {results['ease_exact']['input']})",
                results["ease_exact"],
            )
        )
        rows.append(_row(name, "LightFM raw model", results["model"], memory.get("lightfm")))
        for family in FAMILIES:
            if f"family:{family}" in results:
                rows.append(_row(name, f"{family} alone", results[f"family:{family}"], memory.get(family)))
        scorer = results["pipeline"].get("scorer") or {}
        rows.append(_row(name, f"pipeline ({scorer.get('choice', 'blend')})", results["pipeline"]))
        ease, pipeline = results["ease_exact"], results["pipeline"]
        ratios.append(
            [
                name,
                pipeline[f"precision_at_{K}"] / ease[f"precision_at_{K}"],
                pipeline[f"ndcg_at_{K}"] / ease[f"ndcg_at_{K}"],
                scorer.get("reason", ""),
                results["_seconds"]["import"],
                results["_seconds"]["evaluate"],
            ]
        )
        print(f"{name}: done ({results['_seconds']}); EASE validation {json.dumps(ease.get('validation'))}")
        sys.stdout.flush()
    if not rows:
        print("No catalogue found; nothing to measure.")
        return 0
    print_table(
        "Quality matrix: every scorer on one split per catalogue (P/R/NDCG at 10, training items excluded)",
        ["catalogue", "scorer", "P@10", "R@10", "NDCG@10", "coverage", "fit s", "peak MiB", "above data MiB"],
        rows,
        note="Fit seconds: inside the evaluation run (LightFM's raw model: from the memory probe). Peak MiB: "
        "each family fitted alone on the whole catalogue in its own process: the process's peak RSS (VmHWM, "
        "Django and the catalogue's arrays included) and how far the fit raised it above the loaded data "
        "(0: the fit needed less than loading the data did).",
    )
    print_table(
        "Pipeline against exact EASE, same run, same split",
        ["catalogue", "P@10 ratio", "NDCG@10 ratio", "scorer choice", "import s", "evaluate s"],
        ratios,
        note=f"Peak RSS of this driver: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB "
        f"(the work runs in subprocesses). Machine: {os.cpu_count()} cores.",
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
