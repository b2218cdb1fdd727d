"""Score a finished workflow run against the generator's truth and print the figures.

    python tests/benchmarks/evaluate_run.py [--results results] [--truth results/demo_input/truth]

Per tracer: sensitivity on the truth's detectable lesions (found = a detected row within
--radius mm of the true centre, in the reference study's LPS space), false positives per
patient (detected rows matching no true lesion), median |SUVmax error| against the SUVmax
actually in the simulated image, median centroid error, and the blood-pool SUVmean error
against the noiseless image. Registration: target registration error at the true lesion
centres. Wall time per rule from the benchmark files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workflow"))

from dualpet.io import read_json  # noqa: E402
from dualpet.registration import load_transform, transform_points  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--truth", default="results/demo_input/truth")
    ap.add_argument("--radius", type=float, default=10.0, help="match radius (mm)")
    a = ap.parse_args(argv)
    res, truth_dir = Path(a.results), Path(a.truth)
    lesions = pd.read_csv(res / "cohort" / "lesions.tsv", sep="\t", dtype={"patient": str})
    patients = pd.read_csv(res / "cohort" / "patients.tsv", sep="\t", dtype={"patient": str})
    truths = {p.stem: read_json(p) for p in sorted(truth_dir.glob("*.json")) if p.stem in set(patients.patient)}
    ref, idx = next(iter(truths.values()))["tracers"]

    tre = []
    stats = {t: {"tp": 0, "n": 0, "fp": 0, "suv_err": [], "cent_err": [], "bg_err": []} for t in (ref, idx)}
    for pid, t in truths.items():
        tfm = load_transform(res / pid / "registration" / "transform.tfm")
        a_ = np.array([les["center_lps"][ref] for les in t["lesions"]]).reshape(-1, 3)
        b_ = np.array([les["center_lps"][idx] for les in t["lesions"]]).reshape(-1, 3)
        tre += list(np.linalg.norm(transform_points(tfm, a_) - b_, axis=1)) if len(a_) else []
        rows = lesions[lesions.patient == pid]
        for tracer in (ref, idx):
            s = stats[tracer]
            det = rows[rows[f"{tracer}_detected"] == 1]
            xyz = det[["x_mm", "y_mm", "z_mm"]].to_numpy()
            used = set()
            for les in t["lesions"]:
                c = np.array(les["center_lps"][ref])
                d = np.linalg.norm(xyz - c, axis=1) if len(xyz) else np.array([np.inf])
                j = int(np.argmin(d))
                hit = d[j] <= a.radius
                if hit:
                    used.add(j)
                if les["detectable"][tracer]:
                    s["n"] += 1
                    if hit:
                        s["tp"] += 1
                        s["cent_err"].append(d[j])
                        truth_max = les["image_suvmax"][tracer]
                        s["suv_err"].append(abs(det.iloc[j][f"{tracer}_suvmax"] - truth_max) / truth_max)
            s["fp"] += len(xyz) - len(used)
            bg_truth = t["studies"][tracer]["background"]["blood_pool_suvmean_noiseless"]
            bg = float(patients.loc[patients.patient == pid, f"{tracer}_background_suvmean"].iloc[0])
            s["bg_err"].append(bg / bg_truth - 1)

    n_pat = len(truths)
    print(f"patients: {n_pat}, union lesions in lesions.tsv: {len(lesions)}")
    for tracer, s in stats.items():
        sens = s["tp"] / s["n"] if s["n"] else float("nan")
        print(
            f"{tracer:>12}: sensitivity {s['tp']}/{s['n']} = {100 * sens:.1f} %, "
            f"FP/patient {s['fp'] / n_pat:.2f}, median |SUVmax err| {100 * np.median(s['suv_err']):.1f} %, "
            f"median centroid err {np.median(s['cent_err']):.2f} mm, "
            f"blood pool err {100 * np.mean(s['bg_err']):+.1f} % (SD {100 * np.std(s['bg_err']):.1f} %)"
        )
    if tre:
        print(f"registration TRE at lesion centres: median {np.median(tre):.3f} mm, max {np.max(tre):.3f} mm")
    bench = sorted((res / "benchmarks").glob("*/*.tsv"))
    if bench:
        per_rule = {}
        for b in bench:
            per_rule.setdefault(b.parent.name, []).append(pd.read_csv(b, sep="\t")["s"].iloc[0])
        print("wall time per job (s): " + ", ".join(f"{r} {np.median(v):.2f} (n={len(v)})" for r, v in per_rule.items()))


if __name__ == "__main__":
    main()
