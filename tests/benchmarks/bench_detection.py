"""Detection benchmark: run the whole workflow on a generated cohort and score it against truth.

    python tests/benchmarks/bench_detection.py [--size demo|clinical] [--patients 20]
        [--seed 99] [--quirks] [--cores 2] [--workdir DIR] [--set section.key=value ...] [-v]

Generates a cohort with ``dualpet synth`` (kept if the work directory already holds the
same one), writes a config pointing at it (``--set`` overrides method settings, e.g.
``--set background.method=liver`` or ``--set detection.factor=2.5``), runs Snakemake
(``--keep-going``) and prints, per tracer, the figures of ``evaluate_run.py``:
sensitivity on the truth's detectable lesions, false positives per patient, median
SUVmax and centroid errors, background error, matching accuracy, plus wall times.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workflow"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluate_run import evaluate, report  # noqa: E402

from dualpet.synth import generate_cohort  # noqa: E402


def _set(config, assignment):
    key, _, value = assignment.partition("=")
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = yaml.safe_load(value)


def run_workflow(work, overrides, cores):
    """Write ``work/config/config.yaml`` for the cohort in ``work/data`` (with ``KEY=VALUE``
    overrides) and run the workflow there; prints the exit status and wall time."""
    config = {
        "studies": "data/studies.tsv",
        "clinical": "data/clinical.tsv",
        "reference_tracer": "fdg",
        "index_tracer": "pentixafor",
    }
    for s in overrides:
        _set(config, s)
    (work / "config").mkdir(parents=True, exist_ok=True)
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(work),
        "--workflow-profile",
        str(REPO / "workflow" / "profiles" / "default"),
        "--cores",
        str(cores),
        "--keep-going",
        "--quiet",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    print(f"workflow: exit {proc.returncode}, {time.perf_counter() - t0:.0f} s wall ({cores} cores)")
    if proc.returncode:
        print(proc.stderr[-3000:])
    return proc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["demo", "clinical"], default="demo")
    ap.add_argument("--patients", type=int, default=20)
    ap.add_argument("--seed", type=int, default=99)
    ap.add_argument("--quirks", action="store_true")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("-v", "--verbose", action="store_true", help="list misses and false positives")
    a = ap.parse_args(argv)
    tag = f"{a.size}-{a.patients}-{a.seed}{'-quirks' if a.quirks else ''}"
    work = Path(a.workdir or os.path.join(tempfile.gettempdir(), f"dualpet-det-{tag}"))
    t0 = time.perf_counter()
    generate_cohort(work / "data", a.patients, a.seed, a.size, quirks=a.quirks, log=lambda m: None)
    print(f"cohort ready ({time.perf_counter() - t0:.0f} s): {a.patients} patients, size {a.size}, seed {a.seed}")
    run_workflow(work, a.set, a.cores)
    report(evaluate(work / "results", work / "data" / "truth"), work / "results", a.verbose)


if __name__ == "__main__":
    main()
