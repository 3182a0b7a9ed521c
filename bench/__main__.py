"""`make bench`: run every benchmark and write one results file (bench/results/latest.md).

Each benchmark is a module of this package that prints Markdown tables; it also runs alone with
`python -m bench.<name>`. `--quick` asks each for its smaller sizes; `--only a,b` picks some.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime

from bench._common import REPO

# Order matters a little: the cheap ones first, so a long one failing late still leaves results.
BENCHMARKS = [
    "ml_quality",
    "quality_matrix",
    "training",
    "ann_recall",
    "vector_index",
    "serving_latency",
    "page_speed",
    "load_feedback",
    "load_retrain",
    "generate_catalog",
    "import_speed",
    "ann_curve",
    "deep_retrieval",
    # The whole path at 1M items (--quick: 100k); last, since it is by far the longest.
    "scale",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="Smaller sizes, for a fast look.")
    parser.add_argument("--only", default="", help="Comma-separated benchmark names.")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or BENCHMARKS
    results_dir = REPO / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    sections = [
        f"# Benchmark results\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{platform.machine()}, Python {platform.python_version()}, quick={args.quick}\n"
    ]
    failed = []
    for name in names:
        if not (REPO / "bench" / f"{name}.py").exists():
            sections.append(f"\n## {name}\n\nnot available in this checkout\n")
            continue
        command = [sys.executable, "-m", f"bench.{name}"] + (["--quick"] if args.quick else [])
        print(f"== bench.{name}", flush=True)
        started = time.perf_counter()
        completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        print(completed.stdout, flush=True)
        body = completed.stdout.strip()
        if completed.returncode != 0:
            failed.append(name)
            body += f"\n\n**failed** (exit {completed.returncode}):\n\n```\n{completed.stderr[-3000:]}\n```"
            print(completed.stderr[-3000:], file=sys.stderr)
        sections.append(f"\n## {name} ({seconds:.0f} s)\n{body}\n")
    output = results_dir / "latest.md"
    output.write_text("\n".join(sections))
    print(f"\nWrote {output}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
