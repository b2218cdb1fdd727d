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

Beside each dry run, the same dry run of a plain Snakefile of the same shape (as many
per-study and per-patient rules, chained, each with a log, benchmark, threads, resources,
a conda file, a constant and a function parameter, and a one-file shell command): what
Snakemake itself needs to plan that many jobs, so the ratio says what the workflow adds.
"""

from __future__ import annotations

import argparse
import os
import re
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


def measured(cmd):
    """(completed process, wall s, peak MB of that process alone: ``os.wait4``'s counts, as
    bench_convert.run takes them; the output goes through a file, which a pipe could not
    hold while waiting)."""
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        out.seek(0)
        text = out.read().decode(errors="replace")
    done = subprocess.CompletedProcess(cmd, os.waitstatus_to_exitcode(status), stdout=text, stderr="")
    return done, wall, usage.ru_maxrss / 1024.0


def dry_run(root: Path, profile: str):
    proc, wall, peak = measured(_dry_run_command(root, profile, "--quiet", "rules"))
    if proc.returncode != 0:
        raise SystemExit(f"dry run failed ({profile}):\n{proc.stdout[-3000:]}")
    return wall, peak, proc.stdout


def jobs_by_rule(output: str):
    """{rule: count} from a dry run's job stats table."""
    table = output.split("Job stats:", 1)[-1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def _floor_rule(name, inputs, output, wildcards):
    return f"""
rule {name}:
    input: {inputs}
    output: "{output}"
    log: "logs/{name}/{wildcards}.log"
    benchmark: "benchmarks/{name}/{wildcards}.tsv"
    conda: "env.yaml"
    threads: 1
    resources: mem_mb=500, runtime=5
    params: code="0123456789abcdef", other=lambda wc: wc.p
    shell: "touch {{output:q}} {{params.code:q}} {{params.other:q}} > {{log:q}} 2>&1"
"""


def floor_dry_run(root: Path, n: int, per_study: int, per_patient: int):
    """Dry run of a plain Snakefile with ``per_study`` rules per study (2 studies) and
    ``per_patient`` per patient, for n patients: (wall s, peak MB)."""
    floor = root / "floor"
    floor.mkdir()
    (floor / "env.yaml").write_text("channels: [conda-forge]\ndependencies: [python]\n")
    rules = [
        f'P = [f"S{{i:05d}}" for i in range(1, {n} + 1)]\n\nrule all:\n    input: expand("r/{{p}}/p{per_patient}.txt", p=P)\n'
    ]
    for i in range(1, per_study + 1):
        inputs = f'"r/{{p}}/{{t}}/s{i - 1}.txt"' if i > 1 else "[]"
        rules.append(_floor_rule(f"s{i}", inputs, f"r/{{p}}/{{t}}/s{i}.txt", "{p}_{t}"))
    for i in range(1, per_patient + 1):
        inputs = f'"r/{{p}}/p{i - 1}.txt"' if i > 1 else f'expand("r/{{{{p}}}}/{{t}}/s{per_study}.txt", t=["a", "b"])'
        rules.append(_floor_rule(f"p{i}", inputs, f"r/{{p}}/p{i}.txt", "{p}"))
    (floor / "Snakefile").write_text("\n".join(rules))
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(floor / "Snakefile"),
        "-d",
        str(floor),
        "-n",
        "-c1",
        "--quiet",
        "rules",
    ]
    proc, wall, peak = measured(cmd)
    if proc.returncode != 0:
        raise SystemExit(f"floor dry run failed:\n{proc.stdout[-3000:]}")
    return wall, peak


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
    ap.add_argument("--no-floor", action="store_true", help="skip the plain Snakefile of the same shape")
    a = ap.parse_args(argv)
    print(
        f"{'patients':>9} {'studies':>8} {'jobs':>7} {'dry run (s)':>12} {'peak MB':>8} {'floor (s)':>10} "
        f"{'floor MB':>9}   SLURM submissions per patient"
    )
    for n in a.patients:
        root = Path(tempfile.mkdtemp(prefix=f"dualpet-scale-{n}-", dir=a.keep))
        try:
            make_cohort(root, n)
            wall, peak, output = dry_run(root, "default")
            counts = jobs_by_rule(output)
            per_study = sum(c == 2 * n for c in counts.values())
            per_patient = sum(c == n for c in counts.values())
            floor = (float("nan"), float("nan"))
            if not a.no_floor:
                floor = floor_dry_run(root, n, per_study, per_patient)
            if n <= 1000:
                per, why = groups_per_patient(root, n)
                slurm = f"{per:g} (+ 1 for the whole cohort)" if per is not None else f"n/a: {why}"
            else:
                slurm = "(counted at 1000)"
            jobs = sum(counts.values())
            print(
                f"{n:>9} {2 * n:>8} {jobs:>7} {wall:>12.1f} {peak:>8.0f} {floor[0]:>10.1f} {floor[1]:>9.0f}   {slurm}",
                flush=True,
            )
            ratio = "" if a.no_floor else f"; the workflow takes {wall / floor[0]:.1f}x the plain Snakefile's planning"
            print(
                f"{'':>9} {per_study} rules per study, {per_patient} per patient before the lesions{ratio}", flush=True
            )
        finally:
            if a.keep is None:
                shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
