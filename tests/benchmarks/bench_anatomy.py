"""Anatomy benchmark: the CT organ label map against references.

    python tests/benchmarks/bench_anatomy.py --real [CT LABELS ...]
    python tests/benchmarks/bench_anatomy.py [--patients 6] [--seed 7] [--size demo|clinical]
        [--fov torso|thorax|abdomen|wholebody] [--workdir DIR]

``--real``: real CTs with reference labels in TotalSegmentator v2 numbers (by default the
shipped tests/data/totalsegmentator-example slab, also cut to its lower and upper halves,
and with portal-venous enhancement added where the labels put vessels, kidneys, liver and
spleen). Prints per CT and organ the Dice coefficient and both volumes, whether the
organ was reported found, and the kidney labels lying in the back muscles.

Otherwise generates two cohorts of the same patients (``--contrast none`` and ``--contrast
all``), converts each study's CT, runs :func:`dualpet.anatomy.segment_ct` and prints, per
cohort, the Dice coefficient per organ (median and minimum over studies; found/present
counts), the segmentation time per CT, and the background error: the SUVmean of the
automatic blood-pool and liver VOIs against the truth's noiseless values (median and
maximum of the relative error).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workflow"))
sys.path.insert(0, str(REPO / "tests"))

from dualpet.anatomy import ORGANS, segment_ct  # noqa: E402
from dualpet.synth import generate_cohort  # noqa: E402


def dice(a, b):
    s = a.sum() + b.sum()
    return 2.0 * (a & b).sum() / s if s else float("nan")


def run(workdir, contrast, a):
    import nibabel as nib

    from dualpet.background import background_from_anatomy
    from dualpet.convert import convert_study
    from dualpet.geometry import lps_affine
    from dualpet.io import read_json

    data = workdir / f"data-{contrast}"
    generate_cohort(data, a.patients, a.seed, a.size, contrast=contrast, fov=a.fov, log=lambda m: None)
    scores = {name: [] for name in ORGANS if name != "skull"}
    found = {name: [0, 0] for name in scores}
    bg_err = {"bloodpool": [], "liver": []}
    times = []
    for tp in sorted((data / "truth").glob("P*.json")):
        truth = read_json(tp)
        for tracer in truth["tracers"]:
            out = workdir / f"conv-{contrast}" / truth["patient"] / tracer
            out.mkdir(parents=True, exist_ok=True)
            if not (out / "ct.nii.gz").exists():
                convert_study(
                    data / "dicom" / truth["patient"] / tracer,
                    patient=truth["patient"],
                    tracer=tracer,
                    ct_out=out / "ct.nii.gz",
                    pet_out=out / "pet.nii.gz",
                    json_out=out / "pet.json",
                )
            ct = nib.load(str(out / "ct.nii.gz"))
            hu = np.asarray(ct.dataobj, dtype=np.float32)
            t0 = time.perf_counter()
            labels, report = segment_ct(hu, lps_affine(ct.affine))
            times.append(time.perf_counter() - t0)
            ref = np.asarray(nib.load(str(data / truth["organ_maps"][tracer])).dataobj)
            for name in scores:
                t, s = ref == ORGANS[name], labels == ORGANS[name]
                if t.sum() * np.prod(np.abs(np.diag(ct.affine)[:3])) / 1000.0 < 5.0:
                    continue  # not (or hardly) in the field of view
                found[name][1] += 1
                found[name][0] += int(report[name]["found"])
                scores[name].append(dice(t, s))
            pet = nib.load(str(out / "pet.nii.gz"))
            suv = np.asarray(pet.dataobj, dtype=np.float32)
            truth_bg = truth["studies"][tracer]["background"]
            for method, key in (("bloodpool", "blood_pool_suvmean_noiseless"), ("liver", "liver_suvmean_noiseless")):
                try:
                    bg = background_from_anatomy(
                        labels, lps_affine(ct.affine), hu, suv, lps_affine(pet.affine), method, fallback=False
                    )
                except Exception as exc:
                    bg_err[method].append(np.nan)
                    if a.verbose:
                        print(f"  {truth['patient']} {tracer} {method}: {exc}")
                    continue
                bg_err[method].append(bg["suvmean"] / truth_bg[key] - 1.0)
    print(f"\n== contrast {contrast}: {a.patients} patients x 2 studies, size {a.size}, fov {a.fov}, seed {a.seed}")
    print(f"{'organ':16s} {'found':>7s} {'Dice median':>12s} {'Dice min':>9s}")
    for name, vals in scores.items():
        if vals:
            print(f"{name:16s} {found[name][0]:>3d}/{found[name][1]:<3d} {np.median(vals):12.3f} {np.min(vals):9.3f}")
    for method, errs in bg_err.items():
        e = np.array(errs, dtype=float)
        ok = np.isfinite(e)
        if ok.any():
            print(
                f"background {method:9s}: {ok.sum()}/{e.size} found; |error| median {100 * np.median(np.abs(e[ok])):.1f} %, "
                f"max {100 * np.max(np.abs(e[ok])):.1f} %"
            )
        else:
            print(f"background {method:9s}: 0/{e.size} found")
    print(f"segment_ct: median {np.median(times):.2f} s, max {np.max(times):.2f} s per CT")


#: The reference's TotalSegmentator v2 classes per organ of the classical map, and the
#: back muscles (autochthonous, iliopsoas) the kidneys must not be taken from.
REAL_ORGANS = {
    "liver": (5,),
    "spleen": (1,),
    "kidney_right": (2,),
    "kidney_left": (3,),
    "aorta": (52,),
    "bowel": (6, 18, 19, 20),
    "vertebrae": tuple(range(25, 51)),
    "heart": (51,),
    "lung_left": (10, 11),
    "lung_right": (12, 13, 14),
    "urinary_bladder": (21,),
}
BACK_MUSCLES = (86, 87, 88, 89)


def real_cases(pairs):
    """(name, HU, LPS affine, reference labels) per real CT: the given (CT, labels) pairs,
    or the shipped slab plain, enhanced and halved (:mod:`realct`)."""
    import nibabel as nib
    import realct

    from dualpet.geometry import lps_affine

    if pairs:
        for ct_path, lab_path in zip(pairs[::2], pairs[1::2]):
            ct = nib.load(ct_path)
            yield (
                Path(ct_path).name,
                np.asarray(ct.dataobj, np.float32),
                lps_affine(ct.affine),
                np.asarray(nib.load(lab_path).dataobj),
            )
        return
    hu, aff, ref = realct.load()
    yield "example slab, unenhanced", hu, aff, ref
    yield "example slab, enhancement added", realct.enhanced(hu, ref), aff, ref
    for name, sl in (("lower half (no lungs)", slice(0, 15)), ("upper half", slice(15, 30))):
        yield (f"example slab, {name}", *realct.planes(hu, aff, ref, sl))


def run_real(pairs):
    from dualpet.anatomy import ORGAN_CLASSES

    for name, hu, aff, ref in real_cases(pairs):
        t0 = time.perf_counter()
        labels, report = segment_ct(hu, aff)
        dt = time.perf_counter() - t0
        vox = float(np.prod(np.abs(np.diag(aff)[:3]))) / 1000.0
        print(f"\n== {name}: {hu.shape}, contrast_enhanced {report.get('contrast_enhanced')}, segment_ct {dt:.2f} s")
        print(f"{'organ':16s} {'Dice':>6s} {'ref mL':>8s} {'ours mL':>8s} found")
        for organ, classes in REAL_ORGANS.items():
            t, s = np.isin(ref, classes), np.isin(labels, ORGAN_CLASSES[organ])
            if t.sum() * vox < 5.0 and not s.any():
                continue
            print(f"{organ:16s} {dice(t, s):6.3f} {t.sum() * vox:8.1f} {s.sum() * vox:8.1f} {report[organ]['found']}")
        kid = np.isin(labels, ORGAN_CLASSES["kidney_right"] + ORGAN_CLASSES["kidney_left"])
        if kid.any():
            print(
                f"kidney labels in the back muscles: {100 * (kid & np.isin(ref, BACK_MUSCLES)).sum() / kid.sum():.1f} %"
            )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=6)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--size", choices=["demo", "clinical"], default="demo")
    ap.add_argument("--fov", choices=["torso", "thorax", "abdomen", "wholebody"], default="torso")
    ap.add_argument("--contrast", choices=["none", "all", "both"], default="both")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument(
        "--real",
        nargs="*",
        default=None,
        metavar="CT LABELS",
        help="real CTs with TotalSegmentator v2 labels (pairs of NIfTI paths; none: the shipped example)",
    )
    a = ap.parse_args(argv)
    if a.real is not None:
        return run_real(a.real)
    tag = f"{a.size}-{a.fov}-{a.patients}-{a.seed}"
    work = Path(a.workdir or os.path.join(tempfile.gettempdir(), f"dualpet-anatomy-{tag}"))
    for contrast in ("none", "all") if a.contrast == "both" else (a.contrast,):
        run(work, contrast, a)


if __name__ == "__main__":
    main()
