"""The first hour's figure: `make demo` from a fresh clone, timed step by step, with the machine.

    python tests/benchmarks/bench_demo.py [--workdir DIR] [--keep]

Clones this repository (``git clone``, the committed state) into a temporary folder and runs
``make demo`` there, as a new user would: the venv and its packages, the demo cohort's
generation, the workflow. Prints each phase's wall time (from the Makefile's own steps:
``make venv``, ``dualpet synth``, ``make run``) and the machine (CPU count and model, memory,
Python, OS), so that the README's and docs' figures can be reproduced and compared.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def machine():
    """One line naming the machine: CPUs, model, memory, Python, OS."""

    def first(path, key):
        try:
            return next((line for line in Path(path).read_text().splitlines() if line.startswith(key)), "")
        except OSError:
            return ""

    model = first("/proc/cpuinfo", "model name").partition(":")[2].strip()
    meminfo = first("/proc/meminfo", "MemTotal").split()
    mem = f", {int(meminfo[1]) / 1024**2:.0f} GiB RAM" if len(meminfo) > 1 else ""
    return (
        f"{os.cpu_count()} CPUs ({model or platform.processor() or 'unknown model'}){mem}, "
        f"Python {platform.python_version()}, {platform.platform()}"
    )


def step(name, cmd, cwd, env):
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    print(f"  {name:32s} {wall:7.1f} s  (exit {proc.returncode})", flush=True)
    return wall, proc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the clone afterwards")
    a = ap.parse_args(argv)
    work = a.workdir or Path(tempfile.mkdtemp(prefix="dualpet-demo-bench-"))
    clone = work / "dualpet"
    if clone.exists():
        shutil.rmtree(clone)
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    print(f"make demo from a fresh clone of {REPO.name} on: {machine()}")
    total = 0.0
    makefile = (clone / "Makefile").read_text()
    patients = next(line.split("?=")[1].strip() for line in makefile.splitlines() if line.startswith("DEMO_PATIENTS"))
    seed = next(line.split("?=")[1].strip() for line in makefile.splitlines() if line.startswith("DEMO_SEED"))
    for name, cmd in (
        ("venv and packages (make venv)", ["make", "venv"]),
        (
            f"demo cohort ({patients} patients)",
            [
                ".venv/bin/dualpet",
                "synth",
                "results/demo_input",
                "--patients",
                patients,
                "--seed",
                seed,
                "--size",
                "demo",
            ],
        ),
        ("workflow (make run)", ["make", "run"]),
    ):
        wall, proc = step(name, cmd, clone, env)
        total += wall
        if proc.returncode and name != "workflow (make run)":  # make run exits 1 when a patient is excluded
            print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
            break
    print(f"  {'make demo in all':32s} {total:7.1f} s")
    if not a.keep and not a.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
