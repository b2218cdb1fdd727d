"""The Markdown report of a summary (and its Methods text, rendered from the constants)."""

from __future__ import annotations

from dualpet.io import html_page
from dualpet.stats import constants as C
from dualpet.stats.mixed import MIXED_DF_RULE


def fmt_p(p) -> str:
    """``<0.001`` below 0.001, otherwise three decimals; ``n/a`` if missing."""
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt(x, digits: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x)
    if x != 0 and abs(x) < 10 ** (-digits):
        return f"{x:.{digits + 1}g}"
    return f"{x:.{digits}f}"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header, rows) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def _p_cell(test) -> str:
    text = fmt_p(test.get("p"))
    if test.get("p_holm") is not None:
        text += f" (Holm {fmt_p(test['p_holm'])})"
    return text


def _note(test) -> str:
    parts = [test[k] for k in ("reason", "note", "left_out") if test.get(k)]
    if test.get("min_attainable_p") is not None and test.get("p") is not None:
        parts.append(f"smallest attainable p {fmt_p(test['min_attainable_p'])}")
    return "; ".join(parts)


def _pct(k, n) -> str:
    return f"{100.0 * k / n:.1f} %" if n and k is not None else "–"


def _mean_sd(s) -> str:
    return f"{fmt(s['mean'])} ± {fmt(s['sd'])}" if s["n"] else "–"


def _median_iqr(s) -> str:
    return f"{fmt(s['median'])} [{fmt(s['q1'])}–{fmt(s['q3'])}]" if s["n"] else "–"


def _ci(entry, key="ci95") -> str:
    ci = entry.get(key)
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]" if ci else ""


def methods_text(summary) -> str:
    """The Methods paragraph; every number in it comes from :mod:`dualpet.stats.constants`."""
    adjust = summary["exploratory"]["adjustment"]
    pr = summary["primary"]
    return (
        "Patient-level positivity was compared between tracers with the exact McNemar test. Lesion-level "
        "detection was compared with an exact patient-level sign-flip permutation test of the number of lesions "
        "detected on the index minus the reference tracer (all 2^n sign patterns; mid-p, sign patterns tying with "
        "the observed sum counted half) and with the McNemar test "
        "adjusted for clustering within patients (Obuchowski 1998) referred to t on n_patients - 1 degrees of "
        f"freedom (descriptive below {C.CLUSTERED_MCNEMAR_MIN_PATIENTS} patients, where null simulations showed it "
        "does not hold its level); the unadjusted lesion-level McNemar test is descriptive. Uptake was "
        "compared on named lesion sets: " + "; ".join(f"*{k}*: {v}" for k, v in C.LESION_SETS.items()) + ". "
        "Per tracer, uptake is summarised as mean ± SD (ddof = 1) and median [interquartile range]. The primary "
        "uptake comparison is the geometric mean ratio index/reference from a linear model of ln(index/reference) "
        "with a random intercept per patient, fitted by REML with the variance ratio profiled in closed form (so "
        "that the standard error is exact at the zero-variance boundary), with a t reference distribution on "
        f"{MIXED_DF_RULE}; the same model of the difference ({C.DIFFERENCE_DEFINITION}) gives the mean difference. "
        "Models were not fitted with fewer than "
        f"{C.MIN_MIXED_PATIENTS} patients. Paired differences were also tested with the two-sided Wilcoxon "
        "signed-rank test on per-patient mean differences and, descriptively, over lesions (zero differences, "
        f"|Δ| ≤ {C.ZERO_TOLERANCE:g} × the larger value, discarded; exact distribution without ties up to "
        f"n = {C.WILCOXON_EXACT_MAX_N}, exact permutation distribution with ties up to "
        f"n = {C.WILCOXON_PERMUTATION_MAX_N}, otherwise the normal approximation with tie-corrected variance and "
        "continuity correction). Associations of numeric clinical variables with per-patient uptake were assessed "
        f"with Spearman's rank correlation (exact permutation p up to n = {C.SPEARMAN_EXACT_MAX_N}, else the t "
        f"approximation; not computed below n = {C.MIN_SPEARMAN_N}). Exact tests report the smallest p-value "
        f"attainable at their n. The primary endpoint was {pr['metric']}, {pr['lesion_set']} set, "
        f"{C.ANALYSES[pr['analysis']]}; all other tests ({summary['exploratory']['n_tests']}) are exploratory"
        + (
            ", with Holm-adjusted p-values in parentheses."
            if adjust == "holm"
            else ", without adjustment for multiplicity."
        )
    )


def _qc_lines(summary):
    out = []
    for e in summary.get("excluded_patients", []):
        out.append(f"- **{e['patient']} excluded**: {_cell(e.get('reason') or 'no reason given')}")
    for f in summary.get("registration_flagged", []):
        out.append(
            f"- **{f['patient']}: registration flagged** (kept in the analysis; check "
            f"`{f['patient']}/registration/qc.png`): {_cell(f.get('warnings') or 'see qc.json')}"
        )
    for r in summary.get("pet_ct_registered", []):
        out.append(
            f"- **{r['patient']}, {r['tracer']}: PET registered onto its CT** (no shared frame of reference; "
            "accuracy about one PET voxel, see pet.json)"
        )
    for b in summary.get("background_fallbacks", []):
        out.append(f"- **{b['patient']}, {b['tracer']}: background not where configured**: {_cell(b['note'])}")
    for u in summary.get("ct_uncovered", []):
        out.append(
            f"- **{u['patient']}, {u['tracer']}: the CT leaves {fmt(u['mm'], 0)} mm of the PET uncovered** (no organ "
            "labels there; lesions there have region 'unknown')"
        )
    for n in summary.get("series_notes", []):
        out.append(f"- **{n['patient']}, {n['tracer']}: series choice**: {_cell(n['note'])}")
    for d in summary.get("organs_dropped", []):
        out.append(
            f"- **{d['patient']}, {d['tracer']}: organ map dropped** (not used for background, rejection of "
            f"physiological uptake or region labels): {_cell(d['note'])}"
        )
    backgrounds = summary.get("backgrounds") or []
    if backgrounds:
        out += ["", "Background per study (the region each study's TBR divides by):", ""]
        out += table(
            ["patient", "tracer", "SUVmean", "measured in", "fallback: why not the configured region"],
            [
                (
                    b["patient"],
                    b["tracer"],
                    fmt(b.get("suvmean")),
                    b.get("source") or "none found",
                    b.get("fallback") or "",
                )
                for b in backgrounds
            ],
        )
    return ["## Quality control", "", *out, ""] if out else []


def _primary_lines(summary, label):
    pr = summary["primary"]
    res = pr.get("result")
    out = ["## Primary endpoint", ""]
    if not res:
        return out + [f"{pr['metric']}, {pr['lesion_set']} set: not computed ({pr.get('reason')}).", ""]
    what = C.ANALYSES[pr["analysis"]]
    line = f"**{pr['metric']}, {C.LESION_SETS[pr['lesion_set']]}** — {what}: "
    if pr["analysis"] == "log_ratio" and res.get("ratio") is not None:
        line += f"**{fmt(res['ratio'])}** (95% CI {_ci(res, 'ratio_ci95')}), "
    elif res.get("estimate") is not None:
        line += f"**{fmt(res['estimate'])}** (95% CI {_ci(res)}), "
    elif res.get("median_difference") is not None:
        line += f"median Δ {fmt(res['median_difference'])}, "
    line += f"p = {fmt_p(res.get('p'))}; {res.get('n_lesions', res.get('n'))} lesions"
    if res.get("n_patients") is not None:
        line += f" in {res['n_patients']} patients"
    if res.get("df") is not None:
        line += f", t({res['df']})"
    line += "."
    if _note(res):
        line += f" ({_note(res)})"
    return out + [line, ""]


def _detection_lines(summary, ref, idx, label):
    pdet, ldet = summary["patient_detection"], summary["lesion_detection"]
    out = ["## Patient-level detection", ""]
    rows = [
        [label[t], pdet[t]["positive"], pdet[t]["n"], _pct(pdet[t]["positive"], pdet[t]["n"])]
        for t in ("reference", "index")
    ]
    out += table(["Tracer", "Positive (k)", "n", "%"], rows) + [""]
    mc = pdet["mcnemar"]
    out += [
        f"McNemar exact test (n = {mc['n']} patients; {ref} only {mc['reference_only']}, {idx} only "
        f"{mc['index_only']}): p = {_p_cell(mc)}." + (f" ({_note(mc)})" if _note(mc) else ""),
        "",
    ]
    out += ["## Lesion-level detection", ""]
    rows = [[f"Detected on {label[t]}", ldet[t]["detected"], ldet[t]["n"]] for t in ("reference", "index")]
    rows += [
        ["Both", ldet["both"], ldet["n"]],
        [f"{ref} only", ldet["reference_only"], ldet["n"]],
        [f"{idx} only", ldet["index_only"], ldet["n"]],
        ["Neither", ldet["neither"], ldet["n"]],
    ]
    out += table(["Lesions", "Count", "n"], rows) + [""]
    if ldet.get("by_region"):
        rows = [
            [r["region"], r["lesions"], r["reference"], r["index"], r["both"], r["reference_only"], r["index_only"]]
            for r in ldet["by_region"]
        ]
        out += ["By region:", ""]
        out += table(["Region", "Lesions", ref, idx, "Both", f"{ref} only", f"{idx} only"], rows) + [""]
    cm, sf, naive = ldet["clustered_mcnemar"], ldet["sign_flip"], ldet["mcnemar"]
    rows = [
        [sf["test"], f"{sf['n']} patients", f"sum of per-patient Δ {fmt(sf['statistic'])}", _p_cell(sf), _note(sf)],
        [
            cm["test"] + (" (descriptive)" if cm.get("descriptive") else ""),
            f"{cm['n']} lesions / {cm['n_patients']} patients",
            f"Δ proportion {fmt(cm['difference'])}" if cm.get("difference") is not None else "–",
            _p_cell(cm),
            _note(cm),
        ],
        [
            f"{naive['test']} over lesions (descriptive)",
            f"{naive['n']} lesions",
            f"b = {naive['reference_only']}, c = {naive['index_only']}",
            fmt_p(naive["p"]),
            "lesions are clustered within patients",
        ],
    ]
    return out + table(["Test", "n", "Effect (index − reference)", "p", "Note"], rows) + [""]


def _set_rows(name, s):
    """The report table's rows of one lesion set of a metric."""
    rows = []
    if "same_as" in s:
        rows.append([f"{name}: {s['n_lesions']} lesions / {s['n_patients']} patients", "", "", "", "", s["note"]])
        return rows
    lr, df, pw, lw = s["log_ratio"], s["difference"], s["patient_wilcoxon"], s["lesion_wilcoxon"]
    where = f"{name}: {s['n_lesions']} lesions / {s['n_patients']} patients"
    means = f"{_mean_sd(s['reference'])} vs {_mean_sd(s['index'])}"
    rows.append(
        [
            where,
            means,
            "geometric mean ratio",
            f"{fmt(lr.get('ratio'))} {_ci(lr, 'ratio_ci95')}" if lr.get("ratio") is not None else "–",
            _p_cell(lr),
            _note(lr),
        ]
    )
    rows.append(
        [
            where,
            "",
            "mean difference (model)",
            f"{fmt(df.get('estimate'))} {_ci(df)}" if df.get("estimate") is not None else "–",
            _p_cell(df),
            _note(df),
        ]
    )
    rows.append(
        [
            where,
            "",
            "Wilcoxon, per-patient mean Δ",
            f"median {fmt(pw['median_difference'])}",
            _p_cell(pw),
            _note(pw),
        ]
    )
    rows.append(
        [
            where,
            "",
            "Wilcoxon over lesions (descriptive)",
            f"median {fmt(lw['median_difference'])}",
            fmt_p(lw["p"]),
            "; ".join(x for x in (lw.get("reason"), "lesions are clustered") if x),
        ]
    )
    return rows


def _metric_lines(metric, entry, label):
    out = [f"### {metric}", "", "Per tracer (each over its own lesions: the seed study's way of reporting):", ""]
    rows = []
    for role in ("reference", "index"):
        for subset, words in (("detected", "detected on this tracer"), ("all", "all lesions with a value")):
            s = entry["per_tracer"][role][subset]
            rows.append([label[role], words, s["n"], _mean_sd(s), _median_iqr(s)])
    out += table(["Tracer", "Lesions", "n", "Mean ± SD", "Median [IQR]"], rows) + [""]
    out += ["Paired, by lesion set:", ""]
    rows = []
    for name, s in entry["sets"].items():
        rows += _set_rows(name, s)
    return (
        out
        + table(["Lesion set", "Mean ± SD (reference vs index)", "Analysis", "Estimate [95% CI]", "p", "Note"], rows)
        + [""]
    )


#: Python-Markdown's patterns that would pass data through as markup: raw HTML (a clinical
#: column named "<img onerror=...>", a SeriesDescription in an exclusion reason), links and
#: images (``[x](javascript:...)``). The report uses none of them: they are removed, so such
#: text is shown as text.
UNSAFE_MARKDOWN = {
    "inline": (
        "html",
        "link",
        "image_link",
        "reference",
        "image_reference",
        "short_reference",
        "short_image_ref",
        "autolink",
        "automail",
    ),
    "block": ("html_block",),
}


def render_html(markdown_text: str, title: str) -> str:
    """The Markdown report as an HTML page (Python-Markdown with its tables extension),
    every piece of data shown as text (see :data:`UNSAFE_MARKDOWN`)."""
    import markdown

    md = markdown.Markdown(extensions=["tables"], output_format="html")
    for name in UNSAFE_MARKDOWN["inline"]:
        md.inlinePatterns.deregister(name, strict=False)
    for name in UNSAFE_MARKDOWN["block"]:
        md.preprocessors.deregister(name, strict=False)
    return html_page(title, md.convert(markdown_text))


def render_markdown(summary: dict) -> str:
    """The summary as a Markdown report: cohort, QC, primary endpoint, detection, uptake per
    metric and lesion set, correlations, Methods."""
    ref, idx = (
        (summary.get("tracer_names") or summary["tracers"])["reference"],
        (summary.get("tracer_names") or summary["tracers"])["index"],
    )
    label = {"reference": f"{ref} (reference)", "index": f"{idx} (index)"}
    out = [f"# Dual-tracer PET/CT cohort statistics: {idx} vs {ref}", ""]
    cohort = f"**Cohort:** {summary['n_patients']} patients, {summary['n_lesions']} lesions"
    if summary.get("excluded_patients"):
        cohort += f" ({len(summary['excluded_patients'])} patient(s) excluded)"
    rv = summary.get("review") or {}
    if rv.get("decisions"):
        cohort += (
            f"; reader review: {rv['decisions']} decision(s) on {rv['patients_reviewed']} patient(s)"
            f" ({rv['not_applied']} not applied), {rv['reader_accepted']} lesion(s) reader-accepted,"
            f" {rv['reader_added']} reader-added"
        )
    out += [cohort + ".", "", f"Differences are {summary['definitions']['difference']}; ratios index / reference.", ""]
    out += _qc_lines(summary)
    out += _primary_lines(summary, label)
    out += _detection_lines(summary, ref, idx, label)
    out += ["## Uptake", ""]
    if not summary["metrics"]:
        out += ["No metric columns available.", ""]
    for metric, entry in summary["metrics"].items():
        out += _metric_lines(metric, entry, label)
    if summary.get("metrics_skipped"):
        out += ["Skipped metrics: " + "; ".join(f"{m} ({r})" for m, r in summary["metrics_skipped"].items()) + ".", ""]
    corr = summary["correlations"]
    out += ["## Correlations with clinical variables", "", corr["definition"], ""]
    if corr["entries"]:
        rows = [
            [
                e["clinical"],
                e["tracer"],
                f"{e['metric']} ({e['aggregation']})",
                e["n"],
                fmt(e.get("rho")),
                _p_cell(e),
                _note(e),
            ]
            for e in corr["entries"]
        ]
        out += table(["Clinical variable", "Tracer", "Metric", "n", "Spearman rho", "p", "Note"], rows) + [""]
    else:
        out += ["No numeric clinical columns.", ""]
    if summary["clinical_columns"].get("non_numeric"):
        out += [
            "Non-numeric clinical columns (not correlated): "
            + ", ".join(summary["clinical_columns"]["non_numeric"])
            + ".",
            "",
        ]
    return "\n".join(out + ["## Methods", "", methods_text(summary), ""])
