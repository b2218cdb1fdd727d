"""Per-lesion job cost: computation vs process start-up vs Snakemake scheduling.

    python tests/benchmarks/bench_lesion_jobs.py [--results results] [--jobs 2]

Uses the lesion crops of a finished run (e.g. after `make demo`). Prints, per lesion job:
the metric computation in-process (the real work), the wall time of one
`python -m dualpet lesion-metrics` process (start-up and imports included), and the wall
time per job when Snakemake reruns all lesion_metrics jobs (`--forcerun lesion_metrics`,
scheduling included).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workflow"))

from dualpet.metrics import lesion_crop_metrics  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    results = Path(a.results).resolve()
    crops = sorted(results.glob("*/lesions/crops/*.npz"))
    if not crops:
        raise SystemExit(f"no lesion crops under {results} (run the workflow first)")
    tracers = ("fdg", "pentixafor")

    compute = []
    for crop in crops:
        t0 = time.perf_counter()
        lesion_crop_metrics(crop, tracers)
        compute.append(time.perf_counter() - t0)

    process = []
    out = Path("/tmp/dualpet-bench-metric.json")
    for crop in crops[:20]:
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "dualpet",
                "lesion-metrics",
                str(crop),
                "--reference",
                tracers[0],
                "--index",
                tracers[1],
                "-o",
                str(out),
            ],
            check=True,
            env={"PYTHONPATH": str(REPO / "workflow")},
        )
        process.append(time.perf_counter() - t0)

    workdir = results.parent
    t0 = time.perf_counter()
    subprocess.run(
        [
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(workdir),
            "--cores",
            str(a.jobs),
            "--forcerun",
            "lesion_metrics",
            "--until",
            "lesion_metrics",
            "--quiet",
            "all",
        ],
        check=True,
        capture_output=True,
    )
    snake = time.perf_counter() - t0

    n = len(crops)
    print(f"lesion crops: {n}, crop size median {np.median([c.stat().st_size for c in crops]) / 1024:.0f} KiB")
    print(f"metric computation in-process: median {1000 * np.median(compute):.1f} ms, max {1000 * max(compute):.1f} ms")
    print(f"one `dualpet lesion-metrics` process: median {np.median(process):.2f} s (start-up and imports included)")
    print(
        f"snakemake --forcerun lesion_metrics with {a.jobs} cores: {snake:.1f} s for {n} jobs "
        f"= {snake / n * a.jobs:.2f} core-s per job, {snake / n:.2f} s wall per job"
    )


if __name__ == "__main__":
    main()
