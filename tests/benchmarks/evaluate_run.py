"""Score a finished workflow run against the generator's truth and print the figures.

    python tests/benchmarks/evaluate_run.py [--results results] [--truth results/demo_input/truth]

Per tracer: sensitivity on the truth's detectable lesions (found = a detected row within
--radius mm of the true centre, in the reference study's LPS space) and on its visible ones
(the reader's definition: contrast against the surrounding tissue and its noise, no
global threshold; generator revision 7 on), false positives per
patient (detected rows matching no true lesion), median |SUVmax error| against the SUVmax
actually in the simulated image, median centroid error, and the background SUVmean error
against the noiseless image. Matching: of the true lesions found on both tracers, the
share whose two detections were merged into one union lesion. Region labels: share of
the found lesions whose row has the truth's region. Registration: target
registration error at the true lesion centres. Wall time per rule from the benchmark files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workflow"))

from dualpet.io import read_json
from dualpet.registration import load_transform, transform_points


def evaluate(results, truth_dir, radius=10.0):
    """Figures of a finished run (see the module docstring) as a dict; ``misses`` lists
    the detectable lesions not found, ``false_positives`` the unmatched detected rows."""
    res, truth_dir = Path(results), Path(truth_dir)
    lesions = pd.read_csv(res / "cohort" / "lesions.tsv", sep="\t", dtype={"patient": str})
    patients = pd.read_csv(res / "cohort" / "patients.tsv", sep="\t", dtype={"patient": str})
    included = set(patients.patient[patients.get("status", pd.Series("included", index=patients.index)) == "included"])
    truths = {p.stem: read_json(p) for p in sorted(truth_dir.glob("*.json")) if p.stem in included}
    ref, idx = next(iter(truths.values()))["tracers"]
    tre, misses, fps, regions = [], [], [], []
    match = {"both_found": 0, "merged": 0}
    stats = {
        t: {"tp": 0, "n": 0, "fp": 0, "suv_err": [], "cent_err": [], "bg_err": [], "visible_tp": 0, "visible_n": 0}
        for t in (ref, idx)
    }
    for pid, t in truths.items():
        tfm = load_transform(res / pid / "registration" / "transform.tfm")
        a_ = np.array([les["center_lps"][ref] for les in t["lesions"]]).reshape(-1, 3)
        b_ = np.array([les["center_lps"][idx] for les in t["lesions"]]).reshape(-1, 3)
        tre += list(np.linalg.norm(transform_points(tfm, a_) - b_, axis=1)) if len(a_) else []
        rows = lesions[lesions.patient == pid]
        found_rows = {}
        for tracer in (ref, idx):
            s = stats[tracer]
            det = rows[rows[f"{tracer}_detected"] == 1]
            xyz = det[["x_mm", "y_mm", "z_mm"]].to_numpy()
            used = set()
            for les in t["lesions"]:
                c = np.array(les["center_lps"][ref])
                d = np.linalg.norm(xyz - c, axis=1) if len(xyz) else np.array([np.inf])
                j = int(np.argmin(d))
                hit = d[j] <= radius
                if hit:
                    used.add(j)
                    found_rows.setdefault(les["id"], {})[tracer] = det.iloc[j]["lesion"]
                if les.get("visible", {}).get(tracer):  # the reader's definition (generator revision >= 7)
                    s["visible_n"] += 1
                    s["visible_tp"] += int(hit)
                    if not hit:
                        misses.append(
                            f"{pid} {les['id']} {tracer} visible, not found ({les['region']}, "
                            f"r={les['radius_mm']:.1f} mm, contrast-to-noise {les['contrast_to_noise'][tracer]:.1f}, "
                            f"noiseless peak {les['noiseless_suvmax'][tracer]:.2f} on "
                            f"{les.get('host_background_suv', les['local_background_suv'])[tracer]:.2f})"
                        )
                if les["detectable"][tracer]:
                    s["n"] += 1
                    if hit:
                        s["tp"] += 1
                        s["cent_err"].append(d[j])
                        truth_max = les["image_suvmax"][tracer]
                        s["suv_err"].append(abs(det.iloc[j][f"{tracer}_suvmax"] - truth_max) / truth_max)
                    else:
                        misses.append(
                            f"{pid} {les['id']} {tracer} ({les['region']}, r={les['radius_mm']:.1f} mm, "
                            f"noiseless peak {les['noiseless_suvmax'][tracer]:.2f})"
                        )
            s["fp"] += len(xyz) - len(used)
            fps += [
                f"{pid} {det.iloc[j]['lesion']} {tracer} at {np.round(xyz[j], 1).tolist()} "
                f"SUVmax {det.iloc[j][f'{tracer}_suvmax']:.2f}"
                for j in range(len(xyz))
                if j not in used
            ]
            prow = patients.loc[patients.patient == pid].iloc[0]
            kind = "liver" if "liver" in str(prow.get(f"{tracer}_background_source", "")) else "blood_pool"
            bg_truth = t["studies"][tracer]["background"][f"{kind}_suvmean_noiseless"]
            bg = float(prow[f"{tracer}_background_suvmean"])
            s["bg_err"].append(bg / bg_truth - 1)
        for lid, got in found_rows.items():
            true_region = next(les["region"] for les in t["lesions"] if les["id"] == lid)
            row = rows[rows.lesion == next(iter(got.values()))].iloc[0]
            regions.append((true_region, row["region"] if isinstance(row["region"], str) else ""))
            if len(got) == 2:
                match["both_found"] += 1
                match["merged"] += got[ref] == got[idx]
    return {
        "patients": len(truths),
        "union_lesions": len(lesions),
        "stats": stats,
        "matching": match,
        "tre": tre,
        "regions": regions,
        "misses": misses,
        "false_positives": fps,
        "tracers": (ref, idx),
    }


def report(ev, results=None, verbose=False):
    """Print the figures of :func:`evaluate`."""
    n_pat = ev["patients"]
    print(f"patients: {n_pat}, union lesions in lesions.tsv: {ev['union_lesions']}")
    for tracer, s in ev["stats"].items():
        sens = s["tp"] / s["n"] if s["n"] else float("nan")
        vis = (
            f"; visible (reader's rule) {s['visible_tp']}/{s['visible_n']} = {100 * s['visible_tp'] / s['visible_n']:.1f} %"
            if s["visible_n"]
            else ""
        )
        print(
            f"{tracer:>12}: sensitivity {s['tp']}/{s['n']} = {100 * sens:.1f} % (detectable, global rule){vis}, "
            f"FP/patient {s['fp'] / n_pat:.2f}, median |SUVmax err| {100 * np.median(s['suv_err']):.1f} %, "
            f"median centroid err {np.median(s['cent_err']):.2f} mm, "
            f"background err {100 * np.mean(s['bg_err']):+.1f} % (SD {100 * np.std(s['bg_err']):.1f} %)"
        )
    m = ev["matching"]
    if m["both_found"]:
        print(
            f"matching: {m['merged']}/{m['both_found']} lesions found on both tracers share one union ID "
            f"({100 * m['merged'] / m['both_found']:.1f} %)"
        )
    if ev["regions"]:
        right = sum(a == b for a, b in ev["regions"])
        wrong = {}
        for a, b in ev["regions"]:
            if a != b:
                wrong[f"{a}->{b or 'empty'}"] = wrong.get(f"{a}->{b or 'empty'}", 0) + 1
        print(
            f"region labels: {right}/{len(ev['regions'])} found lesions labelled as in truth "
            f"({100 * right / len(ev['regions']):.1f} %); confusions: {wrong or 'none'}"
        )
    if ev["tre"]:
        print(
            f"registration TRE at lesion centres: median {np.median(ev['tre']):.3f} mm, max {np.max(ev['tre']):.3f} mm"
        )
    if verbose:
        for line in ev["misses"]:
            print(f"  missed: {line}")
        for line in ev["false_positives"]:
            print(f"  false positive: {line}")
    bench = sorted((Path(results) / "benchmarks").glob("*/*.tsv")) if results else []
    if bench:
        per_rule = {}
        for b in bench:
            per_rule.setdefault(b.parent.name, []).append(pd.read_csv(b, sep="\t")["s"].iloc[0])
        print(
            "wall time per job (s): " + ", ".join(f"{r} {np.median(v):.2f} (n={len(v)})" for r, v in per_rule.items())
        )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--truth", default="results/demo_input/truth")
    ap.add_argument("--radius", type=float, default=10.0, help="match radius (mm)")
    ap.add_argument("-v", "--verbose", action="store_true", help="list misses and false positives")
    a = ap.parse_args(argv)
    report(evaluate(a.results, a.truth, a.radius), a.results, a.verbose)


if __name__ == "__main__":
    main()
