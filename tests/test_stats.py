"""Tests for dualpet.stats: cohorts built by hand so that the expected values are known.

Tolerances: exact p-values (McNemar, exact Wilcoxon, exact Spearman permutation)
are ratios of small integers computed in floating point, so they are compared with
a relative tolerance of 1e-12 (a few ulps of accumulated rounding). Descriptive
statistics are compared with numpy on the same values with the same tolerance.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr, wilcoxon

from dualpet import stats
from dualpet.errors import DualpetInputError
from dualpet.io import read_json

REF, IDX = "fdg", "pentixafor"
EXACT = 1e-12  # relative tolerance for exact (rational) values, see module docstring


def lesion_rows(spec):
    """Build a lesions table from ``{patient: [(ref_suvmax, idx_suvmax), ...]}``.

    Every lesion is detected on both tracers; other metrics are derived so that the
    index tracer is the same fraction of the reference for all of them.
    """
    columns = ["patient", "lesion", "x_mm", "y_mm", "z_mm", "region"] + [
        f"{t}_{m}" for t in (REF, IDX) for m in ("detected",) + stats.METRICS
    ]
    rows = []
    for patient, lesions in spec.items():
        for k, (ref, idx) in enumerate(lesions):
            row = {
                "patient": patient,
                "lesion": f"{patient}-L{k + 1}",
                "x_mm": 0.0,
                "y_mm": 0.0,
                "z_mm": float(k),
                "region": "bone",
            }
            for tracer, value in ((REF, ref), (IDX, idx)):
                row[f"{tracer}_detected"] = 1
                row[f"{tracer}_suvmax"] = value
                row[f"{tracer}_suvmean"] = None if value is None else value * 0.6
                row[f"{tracer}_suvpeak"] = None if value is None else value * 0.8
                row[f"{tracer}_tbr"] = None if value is None else value / 2.0
                row[f"{tracer}_tbr_mean"] = None if value is None else value / 3.0
                row[f"{tracer}_mtv_ml"] = None if value is None else value * 1.5
                row[f"{tracer}_tlg"] = None if value is None else value * 0.6 * value * 1.5
            rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def patient_table(ids, ref_pos=None, idx_pos=None, **clinical):
    n = len(ids)
    data = {
        "patient": list(ids),
        f"{REF}_positive": ref_pos if ref_pos is not None else [1] * n,
        f"{IDX}_positive": idx_pos if idx_pos is not None else [1] * n,
        f"{REF}_lesions": [1] * n,
        f"{IDX}_lesions": [1] * n,
        f"{REF}_background_suvmean": [1.0] * n,
        f"{IDX}_background_suvmean": [0.5] * n,
        f"{REF}_background_source": ["liver"] * n,
        f"{IDX}_background_source": ["blood_pool"] * n,
    }
    data.update(clinical)
    return pd.DataFrame(data)


def assert_json_clean(summary):
    """No NaN/inf (allow_nan=False) and no numpy types (default json encoder)."""
    text = json.dumps(summary, allow_nan=False)
    assert json.loads(text) == summary


@pytest.fixture
def half_cohort():
    """10 lesions in 4 patients; reference SUVmax 2..11, index exactly half of it."""
    groups = {"P1": [2, 3, 4], "P2": [5, 6], "P3": [7, 8, 9], "P4": [10, 11]}
    spec = {p: [(float(v), v / 2.0) for v in values] for p, values in groups.items()}
    lesions = lesion_rows(spec)
    patients = patient_table(
        list(groups),
        ki67=[5.0, 10.0, 20.0, 40.0],
        cxcr4_ihc=[0, 1, 2, 3],
        histology=["a", "b", "a", "b"],
        constant=[1.0] * 4,
    )
    return lesions, patients


# --------------------------------------------------------------------------- paired tests


def test_half_uptake_wilcoxon_per_lesion(half_cohort):
    s = stats.summarize(*half_cohort, REF, IDX)
    t = s["metrics"]["suvmax"]["paired_lesion"]
    # 10 distinct negative differences: W = 0, exact two-sided p = 2 / 2**10.
    assert t["n"] == 10 and t["n_nonzero"] == 10
    assert t["statistic"] == 0
    assert t["p"] == pytest.approx(2 / 2**10, rel=EXACT)
    assert t["method"] == "exact"
    # differences are -ref/2 for ref = 2..11 -> median -(6.5)/2
    assert t["median_difference"] == pytest.approx(-3.25, rel=EXACT)
    assert "test" in t and "clustered" in t["note"]


def test_half_uptake_patient_clustered(half_cohort):
    s = stats.summarize(*half_cohort, REF, IDX)
    pw = s["metrics"]["suvmax"]["patient_wilcoxon"]
    # per-patient mean differences -1.5, -2.75, -4, -5.25: 4 distinct negatives -> p = 2/16
    assert pw["n"] == 4
    assert pw["p"] == pytest.approx(2 / 2**4, rel=EXACT)
    assert pw["median_difference"] == pytest.approx((-2.75 - 4.0) / 2, rel=EXACT)
    mm = s["metrics"]["suvmax"]["mixed_model"]
    assert mm["n_lesions"] == 10 and mm["n_patients"] == 4 and mm["n"] == 10
    assert mm["p"] is not None and 0 <= mm["p"] <= 1
    # the GLS estimate is a weighted mean of lesion differences: between their extremes
    assert -5.5 <= mm["estimate"] <= -1.0
    lo, hi = mm["ci95"]
    assert lo < mm["estimate"] < hi
    assert isinstance(mm["warnings"], list)
    assert_json_clean(s)


def test_all_metrics_analysed_and_absent_metric_skipped(half_cohort):
    lesions, patients = half_cohort
    s = stats.summarize(lesions.drop(columns=[f"{IDX}_tlg"]), patients, REF, IDX)
    assert list(s["metrics"]) == ["suvmax", "suvmean", "suvpeak", "tbr", "tbr_mean", "mtv_ml"]
    assert "tlg" in s["metrics_skipped"]


def test_zero_differences_are_discarded_like_wilcoxon():
    d = np.array([0.0, -1.0, -1.0, -2.0, -3.0, 0.5])
    res = stats._wilcoxon(d, "t")
    assert res["n"] == 6 and res["n_nonzero"] == 5
    expected = wilcoxon(d[d != 0]).pvalue
    assert res["p"] == pytest.approx(expected, rel=EXACT)
    assert res["method"].startswith("exact permutation")  # ties among |d|


# --------------------------------------------------------------------------- McNemar


def test_patient_mcnemar_b5_c0():
    ids = [f"P{i}" for i in range(10)]
    patients = patient_table(ids, ref_pos=[1] * 10, idx_pos=[1] * 5 + [0] * 5)
    s = stats.summarize(lesion_rows({}), patients, REF, IDX)
    pd_ = s["patient_detection"]
    assert pd_["reference"] == {"positive": 10, "n": 10, "proportion": 1.0}
    assert pd_["index"]["positive"] == 5
    mc = pd_["mcnemar"]
    assert (mc["b"], mc["c"], mc["n"]) == (5, 0, 10)
    # exact: 2 * P(Bin(5, 1/2) <= 0) = 2 / 32
    assert mc["p"] == pytest.approx(0.0625, rel=EXACT)
    assert "McNemar" in mc["test"]


def test_lesion_detection_counts_and_missing_flag():
    lesions = lesion_rows({"P1": [(4.0, 2.0)] * 3, "P2": [(5.0, 6.0)] * 3})
    lesions[f"{REF}_detected"] = [1, 1, 0, 1, 0, 1]
    lesions[f"{IDX}_detected"] = [1, 0, 1, 0, 0, None]
    s = stats.summarize(lesions, patient_table(["P1", "P2"]), REF, IDX)
    ld = s["lesion_detection"]
    assert ld["n"] == 5  # last lesion has a missing index flag
    assert (ld["both"], ld["reference_only"], ld["index_only"], ld["neither"]) == (1, 2, 1, 1)
    assert ld["reference"] == {"detected": 4, "n": 6}
    assert ld["index"] == {"detected": 2, "n": 5}
    assert ld["mcnemar"]["p"] == pytest.approx(1.0, rel=EXACT)  # b=2, c=1: 2*P(X<=1|3) = 1
    assert "descriptive" in ld["mcnemar"]["note_clustering"]


# --------------------------------------------------------------------------- descriptives


def test_descriptives_match_numpy_all_and_detected():
    ref = [3.0, 7.5, None, 12.0, 4.25, 9.0]
    idx = [1.0, 2.0, 6.0, None, 8.0, 3.5]
    lesions = lesion_rows({"P1": list(zip(ref[:3], idx[:3])), "P2": list(zip(ref[3:], idx[3:]))})
    lesions[f"{REF}_detected"] = [1, 0, 1, 1, 1, 0]
    s = stats.summarize(lesions, patient_table(["P1", "P2"]), REF, IDX)
    m = s["metrics"]["suvmax"]
    for values, got in (
        ([3.0, 7.5, 12.0, 4.25, 9.0], m["reference"]["all"]),
        ([3.0, 12.0, 4.25], m["reference"]["detected"]),  # detected & with a value
        ([1.0, 2.0, 6.0, 8.0, 3.5], m["index"]["all"]),
    ):
        x = np.array(values)
        q1, med, q3 = np.percentile(x, [25, 50, 75])
        expected = {
            "n": x.size,
            "mean": x.mean(),
            "sd": x.std(ddof=1),
            "median": med,
            "q1": q1,
            "q3": q3,
            "min": x.min(),
            "max": x.max(),
        }
        assert got["n"] == expected.pop("n")
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=EXACT), key
    # paired test uses only lesions with both values (4 of 6)
    assert m["paired_lesion"]["n"] == 4
    assert_json_clean(s)


# --------------------------------------------------------------------------- correlations


def test_spearman_monotone_clinical(half_cohort):
    s = stats.summarize(*half_cohort, REF, IDX)
    corr = s["correlations"]
    assert "maximum" in corr["definition"] and "mean" in corr["definition"]
    by_key = {(e["clinical"], e["tracer"], e["metric"]): e for e in corr["entries"]}
    for tracer in (REF, IDX):
        for metric in ("suvmax", "suvmean", "tbr"):
            e = by_key[("ki67", tracer, metric)]
            assert e["n"] == 4 and e["rho"] == pytest.approx(1.0, rel=EXACT)
            # exact permutation: only the identity pairing reaches |rho| = 1 in each tail
            assert e["p"] == pytest.approx(2 / math.factorial(4), rel=EXACT)
            assert e["test"] == stats.SPEARMAN_TEST
    const = by_key[("constant", REF, "suvmax")]
    assert const["p"] is None and "constant" in const["reason"]
    assert s["clinical_columns"]["non_numeric"] == ["histology"]
    assert set(s["clinical_columns"]["numeric"]) == {"ki67", "cxcr4_ihc", "constant"}


def test_correlation_aggregation_max_vs_mean():
    # max order: C < B < D < A ; mean order: C < A < B < D
    spec = {
        "A": [(10.0, 1.0), (1.0, 1.0)],
        "B": [(6.0, 1.0), (6.0, 1.0)],
        "C": [(3.0, 1.0)],
        "D": [(8.0, 1.0), (7.0, 1.0)],
    }
    patients = patient_table(list(spec), score=[4, 2, 1, 3])
    s = stats.summarize(lesion_rows(spec), patients, REF, IDX)
    by_key = {(e["tracer"], e["metric"]): e for e in s["correlations"]["entries"]}
    assert by_key[(REF, "suvmax")]["rho"] == pytest.approx(1.0, rel=EXACT)
    assert by_key[(REF, "suvmax")]["aggregation"] == "max"
    mean_ref = [0.6 * 5.5, 0.6 * 6.0, 0.6 * 3.0, 0.6 * 7.5]  # suvmean = 0.6 * suvmax per lesion
    expected = spearmanr([4, 2, 1, 3], mean_ref).statistic
    assert by_key[(REF, "suvmean")]["rho"] == pytest.approx(expected, rel=EXACT)
    # index uptake is constant across patients -> no correlation
    assert by_key[(IDX, "suvmax")]["p"] is None


def test_spearman_large_n_uses_scipy_p():
    x = np.arange(12.0)
    y = x**2 + np.array([0, 5, -3, 2, 0, 1, -4, 0, 3, 0, -2, 1.0])
    res = stats._spearman(x, y)
    ref = spearmanr(x, y)
    assert res["rho"] == pytest.approx(ref.statistic, rel=EXACT)
    assert res["p"] == res["p_asymptotic"] == pytest.approx(ref.pvalue, rel=EXACT)


# --------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("lesions", [lesion_rows({}), pd.DataFrame()])
def test_no_lesions(lesions):
    s = stats.summarize(lesions, patient_table(["P1", "P2", "P3"], cxcr4_ihc=[1, 2, 3]), REF, IDX)
    assert s["n_lesions"] == 0 and s["n_patients"] == 3
    if len(lesions.columns):
        assert len(s["metrics"]) == len(stats.METRICS)
    assert s["lesion_detection"]["mcnemar"]["p"] is None
    assert s["lesion_detection"]["mcnemar"]["reason"]
    for entry in s["metrics"].values():
        for key in ("paired_lesion", "patient_wilcoxon", "mixed_model"):
            assert entry[key]["p"] is None and entry[key]["reason"]
            assert entry[key]["n"] == 0
    for e in s["correlations"]["entries"]:
        assert e["p"] is None and e["reason"]
    assert_json_clean(s)
    assert "# " in stats.render_markdown(s)


def test_single_patient():
    lesions = lesion_rows({"P1": [(4.0, 2.0), (6.0, 2.5), (9.0, 3.0)]})
    s = stats.summarize(lesions, patient_table(["P1"], ki67=[12.0]), REF, IDX)
    m = s["metrics"]["suvmax"]
    assert m["paired_lesion"]["p"] is not None  # descriptive, within one patient
    assert m["patient_wilcoxon"]["p"] is None and m["patient_wilcoxon"]["reason"]
    assert m["mixed_model"]["p"] is None and "fewer than 3 patients" in m["mixed_model"]["reason"]
    assert all(e["p"] is None and e["reason"] for e in s["correlations"]["entries"])
    assert_json_clean(s)


def test_all_differences_zero():
    spec = {p: [(v, v) for v in (2.0, 3.0, 5.0)] for p in ("P1", "P2", "P3", "P4")}
    s = stats.summarize(lesion_rows(spec), patient_table(list(spec)), REF, IDX)
    for entry in s["metrics"].values():
        assert entry["paired_lesion"]["p"] is None
        assert entry["paired_lesion"]["reason"] == "all differences are zero"
        assert entry["paired_lesion"]["median_difference"] == 0
        assert entry["patient_wilcoxon"]["p"] is None
        assert entry["mixed_model"]["p"] is None and "zero variance" in entry["mixed_model"]["reason"]
    mc = s["patient_detection"]["mcnemar"]
    assert mc["p"] == 1.0 and "no discordant" in mc["note"]
    assert_json_clean(s)


def test_missing_values_and_nan_free_json():
    spec = {"P1": [(4.0, None), (None, 3.0)], "P2": [(None, None)], "P3": [(5.0, 1.0)]}
    lesions = lesion_rows(spec)
    lesions.loc[0, f"{REF}_detected"] = None
    patients = patient_table(
        list(spec), ref_pos=[1, None, 0], idx_pos=[0, 1, 1], ki67=[np.nan, 3.0, np.inf], note=["x", None, "y"]
    )
    s = stats.summarize(lesions, patients, REF, IDX)
    assert s["patient_detection"]["reference"]["n"] == 2
    assert s["patient_detection"]["mcnemar"]["n"] == 2
    m = s["metrics"]["suvmax"]
    assert m["paired_lesion"]["n"] == 1 and m["paired_lesion"]["p"] is None
    assert m["reference"]["all"]["n"] == 2 and m["reference"]["all"]["sd"] == pytest.approx(
        np.std([4, 5], ddof=1)
    )
    assert m["reference"]["detected"]["n"] == 1 and m["reference"]["detected"]["sd"] is None
    assert_json_clean(s)


def test_mixed_model_guards():
    few = stats._mixed_model([1.0, 2.0, 3.0, 4.0], ["a", "a", "b", "b"])
    assert few["p"] is None and "fewer than 3" in few["reason"]
    single = stats._mixed_model([1.0, 2.0, 3.5, 4.0], ["a", "b", "c", "d"])
    assert single["p"] is None and "more than one" in single["reason"]


def test_mixed_model_boundary_fit_does_not_leak_warnings():
    # identical patient means -> random-intercept variance on the boundary (0):
    # statsmodels' gradient optimisers emit ConvergenceWarnings here.
    d = [1.0, 2.0, 3.0, 2.0, 3.0, 1.0, 3.0, 1.0, 2.0]
    g = ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any escaping warning would fail the test
        res = stats._mixed_model(d, g)
    assert res["n_patients"] == 3 and res["n_lesions"] == 9
    # the caught ConvergenceWarnings are recorded in the result instead
    assert any(w.startswith("ConvergenceWarning") for w in res["warnings"])
    assert res["p"] is not None
    # with (near) zero between-patient variance and equal cluster sizes the GLS
    # estimate is the plain mean 2.0; 1e-6 allows for the optimiser's tolerance
    assert res["estimate"] == pytest.approx(2.0, rel=1e-6)


def test_excluded_patients_and_their_lesions_are_dropped(half_cohort):
    lesions, patients = half_cohort
    patients = patients.assign(
        status=["ok", "ok", "ok", "excluded"], excluded_reason=[None, None, None, "motion"]
    )
    s = stats.summarize(lesions, patients, REF, IDX)
    assert s["n_patients"] == 3 and s["n_lesions"] == 8
    assert s["excluded_patients"] == [{"patient": "P4", "reason": "motion"}]
    assert "status" not in s["clinical_columns"]["non_numeric"]
    assert "excluded_reason" not in s["clinical_columns"]["non_numeric"]


def test_bad_input_raises():
    with pytest.raises(DualpetInputError):
        stats.summarize(pd.DataFrame({"lesion": ["L1"]}), patient_table(["P1"]), REF, IDX)
    with pytest.raises(DualpetInputError):
        stats.summarize(lesion_rows({}), patient_table(["P1"]), REF, REF)


# --------------------------------------------------------------------------- report and run


def test_format_p():
    assert stats._fmt_p(0.0004) == "<0.001"
    assert stats._fmt_p(0.001) == "0.001"
    assert stats._fmt_p(0.25) == "0.250"
    assert stats._fmt_p(None) == "n/a"


def test_render_markdown(half_cohort):
    s = stats.summarize(*half_cohort, REF, IDX)
    md = stats.render_markdown(s)
    assert md.startswith("# ")
    assert "4 patients, 10 lesions" in md
    for heading in (
        "Patient-level detection",
        "Lesion-level detection",
        "### suvmax",
        "Patient-clustered",
        "Correlations",
        "## Methods",
    ):
        assert heading in md
    assert "| 0.002 |" in md  # per-lesion Wilcoxon p = 2/1024
    assert "McNemar" in md and "Wilcoxon" in md and "mixed model" in md and "Spearman" in md
    # works identically on the JSON round-tripped summary
    assert stats.render_markdown(json.loads(json.dumps(s))) == md


def test_run_writes_json_and_markdown(tmp_path, half_cohort):
    lesions, patients = half_cohort
    lesions = lesions.assign(patient=lesions["patient"].str.replace("P", "00"))
    patients = patients.assign(patient=patients["patient"].str.replace("P", "00"))
    lesions.loc[0, f"{IDX}_suvpeak"] = None  # empty cell in the TSV
    lpath, ppath = tmp_path / "lesions.tsv", tmp_path / "patients.tsv"
    lesions.to_csv(lpath, sep="\t", index=False, na_rep="")
    patients.to_csv(ppath, sep="\t", index=False, na_rep="")
    out_json, out_md = tmp_path / "out" / "stats.json", tmp_path / "out" / "stats.md"
    summary = stats.run(lpath, ppath, REF, IDX, out_json, out_md)
    assert read_json(out_json) == summary
    assert out_md.read_text() == stats.render_markdown(summary)
    assert summary["n_patients"] == 4 and summary["n_lesions"] == 10
    assert summary["metrics"]["suvpeak"]["paired_lesion"]["n"] == 9
    assert summary["metrics"]["suvmax"]["paired_lesion"]["p"] == pytest.approx(2 / 2**10, rel=EXACT)
    # leading zeros of patient IDs survive: correlations still join patients to lesions
    ki67 = [e for e in summary["correlations"]["entries"] if e["clinical"] == "ki67"]
    assert all(e["n"] == 4 for e in ki67)
    json.dumps(read_json(out_json), allow_nan=False)


def test_quality_control_lists_exclusions_and_flagged_registrations():
    from dualpet.stats import render_markdown, summarize

    lesions = pd.DataFrame(
        {"patient": ["A", "A", "B", "C"], "lesion": ["L1", "L2", "L1", "L1"],
         "fdg_detected": [1, 1, 1, 1], "pentixafor_detected": [0, 1, 1, 0],
         "fdg_suvmax": [10.0, 8.0, 6.0, 5.0], "pentixafor_suvmax": [3.0, 4.0, 5.0, 2.0]}
    )  # fmt: skip
    patients = pd.DataFrame(
        {"patient": ["A", "B", "C"], "status": ["included", "included", "excluded"],
         "excluded_reason": ["", "", "patient C, pentixafor: attribute Units (0054,1001): Units 'CPS'"],
         "fdg_positive": [1, 1, 1], "pentixafor_positive": [1, 1, 0],
         "registration_ok": [1, 0, 1], "registration_body_dice": [0.99, 0.7, 0.98],
         "registration_warnings": ["", "body-mask Dice after registration is 0.700 (< 0.9)", ""],
         "pentixafor_pet_ct_registered": [1, 0, 0]}
    )  # fmt: skip
    summary = summarize(lesions, patients, "fdg", "pentixafor")
    assert summary["n_patients"] == 2 and summary["n_lesions"] == 3
    assert [e["patient"] for e in summary["excluded_patients"]] == ["C"]
    assert summary["registration_flagged"] == [{"patient": "B", "warnings": "body-mask Dice after registration is 0.700 (< 0.9)"}]
    # QC columns are not clinical variables
    assert all(c["clinical"] not in ("registration_ok", "registration_body_dice") for c in summary["correlations"]["entries"])
    md = render_markdown(summary)
    assert "## Quality control" in md and "C excluded" in md and "Units" in md and "B: registration flagged" in md
    assert summary["pet_ct_registered"] == [{"patient": "A", "tracer": "pentixafor"}]
    assert "A, pentixafor: PET registered onto its CT" in md
