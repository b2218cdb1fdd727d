"""Scale: dry-run time for large cohorts, and SLURM submissions per patient.

    python tests/benchmarks/bench_scale.py [--patients 1000 5000] [--keep DIR]

For each size, a sheet of N patients x 2 tracers is generated whose study folders each hold
one small file (the dry run reads folder listings, never pixels), and
``snakemake -n`` is timed with the default profile (wall time, peak memory of the process
tree). With the SLURM profile's groups (``--workflow-profile workflow/profiles/slurm``,
needs snakemake-executor-plugin-slurm; nothing is submitted in a dry run) the planned
group jobs are counted per patient: its `patient` group (up to the per-patient checkpoint
and the DICOM-SEG export) and its `lesions` group (the patient table and review page, which
the lesion jobs join once the checkpoint has run); the cohort's group is one for everybody.
Every job of a patient is in one of them, so the count is the submissions per patient.
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def make_cohort(root: Path, n: int):
    rows = ["patient\ttracer\tdicom_dir"]
    for i in range(1, n + 1):
        pid = f"S{i:05d}"
        for tracer in ("fdg", "pentixafor"):
            folder = root / "dicom" / pid / tracer
            folder.mkdir(parents=True)
            (folder / "IM0001.dcm").write_bytes(b"\0" * 132)
            rows.append(f"{pid}\t{tracer}\tdicom/{pid}/{tracer}")
    (root / "studies.tsv").write_text("\n".join(rows) + "\n")
    (root / "config.yaml").write_text(
        f"studies: {root / 'studies.tsv'}\nclinical: ''\nreference_tracer: fdg\nindex_tracer: pentixafor\n"
    )


def _dry_run_command(root: Path, profile: str, *extra):
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(root / "work"),
        "--configfile",
        str(root / "config.yaml"),
        "--workflow-profile",
        str(REPO / "workflow" / "profiles" / profile),
        "-n",
        *extra,
    ]


def dry_run(root: Path, profile: str):
    cmd = _dry_run_command(root, profile, "--quiet", "rules")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 1024
    if proc.returncode != 0:
        raise SystemExit(f"dry run failed ({profile}):\n{proc.stderr[-3000:]}")
    return wall, peak, proc.stdout + proc.stderr


def groups_per_patient(root: Path, n: int):
    proc = subprocess.run(_dry_run_command(root, "slurm"), capture_output=True, text=True)
    if proc.returncode != 0:
        return None, proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
    groups = re.findall(r"Group job (\w+)", proc.stdout + proc.stderr)
    per_patient = sum(g != "cohort" for g in groups)  # the cohort's group is one for everybody
    return per_patient / n, None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--keep", type=Path, default=None, help="build the cohorts here and keep them")
    a = ap.parse_args(argv)
    print(f"{'patients':>9} {'studies':>8} {'dry run (s)':>12} {'peak MB':>8}   SLURM submissions per patient")
    for n in a.patients:
        root = Path(tempfile.mkdtemp(prefix=f"dualpet-scale-{n}-", dir=a.keep))
        try:
            make_cohort(root, n)
            wall, peak, _ = dry_run(root, "default")
            if n <= 1000:
                per, why = groups_per_patient(root, n)
                slurm = f"{per:g} (+ 1 for the whole cohort)" if per is not None else f"n/a: {why}"
            else:
                slurm = "(counted at 1000)"
            print(f"{n:>9} {2 * n:>8} {wall:>12.1f} {peak:>8.0f}   {slurm}", flush=True)
        finally:
            if a.keep is None:
                shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
