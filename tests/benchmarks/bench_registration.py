"""Registration benchmark: target registration error at the true lesion centres, and time.

    python tests/benchmarks/bench_registration.py [--size demo|clinical] [--patients 6]
        [--seed 7] [--quirks] [--affine] [--threads 2] [--max-rotation-deg 5]
        [--max-translation-mm 30] [--workdir DIR]

Generates a cohort (unless present in --workdir), converts every CT, registers each
patient's index CT onto its reference CT exactly as the workflow does, and prints per
patient the TRE at the true lesion centres (the transform maps reference-study points to
index-study points; the truth holds both), the body-mask Dice, the QC verdict and the
registration wall time; then median and max TRE over all lesions.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workflow"))

from dualpet.convert import convert_study
from dualpet.io import read_json
from dualpet.registration import register_ct, transform_points
from dualpet.synth import generate_cohort


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["demo", "clinical"], default="demo")
    ap.add_argument("--patients", type=int, default=6)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quirks", action="store_true")
    ap.add_argument("--affine", action="store_true", help="rigid then affine")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-rotation-deg", type=float, default=5.0)
    ap.add_argument("--max-translation-mm", type=float, default=30.0)
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args(argv)
    tag = f"{a.size}-{a.seed}-{a.max_rotation_deg:g}deg-{a.max_translation_mm:g}mm{'-quirks' if a.quirks else ''}"
    work = Path(a.workdir or os.path.join(tempfile.gettempdir(), f"dualpet-reg-{tag}"))
    t0 = time.perf_counter()
    generate_cohort(
        work / "cohort",
        a.patients,
        a.seed,
        a.size,
        quirks=a.quirks,
        max_rotation_deg=a.max_rotation_deg,
        max_translation_mm=a.max_translation_mm,
        log=lambda m: None,
    )
    print(f"cohort ready ({time.perf_counter() - t0:.0f} s): {a.patients} patients, size {a.size}")
    tres, times = [], []
    print(f"{'patient':<8} {'lesions':>7} {'TRE med':>8} {'TRE max':>8} {'Dice':>6} {'ok':>3} {'time s':>7}")
    for n in range(1, a.patients + 1):
        pid = f"P{n:03d}"
        truth = read_json(work / "cohort" / "truth" / f"{pid}.json")
        ref, idx = truth["reference_tracer"], truth["index_tracer"]
        cts = {}
        for tracer in (ref, idx):
            out = work / "nifti" / pid / tracer
            cts[tracer] = out / "ct.nii.gz"
            if not cts[tracer].exists():
                convert_study(
                    work / "cohort" / "dicom" / pid / tracer,
                    patient=pid,
                    tracer=tracer,
                    ct_out=cts[tracer],
                    pet_out=out / "pet.nii.gz",
                    json_out=out / "pet.json",
                )
        t1 = time.perf_counter()
        qc = register_ct(cts[ref], cts[idx], work / "reg" / f"{pid}.tfm", threads=a.threads, affine=a.affine)
        times.append(time.perf_counter() - t1)
        a_pts = np.array([les["center_lps"][ref] for les in truth["lesions"]])
        b_pts = np.array([les["center_lps"][idx] for les in truth["lesions"]])
        tre = np.linalg.norm(transform_points(work / "reg" / f"{pid}.tfm", a_pts) - b_pts, axis=1)
        tres += list(tre)
        print(
            f"{pid:<8} {len(tre):7d} {np.median(tre):8.3f} {tre.max():8.3f} {qc['dice_body_after']:6.3f} "
            f"{'yes' if qc['ok'] else 'NO':>3} {times[-1]:7.1f}"
        )
    print(
        f"TRE over {len(tres)} lesions: median {np.median(tres):.3f} mm, max {np.max(tres):.3f} mm; "
        f"registration time per patient: median {np.median(times):.1f} s, max {np.max(times):.1f} s "
        f"({a.threads} threads, {'rigid+affine' if a.affine else 'rigid'})"
    )


if __name__ == "__main__":
    main()
