"""Replication benchmark: the workflow's cohort statistics beside the truth's, on a preset cohort.

    python tests/benchmarks/bench_replication.py [--preset weich2021] [--seed 2021]
        [--size demo|clinical] [--patients N] [--cores 2] [--workdir DIR] [--set section.key=value ...]

Generates the preset's cohort with ``dualpet synth --preset`` (kept if the work directory
already holds the same one; ``--patients`` defaults to the preset's), writes a config
pointing at it, runs Snakemake (``--keep-going``) and prints side by side, per tracer: the
lesions the pipeline detected on it and the truth's visible ones (and the published
cohort's count), SUVmax mean +- SD over each (pipeline: ``{tracer}_suvmax`` of the rows of
``results/cohort/lesions.tsv`` with ``{tracer}_detected``; truth: ``image_suvmax``, the
SUVmax in the simulated image, of the lesions ``visible`` on that tracer) and the relative
difference of the means (flagged above 10 %); then, for the lesions seen on both tracers
(pipeline: detected on both; truth: visible on both), the direction of the paired
difference and a two-sided Wilcoxon signed-rank p for each. The figures are computed here
from the tables and the truth files (not from ``summary.json``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workflow"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_detection import run_workflow  # noqa: E402
from evaluate_run import evaluate  # noqa: E402

from dualpet.io import read_json  # noqa: E402
from dualpet.synth import generate_cohort  # noqa: E402
from dualpet.synth.phantom import PRESETS  # noqa: E402

#: Largest relative difference of the pipeline's SUVmax mean from the truth's (issue #13).
MAX_MEAN_DIFF = 0.10
ALPHA = 0.05


def pipeline_figures(lesions, ref, idx):
    """Per tracer the SUVmax of the detected lesions; the (ref, idx) SUVmax pairs of the
    lesions detected on both."""
    per = {t: lesions.loc[lesions[f"{t}_detected"] == 1, f"{t}_suvmax"].to_numpy(float) for t in (ref, idx)}
    both = lesions[(lesions[f"{ref}_detected"] == 1) & (lesions[f"{idx}_detected"] == 1)]
    return per, both[[f"{ref}_suvmax", f"{idx}_suvmax"]].to_numpy(float)


def near_true_lesion(lesions, truths, radius=10.0):
    """Per row of lesions.tsv: whether its centroid lies within ``radius`` mm of a true
    lesion's centre (reference study's LPS), as evaluate_run.py matches."""
    centres = {
        t["patient"]: np.array([les["center_lps"][t["reference_tracer"]] for les in t["lesions"]]).reshape(-1, 3)
        for t in truths
    }
    xyz = lesions[["x_mm", "y_mm", "z_mm"]].to_numpy(float)
    return np.array(
        [
            len(centres.get(p, ())) > 0 and np.linalg.norm(centres[p] - c, axis=1).min() <= radius
            for p, c in zip(lesions["patient"], xyz)
        ],
        dtype=bool,
    )


def truth_figures(truths, ref, idx):
    """The same from the truth: ``image_suvmax`` of the lesions visible on a tracer."""
    lesions = [les for t in truths for les in t["lesions"]]
    per = {tr: np.array([les["image_suvmax"][tr] for les in lesions if les["visible"][tr]]) for tr in (ref, idx)}
    pairs = [
        (les["image_suvmax"][ref], les["image_suvmax"][idx])
        for les in lesions
        if les["visible"][ref] and les["visible"][idx]
    ]
    return per, np.array(pairs, dtype=float).reshape(-1, 2)


def paired(pairs):
    """n, median of ref - idx, two-sided Wilcoxon signed-rank p (NaN below 2 pairs)."""
    d = pairs[:, 0] - pairs[:, 1] if len(pairs) else np.array([])
    p = float(stats.wilcoxon(d, alternative="two-sided").pvalue) if len(d) >= 2 else float("nan")
    return len(d), float(np.median(d)) if len(d) else float("nan"), p


def _mean_sd(v):
    return f"{v.mean():.2f} +- {v.std(ddof=1):.2f}" if len(v) > 1 else ("n/a" if not len(v) else f"{v.mean():.2f}")


def report(results, truth_dir, preset):
    """Print the side-by-side table; returns True if the issue's criteria are met (means
    within 10 % on both tracers, same significance of the paired test at p < 0.05)."""
    res = Path(results)
    lesions = pd.read_csv(res / "cohort" / "lesions.tsv", sep="\t", dtype={"patient": str})
    patients = pd.read_csv(res / "cohort" / "patients.tsv", sep="\t", dtype={"patient": str})
    truths = [read_json(p) for p in sorted(Path(truth_dir).glob("*.json"))]
    ref, idx = truths[0]["reference_tracer"], truths[0]["index_tracer"]
    excluded = patients.loc[
        patients.get("status", pd.Series("included", index=patients.index)) != "included", "patient"
    ]
    print(
        f"patients: {len(truths)} generated, {len(truths) - len(excluded)} included by the pipeline"
        + (f" (excluded: {', '.join(excluded)})" if len(excluded) else "")
    )
    pipe, pipe_pairs = pipeline_figures(lesions, ref, idx)
    pipe_true, _ = pipeline_figures(lesions[near_true_lesion(lesions, truths)], ref, idx)
    true, true_pairs = truth_figures(truths, ref, idx)
    counts = PRESETS[preset]["counts"]
    paper_n = {ref: counts["both"] + counts["reference_only"], idx: counts["both"] + counts["index_only"]}
    ev = evaluate(res, truth_dir)  # which detections are true lesions (10 mm), for the reader of the table
    w = 22
    print(f"\n{'':24}{'pipeline (detected)':>{w}}{'truth (visible)':>{w}}{'rel. diff of means':>{w}}{'published':>{w}}")
    ok_means = True
    for t in (ref, idx):
        s = ev["stats"][t]
        print(f"{t:<12}{'lesions':<12}{len(pipe[t]):>{w}}{len(true[t]):>{w}}{'':>{w}}{paper_n[t]:>{w}}")
        rel = pipe[t].mean() / true[t].mean() - 1 if len(pipe[t]) and len(true[t]) else float("nan")
        flag = "" if abs(rel) <= MAX_MEAN_DIFF else "  > 10 % !"
        ok_means &= abs(rel) <= MAX_MEAN_DIFF
        m, sd = PRESETS[preset]["suvmax"][t]
        print(
            f"{'':<12}{'SUVmax':<12}{_mean_sd(pipe[t]):>{w}}{_mean_sd(true[t]):>{w}}{f'{100 * rel:+.1f} %{flag}':>{w}}"
            f"{f'{m:.1f} +- {sd:.1f}':>{w}}"
        )
        rel_true = pipe_true[t].mean() / true[t].mean() - 1 if len(pipe_true[t]) and len(true[t]) else float("nan")
        print(f"{'':<12}{'(true only)':<12}{_mean_sd(pipe_true[t]):>{w}}{'':>{w}}{f'{100 * rel_true:+.1f} %':>{w}}")
        print(
            f"{'':<12}(visible found {s['visible_tp']}/{s['visible_n']}; detections matching no true lesion "
            f"{s['fp']}; 'true only': the detections within 10 mm of a true lesion)"
        )
    print(f"\nlesions seen on both ({ref} - {idx}, paired, two-sided Wilcoxon signed-rank):")
    verdicts = {}
    for name, pairs in (("pipeline", pipe_pairs), ("truth", true_pairs)):
        n, med, p = paired(pairs)
        direction = f"{ref} > {idx}" if med > 0 else (f"{ref} < {idx}" if med < 0 else "none")
        verdicts[name] = (direction, p < ALPHA)
        print(
            f"  {name:<9} n = {n:<4} median difference {med:+.2f}  ({direction}), p = {p:.3g}"
            f"{'  (p < 0.05)' if p < ALPHA else ''}"
        )
    print(f"  published: {counts['both']} on both")
    same_sig = verdicts["pipeline"] == verdicts["truth"]
    print(
        f"\ncriteria: pipeline means within 10 % of the truth's: {'yes' if ok_means else 'NO'}; "
        f"same direction and significance at p < {ALPHA}: {'yes' if same_sig else 'NO'}"
    )
    return ok_means and same_sig


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="weich2021")
    ap.add_argument("--size", choices=["demo", "clinical"], default="demo")
    ap.add_argument("--patients", type=int, default=None, help="default: the preset's")
    ap.add_argument("--seed", type=int, default=2021)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    a = ap.parse_args(argv)
    n = a.patients or PRESETS[a.preset]["patients"]
    work = Path(a.workdir or os.path.join(tempfile.gettempdir(), f"dualpet-rep-{a.preset}-{a.size}-{n}-{a.seed}"))
    t0 = time.perf_counter()
    generate_cohort(work / "data", n, a.seed, a.size, preset=a.preset, log=lambda m: None)
    print(
        f"cohort ready ({time.perf_counter() - t0:.0f} s): preset {a.preset}, {n} patients, size {a.size}, seed {a.seed}"
    )
    run_workflow(work, a.set, a.cores)
    ok = report(work / "results", work / "data" / "truth", a.preset)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
