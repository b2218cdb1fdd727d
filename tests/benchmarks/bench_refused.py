"""Refused-patient benchmark: what a cohort whose patients are all refused at inspection costs.

    python tests/benchmarks/bench_refused.py [--patients 12] [--cores 2] [--workdir DIR]

Generates ``--patients`` demo patients (``dualpet synth``), makes every PET series
unusable (Units CPS: not quantitative), and runs the workflow (``--keep-going``). Prints
the wall time of the run and of its dry run (planning), the number of jobs, the jobs'
summed run time per rule (from their benchmark files) and the cost per refused patient.
Issue 23: "a refused patient costs seconds, not minutes".
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workflow"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=12)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None)
    a = ap.parse_args(argv)
    import pydicom

    from dualpet.synth import generate_cohort

    work = a.workdir or Path(tempfile.mkdtemp(prefix="dualpet-refused-"))
    data = work / "data"
    if not (data / "studies.tsv").exists():
        generate_cohort(data, n_patients=a.patients, seed=11, size="demo", log=lambda m: None)
        for path in glob.glob(str(data / "dicom" / "*" / "*" / "PT_*" / "*.dcm")):
            ds = pydicom.dcmread(path)
            ds.Units = "CPS"
            ds.save_as(path)
    (work / "config").mkdir(exist_ok=True)
    (work / "config" / "config.yaml").write_text(
        "studies: data/studies.tsv\nclinical: data/clinical.tsv\nreference_tracer: fdg\nindex_tracer: pentixafor\n"
    )
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [
        str(bin_dir / "snakemake"),
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(work),
        "--cores",
        str(a.cores),
        "--workflow-profile",
        str(REPO / "workflow" / "profiles" / "default"),
        "--keep-going",
        "--quiet",
    ]
    t0 = time.perf_counter()
    dry = subprocess.run([*cmd, "-n"], capture_output=True, text=True, env=env, check=False)
    plan = time.perf_counter() - t0
    t0 = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    per_rule = {}
    for tsv in (work / "results" / "benchmarks").glob("*/*.tsv"):
        lines = tsv.read_text().splitlines()
        if len(lines) > 1:
            rule = tsv.parent.name
            n, total = per_rule.get(rule, (0, 0.0))
            per_rule[rule] = (n + 1, total + float(lines[1].split("\t")[0]))
    jobs = sum(n for n, _ in per_rule.values())
    excluded = 0
    patients = work / "results" / "cohort" / "patients.tsv"
    if patients.exists():
        excluded = sum(1 for line in patients.read_text().splitlines()[1:] if "\texcluded\t" in line)
    print(
        f"{a.patients} patients, all refused at inspection (Units CPS); {a.cores} cores; exit {run.returncode} "
        f"(non-zero expected: patients excluded); {excluded} listed as excluded"
    )
    print(f"  dry run (planning): {plan:.1f} s (exit {dry.returncode})")
    print(f"  run: {wall:.1f} s wall, {jobs} jobs, {wall / max(a.patients, 1):.1f} s per refused patient")
    for rule, (n, total) in sorted(per_rule.items(), key=lambda kv: -kv[1][1]):
        print(f"    {rule:20s} {n:4d} jobs  {total:7.1f} s  ({total / n:.2f} s each)")
    print(f"  ({work})")


if __name__ == "__main__":
    main()
