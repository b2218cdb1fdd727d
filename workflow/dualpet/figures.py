"""Cohort figures for the report (issue #13 item 7), written under ``results/cohort/figures/``.

Four figures, each as PNG and SVG, comparing the index tracer with the reference tracer:

- ``paired``: per lesion, the reference and the index value side by side joined by a
  line, coloured by patient (log y axis);
- ``patient_ratios``: forest plot of the per-patient geometric mean index/reference
  ratio with its 95 % t interval, and the cohort's pooled ratio;
- ``bland_altman``: Bland-Altman plot of the log values (difference ln index - ln
  reference against their mean), with the mean difference and the 95 % limits of
  agreement, also as ratios;
- ``detection_by_region``: lesions seen on each tracer per region, as a table figure and
  as ``detection_by_region.tsv``.

The numbers behind each figure come from small pure functions (:func:`paired_values`,
:func:`patient_ratios`, :func:`pooled_ratio`, :func:`bland_altman`,
:func:`detection_by_region`) so that they can be checked on their own;
:func:`write_figures` draws and writes everything and :func:`caption` says what each
figure shows.

Outputs are deterministic: matplotlib's default style (a user's matplotlibrc does not
leak in), a fixed SVG hash salt, SVG text kept as text, no dates or software versions in
the PNG and SVG metadata, and every file written atomically. Figures are drawn on
:class:`matplotlib.figure.Figure` objects with the Agg canvas (no pyplot, no global
backend switch). Inputs without anything to draw give a figure saying "no data" and why.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from dualpet.interchange import LESION_METRICS
from dualpet.io import atomic_path, write_tsv
from dualpet.stats.constants import LESION_SETS as STATS_LESION_SETS
from dualpet.stats.detection import detected, detection_by_region, flags_known
from dualpet.stats.validate import excluded_mask, numbers

__all__ = [
    "FIGURES",
    "LESION_SETS",
    "bland_altman",
    "caption",
    "detection_by_region",
    "included_lesions",
    "paired_values",
    "patient_ratios",
    "pooled_ratio",
    "write_figures",
]

#: Figure names, in report order (file stems under the output folder).
FIGURES = ("paired", "patient_ratios", "bland_altman", "detection_by_region")

#: Lesion sets of the ratio figures (the statistics' estimands).
LESION_SETS = tuple(STATS_LESION_SETS)


#: Figure size (inches) and resolution for the report page.
FIGSIZE, DPI = (7.0, 5.0), 120
#: The forest plot's axis spans the estimates times/divided by this (intervals beyond are cut).
FOREST_MARGIN = 3.0
#: Two-sided confidence level of the intervals, and the limits-of-agreement multiplier.
CONFIDENCE, LOA_Z = 0.95, 1.96
#: A patient's interval is drawn from this many lesions on: with two, the t interval has
#: 1 df (t = 12.7) and spans orders of magnitude; the forest plot says so instead.
MIN_LESIONS_FOR_PATIENT_CI = 3

#: Display names of the metrics on axes and in captions.
METRIC_LABELS = {
    "suvmax": "SUVmax",
    "suvmean": "SUVmean",
    "suvpeak": "SUVpeak",
    "tbr": "TBR",
    "tbr_mean": "TBR (mean)",
    "mtv_ml": "MTV (mL)",
    "tlg": "TLG",
}

#: Style settings on top of matplotlib's defaults; the SVG ones make the SVG reproducible.
_RC = {
    "svg.hashsalt": "dualpet-figures",
    "svg.fonttype": "none",
    "font.size": 9,
    "axes.titlesize": 10,
    "legend.fontsize": 7,
}
_SAVE = {
    "png": {"metadata": {"Software": None}},
    "svg": {"metadata": {"Date": None, "Creator": None}},
}


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _set_text(lesion_set: str, reference: str, index: str) -> str:
    if lesion_set not in LESION_SETS:
        raise ValueError(f"lesion_set {lesion_set!r}: expected one of {', '.join(LESION_SETS)}")
    return {
        "both": f"lesions detected on both tracers ({reference} and {index})",
        "reference": f"lesions detected on the reference tracer ({reference}), whether or not detected on {index}",
        "union": f"all lesions of the union of both tracers' lesions (detected on {reference} or {index})",
    }[lesion_set]


def _check(reference, index, metric, lesion_set):
    if reference == index:
        raise ValueError(f"reference and index tracer are both {reference!r}")
    if lesion_set not in LESION_SETS:
        raise ValueError(f"lesion_set {lesion_set!r}: expected one of {', '.join(LESION_SETS)}")
    if metric not in LESION_METRICS:
        raise ValueError(f"metric {metric!r}: expected one of {', '.join(LESION_METRICS)}")


# --------------------------------------------------------------------------- numbers


def _num(frame: pd.DataFrame, col: str) -> np.ndarray:
    """A column as floats; missing, unparsable and infinite cells are NaN. A table with rows
    must have the column (a misspelt tracer or metric is an error, not "no data")."""
    if col not in frame.columns:
        if len(frame):
            raise ValueError(f"lesions table: column {col!r} is missing")
        return np.zeros(0)
    return numbers(frame[col])


def _excluded_ids(patients: pd.DataFrame) -> list[str]:
    """Patients excluded by ``status`` (or, as in dualpet.stats, a non-empty ``excluded_reason``)."""
    if patients is None or len(patients) == 0 or "patient" not in patients.columns:
        return []
    mask = excluded_mask(patients)
    return sorted(patients.loc[mask, "patient"].astype(str).str.strip().unique())


def included_lesions(lesions: pd.DataFrame, patients: pd.DataFrame) -> tuple[pd.DataFrame, list[str], int]:
    """The lesions of included patients: (lesions, excluded patient IDs, lesions left out with them).
    Patient IDs become stripped strings."""
    lesions = lesions.copy() if lesions is not None else pd.DataFrame()
    if "patient" not in lesions.columns:
        if len(lesions):
            raise ValueError("lesions table: column 'patient' is missing")
        lesions["patient"] = pd.Series(dtype=object)
    lesions["patient"] = lesions["patient"].astype(str).str.strip()
    excluded = _excluded_ids(patients)
    drop = lesions["patient"].isin(excluded).to_numpy()
    return lesions[~drop].reset_index(drop=True), excluded, int(drop.sum())


def paired_values(
    lesions: pd.DataFrame, reference: str, index: str, metric: str = "suvmax", lesion_set: str = "both"
) -> tuple[pd.DataFrame, list[dict]]:
    """The lesions entering the ratio figures and why the others are left out.

    ``lesions`` should already hold only included patients (:func:`included_lesions`).
    Returns ``(pairs, left_out)``: ``pairs`` has columns ``patient``, ``lesion``,
    ``reference`` and ``index`` (the metric on each tracer, both positive and finite),
    sorted by patient and lesion; ``left_out`` lists ``{"reason", "lesions"}`` with one
    reason per lesion left out (the first that applies: not in the lesion set, then a
    missing or non-finite value, then a value <= 0).
    """
    _check(reference, index, metric, lesion_set)
    n = len(lesions)
    ref = _num(lesions, f"{reference}_{metric}")
    idx = _num(lesions, f"{index}_{metric}")
    if lesion_set == "both":
        in_set = detected(lesions, reference) & detected(lesions, index)
        not_in_set = f"not detected on both tracers (lesion set '{lesion_set}')"
    elif lesion_set == "reference":
        in_set = detected(lesions, reference)
        not_in_set = f"not detected on {reference} (lesion set '{lesion_set}')"
    else:
        in_set = np.ones(n, bool)
        not_in_set = ""
    reasons = np.full(n, "", dtype=object)
    reasons[~in_set] = not_in_set
    label = metric_label(metric)
    for i in np.flatnonzero(in_set):
        missing = [t for t, v in ((reference, ref[i]), (index, idx[i])) if np.isnan(v)]
        if missing:
            reasons[i] = f"{label} missing or not finite on {' and '.join(missing)}"
            continue
        nonpositive = [t for t, v in ((reference, ref[i]), (index, idx[i])) if v <= 0]
        if nonpositive:
            reasons[i] = f"{label} <= 0 on {' and '.join(nonpositive)}"
    keep = reasons == ""
    ids = {
        c: lesions[c].astype(str).to_numpy() if c in lesions.columns else np.full(n, "", dtype=object)
        for c in ("patient", "lesion")
    }
    pairs = (
        pd.DataFrame(
            {
                "patient": ids["patient"][keep].astype(object),
                "lesion": ids["lesion"][keep].astype(object),
                "reference": ref[keep],
                "index": idx[keep],
            }
        )
        .sort_values(["patient", "lesion"], kind="stable")
        .reset_index(drop=True)
    )
    counts = pd.Series(reasons[~keep], dtype=object).value_counts(sort=False)
    order = sorted(counts.index, key=lambda r: (r != not_in_set, r))
    left_out = [{"reason": str(r), "lesions": int(counts[r])} for r in order]
    return pairs, left_out


def _t_interval(logs: np.ndarray) -> tuple[float, float, float]:
    """Mean of ``logs`` and its two-sided t interval (n - 1 df); NaN bounds when n < 2."""
    from scipy import stats

    n = logs.size
    mean = float(np.mean(logs))
    if n < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * float(np.std(logs, ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def patient_ratios(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per patient: ``n`` lesions, geometric mean index/reference ``ratio`` and its 95 %
    CI (``ci_low``, ``ci_high``: exp of the t interval of the mean log ratio, n - 1 df;
    NaN for a patient with one lesion), plus ``log_ratio`` (the mean log ratio).
    One row per patient in ``pairs``, sorted by patient."""
    rows = []
    for patient, group in pairs.groupby("patient", sort=True):
        logs = np.log(group["index"].to_numpy(float)) - np.log(group["reference"].to_numpy(float))
        mean, lo, hi = _t_interval(logs)
        rows.append(
            {
                "patient": str(patient),
                "n": int(logs.size),
                "log_ratio": mean,
                "ratio": math.exp(mean),
                "ci_low": math.exp(lo),
                "ci_high": math.exp(hi),
            }
        )
    return pd.DataFrame(rows, columns=["patient", "n", "log_ratio", "ratio", "ci_low", "ci_high"])


def pooled_ratio(pairs: pd.DataFrame) -> dict:
    """The cohort's geometric mean ratio index/reference with its 95 % CI: the statistics'
    primary analysis (:func:`dualpet.stats.inference.mixed_model` of the lesions' log ratios,
    a random intercept per patient, t on n_patients - 1 df), so the figure shows the number
    the report tables give. Ratio and CI None, with the statistics' ``reason``, where the
    model gives none (fewer than 3 patients): no pooled estimate is drawn that the summary
    does not report."""
    from dualpet.stats.inference import mixed_model

    if len(pairs) == 0:
        return {"n_patients": 0, "ratio": None, "ci_low": None, "ci_high": None, "reason": "no lesion pairs"}
    logs = np.log(pairs["index"].to_numpy(float)) - np.log(pairs["reference"].to_numpy(float))
    fit = mixed_model(logs, pairs["patient"].to_numpy(object), log_ratio=True)
    ci = fit.get("ratio_ci95") or (None, None)
    out = {
        "n_patients": int(pairs["patient"].nunique()),
        "ratio": fit.get("ratio"),
        "ci_low": _finite(ci[0]) if ci[0] else None,
        "ci_high": _finite(ci[1]) if ci[1] else None,
    }
    return out if fit.get("ratio") is not None else {**out, "reason": fit.get("reason")}


def bland_altman(pairs: pd.DataFrame) -> dict:
    """Bland-Altman of the log values: per lesion ``x`` = (ln reference + ln index) / 2 and
    ``y`` = ln index - ln reference; ``mean_diff``, ``sd_diff`` (ddof 1) and the limits of
    agreement ``loa_low``/``loa_high`` = mean_diff -/+ 1.96 SD, each also as a ratio
    (``*_ratio`` = exp). SD and limits are None with fewer than 2 lesions."""
    ref = np.log(pairs["reference"].to_numpy(float)) if len(pairs) else np.zeros(0)
    idx = np.log(pairs["index"].to_numpy(float)) if len(pairs) else np.zeros(0)
    x, y = (ref + idx) / 2, idx - ref
    out = {
        "n_lesions": int(y.size),
        "n_patients": int(pairs["patient"].nunique()) if len(pairs) else 0,
        "x": x.tolist(),
        "y": y.tolist(),
    }
    mean = float(np.mean(y)) if y.size else None
    sd = float(np.std(y, ddof=1)) if y.size > 1 else None
    lo = mean - LOA_Z * sd if sd is not None else None
    hi = mean + LOA_Z * sd if sd is not None else None
    for key, v in (("mean_diff", mean), ("loa_low", lo), ("loa_high", hi)):
        out[key] = v
        out[f"{key}_ratio"] = math.exp(v) if v is not None else None
    out["sd_diff"] = sd
    return out


# --------------------------------------------------------------------------- captions


def caption(name: str, reference: str, index: str, metric: str = "suvmax", lesion_set: str = "both") -> str:
    """One paragraph for the report: what figure ``name`` shows, which lesions, how the
    numbers were computed."""
    m = metric_label(metric)
    lesions = _set_text(lesion_set, reference, index)
    common = (
        f"Lesions: {lesions}, of included patients (excluded patients are left out with their lesions), "
        f"with a positive, finite {m} on both tracers; values on a tracer that did not detect the lesion are "
        "measured in the other tracer's VOI carried over by the registration. Lesions left out, and why, are "
        "stated under the figure."
    )
    if name == "paired":
        return (
            f"Paired {m} per lesion: the reference tracer ({reference}, left) and the index tracer ({index}, "
            f"right), one line per lesion, coloured by patient (log scale). {common}"
        )
    if name == "patient_ratios":
        return (
            f"Per-patient {m} ratio {index}/{reference} (forest plot, log scale): the geometric mean of the "
            "patient's per-lesion ratios with its 95 % confidence interval, exp of the t interval of the mean "
            "log ratio with n - 1 degrees of freedom (n lesions of that patient; a point without interval for "
            "a patient with one lesion). Cohort (diamond and dashed line): the geometric mean ratio of the "
            "statistics' random-intercept model of the log ratios (lesions clustered within patients) with its "
            f"95 % CI, as in summary.md. The vertical line marks equal uptake (ratio 1). {common}"
        )
    if name == "bland_altman":
        return (
            f"Bland-Altman plot of log {m}: per lesion, the difference ln {m} {index} - ln {m} {reference} "
            "against the mean of the two logs. The solid line is the mean difference, the dashed lines the 95 % "
            "limits of agreement (mean difference +/- 1.96 SD of the differences, SD with n - 1); each is also "
            f"given as a ratio {index}/{reference} (exp). Lesions are treated as independent although they are "
            f"clustered within patients, so the limits are descriptive. {common}"
        )
    if name == "detection_by_region":
        return (
            f"Lesion detection by region (reference CT at the lesion centroid): for every lesion of the union of "
            f"both tracers' lesions in included patients, the number detected on {reference} (reference) and on "
            f"{index} (index), on both, and on one tracer only ({{tracer}}_detected == 1; a lesion whose flag is "
            "empty is left out, as in the statistics), with a total row. The lesion set and the metric do not apply to this table; "
            "the same numbers are in detection_by_region.tsv."
        )
    raise ValueError(f"unknown figure {name!r}: expected one of {', '.join(FIGURES)}")


# --------------------------------------------------------------------------- drawing


def _finite(v):
    return float(v) if v is not None and math.isfinite(v) else None


def _safe_log(v):
    return np.log(np.maximum(v, 1e-300))


def _figure(figsize=FIGSIZE):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _footnote(fig, text):
    """The note under everything drawn so far (the saved figure's tight box takes it in)."""
    if not text:
        return
    renderer = fig.canvas.get_renderer()
    boxes = [ax.get_tightbbox(renderer) for ax in fig.axes if ax.get_visible()]
    bottom = min((b.y0 for b in boxes if b is not None), default=0.0) / fig.bbox.height
    fig.text(
        0.01,
        bottom - 0.08 / fig.get_figheight(),
        textwrap.fill(text, 120),
        fontsize=7,
        color="#444444",
        ha="left",
        va="top",
    )


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Round values for a log axis whose first is at or below ``lo`` and last at or above
    ``hi`` (both > 0): 1-2-5 steps per decade (finer when that gives fewer than three
    ticks, whole decades when the values span more than 2.5 decades)."""
    lo, hi = min(lo, hi), max(lo, hi)
    span = math.log10(hi / lo)
    for steps in ((1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)) if span <= 2.5 else ((1.0,),):
        decades = range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 2)
        ticks = [float(f"{m * 10.0**e:.6g}") for e in decades for m in steps]
        below = max(t for t in ticks if t <= lo * (1 + 1e-9))
        above = min(t for t in ticks if t >= hi * (1 - 1e-9))
        chosen = [t for t in ticks if below <= t <= above]
        if len(chosen) >= 3:
            break
    return chosen


def _log_axis(ax, which, values):
    """``ax``'s x or y (``which``) as a log axis labelled with plain round numbers
    (:func:`_log_ticks`) whose first and last ticks bracket every plotted value: the view
    runs from the first to the last."""
    from matplotlib import ticker

    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    values = [float(v) for v in values if v is not None and math.isfinite(v) and v > 0]
    ticks = _log_ticks(min(values), max(values))
    axis.set_major_locator(ticker.FixedLocator(ticks))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_locator(ticker.LogLocator(base=10, subs="auto"))
    axis.set_minor_formatter(ticker.NullFormatter())
    pad = (ticks[-1] / ticks[0]) ** 0.02  # a little room so the end ticks' labels stay inside
    getattr(ax, f"set_{which}lim")(ticks[0] / pad, ticks[-1] * pad)
    return ticks


def _linear_axis(ax, which, values):
    """``ax``'s x or y (``which``): a linear axis whose first and last labelled ticks
    bracket every plotted value."""
    from matplotlib import ticker

    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    locator = ticker.MaxNLocator(nbins=7, steps=[1, 2, 2.5, 5, 10])
    ticks = [float(t) for t in locator.tick_values(lo, hi)]
    ticks = [t for t in ticks if t <= lo][-1:] + [t for t in ticks if lo < t < hi] + [t for t in ticks if t >= hi][:1]
    getattr(ax, f"{which}axis").set_major_locator(ticker.FixedLocator(ticks))
    pad = 0.02 * (ticks[-1] - ticks[0])
    getattr(ax, f"set_{which}lim")(ticks[0] - pad, ticks[-1] + pad)
    return ticks


def _fmt(v):
    return f"{v:.2f}" if 0.01 <= abs(v) < 1000 else f"{v:.2g}"


def _n(k, noun):
    return f"{k} {noun}" + ("" if k == 1 else "s")


def _no_data(title, reason, note=""):
    fig = _figure()
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(
        0.5,
        0.5,
        "no data\n" + textwrap.fill(reason, 70),
        ha="center",
        va="center",
        fontsize=12,
        color="#666666",
        transform=ax.transAxes,
    )
    _footnote(fig, note)
    return fig


def _save(fig, outdir: Path, name: str) -> dict:
    paths = {}
    for fmt in ("png", "svg"):
        path = outdir / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=DPI, bbox_inches="tight", pad_inches=0.1, **_SAVE[fmt])
        paths[fmt] = str(path)
    return paths


def _colours(patients):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(patients) <= 10 else "tab20"]
    return {p: cmap(k % cmap.N) for k, p in enumerate(patients)}


def _no_pairs(metric, reference, index, lesion_set):
    return f"no lesion with a positive {metric_label(metric)} on both tracers among the " + _set_text(
        lesion_set, reference, index
    )


def _left_out_text(left_out, excluded, excluded_lesions):
    parts = [f"{d['lesions']} {d['reason']}" for d in left_out]
    if excluded_lesions:
        parts.append(f"{excluded_lesions} of excluded patient(s) {', '.join(excluded)}")
    return "Left out (lesions): " + "; ".join(parts) + "." if parts else "No lesion left out."


def _draw_paired(pairs, reference, index, metric, lesion_set, note):
    m = metric_label(metric)
    title = f"{m}: {reference} (reference) vs {index} (index), per lesion"
    if pairs.empty:
        return _no_data(title, _no_pairs(metric, reference, index, lesion_set), note)
    fig = _figure()
    ax = fig.add_subplot()
    patients = sorted(pairs["patient"].unique())
    colours = _colours(patients)
    for p in patients:
        g = pairs[pairs["patient"] == p]
        for k, (ref, idx) in enumerate(zip(g["reference"], g["index"])):
            ax.plot(
                [0, 1],
                [ref, idx],
                "-o",
                color=colours[p],
                lw=1,
                ms=4,
                alpha=0.85,
                label=f"{p} ({len(g)})" if k == 0 else None,
            )
    _log_axis(ax, "y", [*pairs["reference"], *pairs["index"]])
    ax.set_xlim(-0.4, 1.4)
    ax.set_xticks([0, 1], [f"{reference}\n(reference)", f"{index}\n(index)"])
    ax.set_xlabel("tracer")
    ax.set_ylabel(f"{m}, {reference} and {index} (log scale)")
    ax.set_title(title)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(
        title="patient (lesions)",
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
        ncol=max(1, math.ceil(len(patients) / 25)),
    )
    _footnote(fig, note)
    return fig


def _draw_forest(per_patient, pooled, reference, index, metric, lesion_set, note):
    m = metric_label(metric)
    title = f"{m} ratio {index}/{reference} per patient"
    if per_patient.empty:
        return _no_data(title, _no_pairs(metric, reference, index, lesion_set), note)
    rows = len(per_patient) + 1
    fig = _figure((FIGSIZE[0], max(FIGSIZE[1], 1.6 + 0.28 * rows)))
    ax = fig.add_subplot()
    ys = np.arange(rows)[::-1]  # first patient on top, the cohort at the bottom
    # the axis spans the estimates (and the cohort's interval) with room, between round
    # ticks, not the widest interval: a wider one is cut at the axis and marked with an
    # arrowhead (its numbers are printed beside it); a patient with fewer than
    # MIN_LESIONS_FOR_PATIENT_CI lesions has no interval drawn, and the text says why
    core = [
        v
        for v in (*per_patient["ratio"], pooled["ratio"], pooled["ci_low"], pooled["ci_high"], 1.0)
        if v is not None and math.isfinite(v)
    ]
    ticks = _log_ticks(min(core) / FOREST_MARGIN, max(core) * FOREST_MARGIN)
    x_lo, x_hi = ticks[0], ticks[-1]
    labels = [_forest_patient(ax, y, rec, x_lo, x_hi) for y, rec in zip(ys[:-1], per_patient.itertuples(index=False))]
    _forest_cohort(ax, ys[-1], pooled)
    labels.append(f"cohort ({_n(pooled['n_patients'], 'patient')})")
    ax.axvline(1.0, color="#444444", lw=1)
    _log_axis(ax, "x", [x_lo, x_hi])
    ax.set_yticks(ys, labels)
    ax.set_ylim(-0.8, rows - 0.2)
    ax.set_xlabel(f"{m} ratio {index}/{reference}, geometric mean with 95 % CI (log scale)")
    ax.set_title(title)
    ax.grid(axis="x", which="major", alpha=0.3)
    _footnote(fig, note)
    return fig


def _forest_patient(ax, y, rec, x_lo, x_hi):
    """One patient's row of the forest plot (its ratio, interval and numbers); its label."""
    shown = rec.n >= MIN_LESIONS_FOR_PATIENT_CI and math.isfinite(rec.ci_low)
    if shown:
        ax.plot([max(rec.ci_low, x_lo), min(rec.ci_high, x_hi)], [y, y], color="#1f77b4", lw=1.5)
        if rec.ci_low < x_lo:
            ax.plot([x_lo], [y], "<", color="#1f77b4", ms=6, clip_on=False)
        if rec.ci_high > x_hi:
            ax.plot([x_hi], [y], ">", color="#1f77b4", ms=6, clip_on=False)
    ax.plot([rec.ratio], [y], "s", color="#1f77b4", ms=5)
    if shown:
        ci = f" [{_fmt(rec.ci_low)}, {_fmt(rec.ci_high)}]"
    elif rec.n == 1:
        ci = " (1 lesion: no CI)"
    else:
        ci = f" ({rec.n} lesions: no useful CI, t on {rec.n - 1} df)"
    ax.text(1.02, y, f"{_fmt(rec.ratio)}{ci}", transform=ax.get_yaxis_transform(), va="center", fontsize=8)
    return f"{rec.patient} (n={rec.n})"


def _forest_cohort(ax, y0, pooled):
    """The forest plot's cohort row: the statistics' pooled ratio, or why there is none."""
    if pooled["ratio"] is None:  # the statistics give no cohort estimate: none is drawn
        ax.text(
            0.5,
            y0,
            f"no cohort estimate: {pooled.get('reason')}",
            transform=ax.get_yaxis_transform(),
            ha="center",
            va="center",
            fontsize=8,
            color="#d62728",
        )
        return
    if pooled["ci_low"] is not None:
        lo, hi = pooled["ci_low"], pooled["ci_high"]
        ax.fill([lo, pooled["ratio"], hi, pooled["ratio"]], [y0, y0 + 0.3, y0, y0 - 0.3], color="#d62728")
        ax.axvspan(lo, hi, color="#d62728", alpha=0.08, lw=0)
        ci = f" [{_fmt(lo)}, {_fmt(hi)}]"
    else:
        ax.plot([pooled["ratio"]], [y0], "D", color="#d62728", ms=7)
        ci = ""
    ax.axvline(pooled["ratio"], color="#d62728", ls="--", lw=1)
    ax.text(
        1.02,
        y0,
        f"{_fmt(pooled['ratio'])}{ci}",
        transform=ax.get_yaxis_transform(),
        va="center",
        fontsize=8,
        color="#d62728",
    )


def _draw_bland_altman(ba, reference, index, metric, lesion_set, note):
    m = metric_label(metric)
    title = f"Bland-Altman of ln {m}: {index} vs {reference}"
    if ba["n_lesions"] == 0:
        return _no_data(title, _no_pairs(metric, reference, index, lesion_set), note)
    fig = _figure()
    ax = fig.add_subplot()
    ax.scatter(ba["x"], ba["y"], s=18, color="#1f77b4", alpha=0.8, lw=0)
    ax.axhline(0.0, color="#999999", lw=0.8)
    lines = [("mean_diff", "mean difference", "-")]
    if ba["sd_diff"] is not None:
        lines += [("loa_high", "+1.96 SD", "--"), ("loa_low", "-1.96 SD", "--")]
    for key, text, style in lines:
        v = ba[key]
        ax.axhline(v, color="#d62728", ls=style, lw=1)
        ax.annotate(
            f"{text}: {v:.3f} (ratio {_fmt(ba[key + '_ratio'])})",
            (1.0, v),
            xycoords=("axes fraction", "data"),
            xytext=(-4, 3),
            textcoords="offset points",
            ha="right",
            va="bottom",
            fontsize=8,
            color="#d62728",
        )
    _linear_axis(ax, "y", [*ba["y"], 0.0] + [ba[k] for k, _, _ in lines])
    _linear_axis(ax, "x", ba["x"])
    if ba["sd_diff"] is None:
        ax.text(0.02, 0.02, "limits of agreement need at least 2 lesions", transform=ax.transAxes, fontsize=8)
    ax.set_xlabel(f"mean of ln {m}, {reference} and {index}")
    ax.set_ylabel(f"ln {m}, {index} - ln {m}, {reference}")
    ax.set_title(f"{title} ({_n(ba['n_lesions'], 'lesion')}, {_n(ba['n_patients'], 'patient')})")
    ax.grid(alpha=0.3)
    ratio = ax.secondary_yaxis("right", functions=(np.exp, _safe_log))
    r_lo, r_hi = np.exp(ax.get_ylim())
    ticks = [t for t in _log_ticks(r_lo, r_hi) if r_lo <= t <= r_hi]  # round ratios, spread in log
    ratio.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ratio.set_ylabel(f"ratio {index}/{reference}")
    _footnote(fig, note)
    return fig


def _draw_detection(table, reference, index, note):
    title = f"Lesion detection by region: {reference} (reference) vs {index} (index)"
    if int(table.iloc[-1]["lesions"]) == 0:
        return _no_data(title, "no lesions in included patients", note)
    header = [
        "region",
        "lesions",
        f"detected on\n{reference}",
        f"detected on\n{index}",
        "on both",
        f"{reference}\nonly",
        f"{index}\nonly",
    ]
    cells = [[str(v) for v in row] for row in table.itertuples(index=False)]
    row_in, header_rows, title_in = 0.26, 1.7, 0.45  # row height, header height in rows, title (inches)
    table_in = row_in * (len(cells) + header_rows)
    fig = _figure((FIGSIZE[0], table_in + title_in))
    ax = fig.add_axes((0.02, 0.0, 0.96, table_in / (table_in + title_in)))
    ax.set_axis_off()
    widths = [0.19] + [0.81 / (len(header) - 1)] * (len(header) - 1)
    # the table fills the axes (bbox), rows keeping their relative heights
    tab = ax.table(cellText=cells, colLabels=header, colWidths=widths, cellLoc="center", bbox=(0, 0, 1, 1))
    tab.auto_set_font_size(False)
    tab.set_fontsize(9)
    for (r, _c), cell in tab.get_celld().items():
        if r == 0:
            cell.set_height(cell.get_height() * header_rows)
            cell.set_text_props(weight="bold")
            cell.set_facecolor("#e8e8e8")
        elif r == len(cells):
            cell.set_text_props(weight="bold")
            cell.set_facecolor("#f4f4f4")
    ax.set_title(title)
    _footnote(fig, note)
    return fig


def _records(frame: pd.DataFrame) -> list[dict]:
    return [
        {
            k: (_finite(v) if isinstance(v, float) else v.item() if isinstance(v, np.generic) else v)
            for k, v in rec.items()
        }
        for rec in frame.to_dict("records")
    ]


def _detection_note(n_lesions, flag_missing, excluded, excluded_lesions):
    """The detection table's footnote: the lesions counted and those left out, and why."""
    note = f"{_n(n_lesions, 'lesion')} of included patients. " + (
        f"Left out: {_n(excluded_lesions, 'lesion')} of excluded patient(s) {', '.join(excluded)}."
        if excluded
        else "No patient excluded."
    )
    if flag_missing:
        note += f" Left out: {_n(flag_missing, 'lesion')} with an empty detection flag."
    return note


def write_figures(
    lesions: pd.DataFrame,
    patients: pd.DataFrame,
    reference: str,
    index: str,
    outdir,
    metric: str = "suvmax",
    lesion_set: str = "both",
    names: dict | None = None,
) -> list[dict]:
    """Write the cohort figures (PNG and SVG) and ``detection_by_region.tsv`` into ``outdir``.

    ``lesions``/``patients``: the cohort tables (``results/cohort/lesions.tsv``,
    ``patients.tsv``); excluded patients are left out with their lesions. Returns one
    dict per figure (in :data:`FIGURES` order) with ``name``, ``png``, ``svg``,
    ``caption`` (:func:`caption`), ``numbers`` (what was drawn), ``n_lesions`` drawn,
    ``left_out`` (``[{"reason", "lesions"}]``), ``excluded_patients`` and, for the
    detection table, ``tsv``. All values are JSON-serialisable (None for missing).
    ``names``: tracer -> display name on the figures (config ``tracer_names``).
    """
    import matplotlib
    import matplotlib.style

    _check(reference, index, metric, lesion_set)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    kept, excluded, excluded_lesions = included_lesions(lesions, patients)
    pairs, left_out = paired_values(kept, reference, index, metric, lesion_set)
    per_patient = patient_ratios(pairs)
    pooled = pooled_ratio(pairs)
    ba = bland_altman(pairs)
    table = detection_by_region(kept, reference, index)
    flag_missing = int((~flags_known(kept, reference, index)).sum())
    n_patients = int(pairs["patient"].nunique()) if len(pairs) else 0
    ratio_note = (
        f"{metric_label(metric)}; lesion set '{lesion_set}': {_n(len(pairs), 'lesion')} of "
        f"{_n(n_patients, 'patient')} drawn. " + _left_out_text(left_out, excluded, excluded_lesions)
    )
    detection_note = _detection_note(len(kept) - flag_missing, flag_missing, excluded, excluded_lesions)
    left_excluded = [{"reason": "patient excluded", "lesions": excluded_lesions}] if excluded_lesions else []
    left_unflagged = [{"reason": "empty detection flag", "lesions": flag_missing}] if flag_missing else []
    ref_name, idx_name = ((names or {}).get(t) or t for t in (reference, index))
    out = []
    with matplotlib.style.context("default"), matplotlib.rc_context(_RC):
        figures = [
            (
                "paired",
                _draw_paired(pairs, ref_name, idx_name, metric, lesion_set, ratio_note),
                {"n_lesions": len(pairs), "n_patients": n_patients, "points": _records(pairs)},
            ),
            (
                "patient_ratios",
                _draw_forest(per_patient, pooled, ref_name, idx_name, metric, lesion_set, ratio_note),
                {"n_lesions": len(pairs), "patients": _records(per_patient), "pooled": pooled},
            ),
            (
                "bland_altman",
                _draw_bland_altman(ba, ref_name, idx_name, metric, lesion_set, ratio_note),
                {k: (_finite(v) if isinstance(v, float) else v) for k, v in ba.items()},
            ),
            (
                "detection_by_region",
                _draw_detection(table, ref_name, idx_name, detection_note),
                {"n_lesions": len(kept) - flag_missing, "table": _records(table)},
            ),
        ]
        for name, fig, numbers in figures:
            entry = _save_figure(fig, outdir, name, numbers, caption(name, ref_name, idx_name, metric, lesion_set))
            if name == "detection_by_region":
                tsv = outdir / "detection_by_region.tsv"
                write_tsv(tsv, table)
                entry.update(tsv=str(tsv), n_lesions=len(kept) - flag_missing, excluded_patients=excluded)
                entry["left_out"] = [*left_unflagged, *left_excluded]
            else:
                entry.update(n_lesions=len(pairs), excluded_patients=excluded, left_out=[*left_out, *left_excluded])
            out.append(entry)
    return out


def _save_figure(fig, outdir, name, numbers, text):
    """Write one figure (PNG and SVG); its entry of :func:`write_figures`' list, so far."""
    paths = _save(fig, outdir, name)
    return {"name": name, "png": paths["png"], "svg": paths["svg"], "caption": text, "numbers": numbers}
