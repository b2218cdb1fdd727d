"""Issue 26: the statistics refuse tables they cannot read, test each question once, say
what cannot be estimated, and agree with the figures.

Tolerances: exact p-values are ratios of small integers computed in floating point
(relative 1e-12, as in test_stats.py); numbers read back from an SVG are compared as the figure prints them (2 decimals).
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as ss
from test_stats import IDX, REF, lesion_rows, patient_table

from dualpet import figures, stats
from dualpet.errors import DualpetInputError
from dualpet.stats import constants as C
from dualpet.stats import inference as T

EXACT = 1e-12


def cohort(n_patients=4, per_patient=3, seed=0):
    rng = np.random.default_rng(seed)
    spec = {
        f"P{i}": [(float(v), float(v * rng.uniform(0.5, 2.0))) for v in rng.uniform(2, 12, per_patient)]
        for i in range(1, n_patients + 1)
    }
    return lesion_rows(spec), patient_table(list(spec))


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        (f"{REF}_suvmax", "12,5", "'12,5' (patient P1, lesion P1-L1), not a number"),
        (f"{REF}_suvmax", "n/a", "'n/a' (patient P1, lesion P1-L1), not a number"),
        (f"{IDX}_suvmean", "abc", "not a number"),
        (f"{IDX}_suvmax", -1.0, "out of range"),
        (f"{IDX}_mtv_ml", -0.5, "out of range"),
        (f"{REF}_suvmax", 1e308, "out of range"),
        (f"{REF}_tlg", np.inf, "out of range"),
        (f"{REF}_suvmax", "inf", "out of range"),
    ],
)
def test_unreadable_or_impossible_values_are_one_clear_line(column, value, words):
    lesions, patients = cohort()
    lesions[column] = lesions[column].astype(object)
    lesions.loc[0, column] = value
    with pytest.raises(DualpetInputError) as err:
        stats.summarize(lesions, patients, REF, IDX)
    message = str(err.value)
    assert "\n" not in message and f"'{column}'" in message and words in message


def test_a_mean_may_be_negative_and_an_empty_cell_is_missing():
    """A VOI carried over to near-zero uptake can average below 0 on scanners that keep
    negative voxels: accepted. An empty cell is a missing value, not an error."""
    lesions, patients = cohort()
    lesions.loc[0, f"{IDX}_suvmean"] = -0.02
    lesions.loc[1, f"{IDX}_suvmax"] = np.nan
    s = stats.summarize(lesions, patients, REF, IDX)
    assert s["metrics"]["suvmax"]["sets"]["both"]["n_lesions"] == len(lesions) - 1


def test_a_lesion_listed_twice_is_refused():
    lesions, patients = cohort()
    twice = pd.concat([lesions, lesions.iloc[[4]]], ignore_index=True)
    with pytest.raises(DualpetInputError, match=r"listed more than once: P2 P2-L2 \(one row per patient and lesion\)"):
        stats.summarize(twice, patients, REF, IDX)


def test_a_decimal_comma_in_a_clinical_column_is_refused():
    lesions, patients = cohort()
    patients["ki67"] = ["12,5", "3", "4", "5"]
    with pytest.raises(DualpetInputError, match="column 'ki67' has '12,5' \\(patient P1\\)"):
        stats.summarize(lesions, patients, REF, IDX)
    patients["ki67"] = ["12.5", "n/a", "4", "5"]  # documented missing tokens stay accepted
    assert "ki67" in stats.summarize(lesions, patients, REF, IDX)["clinical_columns"]["numeric"]


# --------------------------------------------------------------------------- zero variance


def test_ratios_equal_up_to_rounding_are_not_tested():
    """index = 0.37 x reference: the log ratios differ only by rounding (1e-16); no test, the
    ratio is 0.37, as exactly equal values say."""
    lesions, patients = cohort(5, 3)
    lesions[f"{IDX}_suvmax"] = 0.37 * lesions[f"{REF}_suvmax"]
    lr = stats.summarize(lesions, patients, REF, IDX)["metrics"]["suvmax"]["sets"]["both"]["log_ratio"]
    assert lr["p"] is None and "identical up to rounding" in lr["reason"]
    assert lr["ratio"] == pytest.approx(0.37, rel=1e-12)


def test_real_variation_far_below_the_values_is_still_tested():
    """A spread of 1e-6 relative is measurement, not rounding: it is tested."""
    v = np.log(0.37) + np.array([1e-6, -1e-6, 2e-6, 0.0, -2e-6, 1e-6, 3e-6, -1e-6, 0.0])
    res = T.mixed_model(v, np.repeat(["a", "b", "c"], 3), log_ratio=True, scale=3.0)
    assert res["p"] is not None


# --------------------------------------------------------------------------- estimability


def test_one_lesion_per_patient_leaves_the_variances_null_with_the_reason():
    lesions, patients = cohort(5, 1)
    lr = stats.summarize(lesions, patients, REF, IDX)["metrics"]["suvmax"]["sets"]["both"]["log_ratio"]
    assert lr["p"] is not None  # the mean over patients is still tested (t on 4 df)
    for key in ("random_intercept_variance", "residual_variance", "icc", "at_boundary"):
        assert lr[key] is None and "one lesion per patient" in lr["not_estimable"][key]


# --------------------------------------------------------------------------- one family, no duplicates


def test_lesion_sets_equal_for_a_metric_are_tested_once():
    """MTV is empty where a tracer missed the lesion: for it 'reference' and 'union' hold
    the 'both' lesions; they are reported once, with a note, and tested once."""
    spec = {f"P{i}": [(5.0 + i, 4.0 + i), (3.0 + i, 6.0), (7.0, 2.0 + i)] for i in range(1, 6)}
    ref_det = [1, 1, 0] * 5
    idx_det = [1, 0, 1] * 5
    lesions = lesion_rows(spec, ref_det, idx_det)
    for t, det in ((REF, ref_det), (IDX, idx_det)):
        for m in ("mtv_ml", "tlg"):
            lesions.loc[np.asarray(det) == 0, f"{t}_{m}"] = np.nan
    s = stats.summarize(lesions, patient_table(list(spec)), REF, IDX, adjust="holm")
    for metric in ("mtv_ml", "tlg"):
        sets = s["metrics"][metric]["sets"]
        assert "log_ratio" in sets["both"]
        for name in ("reference", "union"):
            assert sets[name]["same_as"] == "both" and "log_ratio" not in sets[name] and sets[name]["note"]
    suvmax = s["metrics"]["suvmax"]["sets"]
    assert all("same_as" not in suvmax[name] for name in ("both", "reference", "union"))
    labels = [t["label"] for t in s["exploratory"]["tests"]]
    assert len(labels) == len(set(labels))
    assert not [label for label in labels if label.startswith(("mtv_ml, reference", "tlg, union"))]
    # a primary endpoint on a duplicate set is the set it equals
    s = stats.summarize(
        lesions,
        patient_table(list(spec)),
        REF,
        IDX,
        primary={"metric": "mtv_ml", "lesion_set": "union", "analysis": "log_ratio"},
    )
    assert s["primary"]["result"] == s["metrics"]["mtv_ml"]["sets"]["both"]["log_ratio"]


# --------------------------------------------------------------------------- detection tests


def test_integer_sign_flip_equals_the_enumeration():
    """The convolution of the exact null equals enumerating all 2^n sign patterns: the exact
    p is the share of patterns with |S| >= |s| (scipy's two-sided p), the mid-p counts the
    ties |S| = |s| half."""
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 5, 8, 11):
        d = rng.integers(-4, 5, n).astype(float)
        d[d == 0] = 2.0
        null = np.abs([np.dot(s, d) for s in itertools.product((1, -1), repeat=n)])
        s = abs(d.sum())
        res = T.sign_flip(d)
        assert res["p_exact"] == pytest.approx(np.mean(null >= s), rel=EXACT)
        mid = np.mean(null > s) + 0.5 * np.mean(null == s) if s > 0 else 1.0
        assert res["p"] == pytest.approx(mid, rel=EXACT)
        assert res["min_attainable_p_exact"] == pytest.approx(np.mean(null >= null.max()), rel=EXACT)
        assert res["min_attainable_p"] == pytest.approx(0.5 * np.mean(null >= null.max()), rel=EXACT)
        if n >= 2:  # scipy's permutation_test, enumerating, gives the same exact p
            assert res["p_exact"] == pytest.approx(float(T._flip_test(d, exact=True).pvalue), rel=EXACT)


def test_sign_flip_with_many_patients_stays_exact():
    """40 patients: exact by convolution (2^40 patterns), not a random subset."""
    d = np.array([1.0, -1.0, 2.0, 1.0] * 10)
    res = T.sign_flip(d)
    assert "exact" in res["method"] and res["min_attainable_p_exact"] == pytest.approx(2.0**-39, rel=EXACT)
    # the sum 30 of 40 values +-1 or +-2: P(|S| >= 30) by the normal approximation is ~5e-5;
    # the exact tail must be of that order, not 0 and not 1e-5 (100,000 permutations)
    assert 1e-6 < res["p"] < 1e-3


def test_clustered_mcnemar_on_t_and_descriptive_below_ten_patients():
    rng = np.random.default_rng(7)
    ref = (rng.uniform(size=24) < 0.8).astype(float)
    idx = (rng.uniform(size=24) < 0.5).astype(float)
    for n_patients in (6, 12):
        groups = np.repeat([f"P{i}" for i in range(n_patients)], 24 // n_patients)
        res = T.clustered_mcnemar(ref, idx, groups)
        assert res["df"] == n_patients - 1
        assert res["p"] == pytest.approx(2 * ss.t.sf(np.sqrt(res["statistic"]), n_patients - 1), rel=EXACT)
        assert res["p_chi2"] == pytest.approx(ss.chi2.sf(res["statistic"], 1), rel=EXACT)
        assert res["p"] > res["p_chi2"]  # t has heavier tails: the correction is conservative
        assert bool(res.get("descriptive")) is (n_patients < C.CLUSTERED_MCNEMAR_MIN_PATIENTS)


# --------------------------------------------------------------------------- figures agree


def _svg_texts(path):
    return re.findall(r"<text[^>]*>([^<]*)</text>", open(path, encoding="utf-8").read())


@pytest.mark.parametrize("n_patients", [2, 5])
def test_forest_plot_draws_the_summarys_cohort_ratio_and_nothing_else(tmp_path, n_patients):
    """The cohort ratio printed in the forest plot's SVG is the summary's primary geometric
    mean ratio (as the figure prints it: 2 decimals); with fewer than 3 patients the summary gives none and
    the figure draws none."""
    lesions, patients = cohort(n_patients, 3, seed=n_patients)
    s = stats.summarize(lesions, patients, REF, IDX)
    primary = s["primary"]["result"]
    out = figures.write_figures(lesions, patients, REF, IDX, tmp_path)
    svg = next(e["svg"] for e in out if e["name"] == "patient_ratios")
    texts = " ".join(_svg_texts(svg))
    if n_patients < C.MIN_MIXED_PATIENTS:
        assert primary.get("ratio") is None and "fewer than" in primary["reason"]
        assert "no cohort estimate" in texts and primary["reason"] in texts
    else:
        lo, hi = primary["ratio_ci95"]
        printed = f"{primary['ratio']:.2f} [{lo:.2f}, {hi:.2f}]"
        assert printed in texts


def test_an_empty_detection_flag_is_left_out_by_both(tmp_path):
    """One rule for an empty detection flag: the summary's counts and tests and the
    figure's table leave the lesion out, and both say so."""
    lesions, patients = cohort(4, 3)
    lesions[f"{IDX}_detected"] = lesions[f"{IDX}_detected"].astype(float)
    lesions.loc[[0, 5], f"{IDX}_detected"] = np.nan
    lesions.loc[[1, 7], f"{IDX}_detected"] = 0
    s = stats.summarize(lesions, patients, REF, IDX)
    ld = s["lesion_detection"]
    assert ld["flag_missing"] == 2 and ld["n"] == 10 and ld["clustered_mcnemar"]["n"] == 10
    assert ld["reference_only"] == 2 and sum(r["lesions"] for r in ld["by_region"]) == 10
    out = figures.write_figures(lesions, patients, REF, IDX, tmp_path)
    det = next(e for e in out if e["name"] == "detection_by_region")
    table = pd.read_csv(det["tsv"], sep="\t")
    assert int(table.iloc[-1]["lesions"]) == 10 and int(table.iloc[-1][f"{REF}_only"]) == 2
    texts = _svg_texts(det["svg"])
    assert "10" in texts and any("with an empty detection flag" in t for t in texts)
