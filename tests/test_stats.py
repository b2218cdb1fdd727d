"""Tests for dualpet.stats: every reported statistic against an independent computation.

Tolerances: exact p-values (McNemar, exact Wilcoxon, sign-flip and Spearman permutation
distributions) are ratios of small integers computed in floating point: relative 1e-12
(a few ulps of accumulated rounding). The closed-form REML fit is compared with a dense
brute-force REML and with statsmodels at 1e-6 relative: both sides stop an optimiser
(bounded scalar search, statsmodels' gradient method) at about that precision.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as ss

from dualpet import stats
from dualpet.errors import DualpetInputError
from dualpet.io import read_json
from dualpet.stats import constants as C
from dualpet.stats import inference as T
from dualpet.stats.mixed import fit_random_intercept
from dualpet.stats.report import fmt_p, methods_text

REF, IDX = "fdg", "pentixafor"
EXACT = 1e-12  # see the module docstring
FIT = 1e-6  # see the module docstring


def lesion_rows(spec, ref_detected=None, idx_detected=None):
    """A lesions table from ``{patient: [(ref_suvmax, idx_suvmax), ...]}``; other metrics are
    fixed multiples of SUVmax. Detected on both unless flags are given (in row order)."""
    columns = ["patient", "lesion", "x_mm", "y_mm", "z_mm", "region"] + [
        f"{t}_{m}" for t in (REF, IDX) for m in ("detected",) + stats.METRICS
    ]
    factors = {"suvmax": 1.0, "suvmean": 0.6, "suvpeak": 0.8, "tbr": 0.5, "tbr_mean": 1 / 3, "mtv_ml": 1.5}
    rows = []
    for patient, lesions in spec.items():
        for k, (ref, idx) in enumerate(lesions):
            row = {
                "patient": patient,
                "lesion": f"{patient}-L{k + 1}",
                "x_mm": 0.0,
                "y_mm": 0.0,
                "z_mm": float(k),
                "region": ("bone", "liver")[k % 2],
            }
            for tracer, value in ((REF, ref), (IDX, idx)):
                row[f"{tracer}_detected"] = 1
                for m, f in factors.items():
                    row[f"{tracer}_{m}"] = None if value is None else value * f
                row[f"{tracer}_tlg"] = None if value is None else 0.9 * value**2
            rows.append(row)
    frame = pd.DataFrame(rows, columns=columns)
    if ref_detected is not None:
        frame[f"{REF}_detected"] = ref_detected
    if idx_detected is not None:
        frame[f"{IDX}_detected"] = idx_detected
    return frame


def patient_table(ids, ref_pos=None, idx_pos=None, **clinical):
    n = len(ids)
    data = {
        "patient": list(ids),
        f"{REF}_positive": ref_pos if ref_pos is not None else [1] * n,
        f"{IDX}_positive": idx_pos if idx_pos is not None else [1] * n,
        f"{REF}_lesions": [1] * n,
        f"{IDX}_lesions": [1] * n,
    }
    data.update(clinical)
    return pd.DataFrame(data)


def assert_json_clean(summary):
    """No NaN/inf (allow_nan=False) and no numpy types (default json encoder)."""
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary


@pytest.fixture
def half_cohort():
    """10 lesions in 4 patients; reference SUVmax 2..11, index exactly half of it."""
    groups = {"P1": [2, 3, 4], "P2": [5, 6], "P3": [7, 8, 9], "P4": [10, 11]}
    spec = {p: [(float(v), v / 2.0) for v in values] for p, values in groups.items()}
    patients = patient_table(
        list(groups),
        ki67=[5.0, 10.0, 20.0, 40.0],
        cxcr4_ihc=[0, 1, 2, 3],
        histology=["a", "b", "a", "b"],
        constant=[1.0] * 4,
    )
    return lesion_rows(spec), patients


# --------------------------------------------------------------------------- mixed model


def brute_force_reml(y, groups):
    """Independent REML: dense covariance matrices, deviance by slogdet on a fine grid of
    the variance ratio (0 included), then golden refinement; returns (mu, se, s2u, s2e)."""
    y = np.asarray(y, float)
    labels = sorted(set(groups))
    z = np.array([[g == lab for lab in labels] for g in groups], float)
    x = np.ones((y.size, 1))

    def parts(lam):
        v = np.eye(y.size) + lam * z @ z.T
        vi = np.linalg.inv(v)
        xtvx = x.T @ vi @ x
        beta = np.linalg.solve(xtvx, x.T @ vi @ y)
        r = y - x @ beta
        s2 = float(r @ vi @ r) / (y.size - 1)
        dev = (y.size - 1) * math.log(s2) + np.linalg.slogdet(v)[1] + np.linalg.slogdet(xtvx)[1]
        return dev, float(beta[0]), s2, float(np.linalg.inv(xtvx)[0, 0])

    grid = np.concatenate([[0.0], np.logspace(-5, 5, 401)])
    k = int(np.argmin([parts(g)[0] for g in grid]))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)]
    for _ in range(200):  # golden section on the bracketing interval
        a, b = hi - 0.618 * (hi - lo), lo + 0.618 * (hi - lo)
        if parts(a)[0] < parts(b)[0]:
            hi = b
        else:
            lo = a
    lam = min([grid[k], (lo + hi) / 2], key=lambda g: parts(g)[0])
    _, mu, s2, c = parts(lam)
    return mu, math.sqrt(s2 * c), lam * s2, s2


@pytest.mark.parametrize("seed", range(6))
def test_reml_matches_brute_force_and_statsmodels(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 6, size=rng.integers(4, 9))
    g = np.repeat([f"P{i}" for i in range(sizes.size)], sizes)
    u = rng.normal(0, rng.choice([0.0, 1.5]), sizes.size)  # half the seeds at the boundary
    y = 0.7 + np.repeat(u, sizes) + rng.normal(0, 1, g.size)
    fit = fit_random_intercept(y, g)
    mu, se, s2u, s2e = brute_force_reml(y, list(g))
    assert fit["estimate"] == pytest.approx(mu, rel=FIT, abs=FIT)
    assert fit["se"] == pytest.approx(se, rel=FIT)
    assert fit["residual_variance"] == pytest.approx(s2e, rel=FIT)
    assert fit["random_intercept_variance"] == pytest.approx(s2u, rel=1e-3, abs=1e-6)
    if fit["random_intercept_variance"] > 0.05 * fit["residual_variance"]:  # interior: statsmodels is right there
        import warnings

        from statsmodels.regression.mixed_linear_model import MixedLM

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sm = MixedLM(y, np.ones((y.size, 1)), groups=g).fit(reml=True)
        # estimate and variance components; statsmodels' SE comes from the observed Hessian of
        # all parameters (that is what fails at the boundary), ours and nlme's from (X'V^-1 X)^-1
        assert fit["estimate"] == pytest.approx(float(sm.fe_params[0]), rel=1e-4)
        assert fit["residual_variance"] == pytest.approx(float(sm.scale), rel=1e-3)
        assert fit["random_intercept_variance"] == pytest.approx(float(np.asarray(sm.cov_re)[0, 0]), rel=1e-3)


def test_boundary_standard_error_is_that_of_the_lesion_mean():
    # identical patient means: the between-patient variance is 0, the estimate the plain mean
    d = np.array([1.0, 2.0, 3.0, 2.0, 3.0, 1.0, 3.0, 1.0, 2.0])
    g = ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    res = T.mixed_model(d, g)
    assert res["at_boundary"] and res["random_intercept_variance"] == 0
    se = d.std(ddof=1) / math.sqrt(d.size)
    assert res["estimate"] == pytest.approx(2.0, rel=EXACT) and res["se"] == pytest.approx(se, rel=EXACT)
    assert res["df"] == 2 and "boundary" in res["note"]


def test_small_samples_use_t_with_patient_degrees_of_freedom():
    # 3 patients x 2 lesions: a Wald z-test would be anti-conservative
    d = np.array([1.0, 1.4, 0.6, 1.3, 0.2, 0.9])
    g = ["a", "a", "b", "b", "c", "c"]
    res = T.mixed_model(d, g)
    t = res["estimate"] / res["se"]
    assert res["df"] == 2
    assert res["p"] == pytest.approx(2 * ss.t.sf(abs(t), 2), rel=EXACT)
    assert res["p"] > 2 * ss.norm.sf(abs(t))  # what a z-test would claim
    half = ss.t.ppf(0.975, 2) * res["se"]
    assert res["ci95"] == pytest.approx([res["estimate"] - half, res["estimate"] + half], rel=EXACT)


def test_one_lesion_per_patient_is_the_t_test_of_the_patient_values():
    d = np.array([0.3, -0.1, 0.8, 0.5, 0.2])
    res = T.mixed_model(d, list("abcde"))
    ref = ss.ttest_1samp(d, 0.0)
    assert res["p"] == pytest.approx(ref.pvalue, rel=1e-9) and "one lesion per patient" in res["note"]


def test_log_ratio_model_gives_the_geometric_mean_ratio():
    ref = np.array([10.0, 8.0, 6.0, 12.0, 5.0, 9.0])
    idx = np.array([5.0, 5.0, 2.0, 7.0, 3.0, 3.0])
    g = ["a", "a", "b", "b", "c", "c"]
    res = T.mixed_model(np.log(idx / ref), g, log_ratio=True)
    fit = fit_random_intercept(np.log(idx / ref), g)
    assert res["ratio"] == pytest.approx(math.exp(fit["estimate"]), rel=EXACT)
    assert res["ratio_ci95"] == pytest.approx([math.exp(c) for c in fit["ci"]], rel=EXACT)
    if fit["at_boundary"]:  # then the ratio is the geometric mean of the lesion ratios
        assert res["ratio"] == pytest.approx(ss.gmean(idx / ref), rel=1e-12)


def test_mixed_model_guards():
    assert "fewer than 3" in T.mixed_model([1.0, 2.0, 3.0, 4.0], ["a", "a", "b", "b"])["reason"]
    flat = T.mixed_model([0.5] * 6, list("aabbcc"), log_ratio=True)
    assert flat["p"] is None and "zero variance" in flat["reason"] and flat["ratio"] == pytest.approx(math.exp(0.5))


# --------------------------------------------------------------------------- Wilcoxon


def test_wilcoxon_exact_and_its_smallest_p():
    d = np.array([-1.0, -2.5, -3.0, 4.5, -5.0, -6.5])
    res = T.wilcoxon(d)
    assert res["p"] == pytest.approx(ss.wilcoxon(d, method="exact").pvalue, rel=EXACT)
    assert res["method"] == "exact distribution" and res["min_attainable_p"] == pytest.approx(2 / 2**6, rel=EXACT)


def test_wilcoxon_with_ties_is_the_exact_permutation_distribution():
    d = np.array([0.0, -1.0, -1.0, -2.0, -3.0, 0.5, -2.0])
    res = T.wilcoxon(d)
    assert res["n"] == 7 and res["n_nonzero"] == 6
    nonzero = d[d != 0]
    slow = ss.wilcoxon(nonzero, method=ss.PermutationMethod(n_resamples=np.inf))  # scipy's own permutation path
    assert res["p"] == pytest.approx(slow.pvalue, rel=EXACT)
    assert res["statistic"] == pytest.approx(slow.statistic, rel=EXACT)
    assert res["method"].startswith("exact permutation")


def test_wilcoxon_large_n_with_ties_is_the_corrected_normal_approximation():
    d = np.round(np.random.default_rng(3).normal(0.4, 1, 40), 1)
    res = T.wilcoxon(d)
    nonzero = d[d != 0]
    ref = ss.wilcoxon(nonzero, method="approx", correction=True)
    assert res["p"] == pytest.approx(ref.pvalue, rel=EXACT) and "continuity correction" in res["method"]
    assert res["min_attainable_p"] is None


def test_numerically_zero_differences_are_zero():
    ref = np.array([2.0, 3.0, 5.0, 7.0, 11.0])
    d = T.zero_differences(ref + 1e-13, ref)
    assert np.all(d == 0)
    assert T.wilcoxon(d)["p"] is None and T.wilcoxon(d)["reason"] == "all differences are zero"


# --------------------------------------------------------------------------- detection


def test_patient_mcnemar_b5_c0():
    ids = [f"P{i}" for i in range(10)]
    s = stats.summarize(lesion_rows({}), patient_table(ids, ref_pos=[1] * 10, idx_pos=[1] * 5 + [0] * 5), REF, IDX)
    mc = s["patient_detection"]["mcnemar"]
    assert (mc["reference_only"], mc["index_only"], mc["n"]) == (5, 0, 10)
    assert mc["p"] == pytest.approx(2 / 32, rel=EXACT) and mc["min_attainable_p"] == pytest.approx(2 / 32, rel=EXACT)


def obuchowski(ref, idx, groups):
    """Obuchowski (1998) from the separate variances and covariance of the two proportions."""
    frame = pd.DataFrame({"g": groups, "x": ref, "y": idx}).groupby("g")
    x, y, n = frame["x"].sum().to_numpy(), frame["y"].sum().to_numpy(), frame.size().to_numpy()
    k, total = n.size, n.sum()
    p1, p2 = x.sum() / total, y.sum() / total
    var1 = k / (k - 1) / total**2 * np.sum((x - n * p1) ** 2)
    var2 = k / (k - 1) / total**2 * np.sum((y - n * p2) ** 2)
    cov = k / (k - 1) / total**2 * np.sum((x - n * p1) * (y - n * p2))
    stat = (p1 - p2) ** 2 / (var1 + var2 - 2 * cov)
    return stat, ss.chi2.sf(stat, 1)


def test_lesion_detection_is_cluster_adjusted():
    ref = [1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1]
    idx = [1, 0, 0, 0, 1, 0, 1, 1, 1, 1, 0, 0, 0, 1]
    groups = ["A"] * 4 + ["B"] * 3 + ["C"] * 2 + ["D"] * 5
    spec = {}
    for gname in groups:
        spec.setdefault(gname, []).append((5.0, 3.0))
    table = lesion_rows(spec, ref, idx)
    s = stats.summarize(table, patient_table(sorted(spec)), REF, IDX)
    ld = s["lesion_detection"]
    stat, p = obuchowski(ref, idx, groups)
    assert ld["clustered_mcnemar"]["statistic"] == pytest.approx(stat, rel=1e-12)
    assert ld["clustered_mcnemar"]["p_chi2"] == pytest.approx(p, rel=1e-12)
    # the reported p: sqrt(X^2) on t with 4 - 1 df (Obuchowski's chi-square is liberal at these sizes)
    assert ld["clustered_mcnemar"]["p"] == pytest.approx(2 * ss.t.sf(np.sqrt(stat), 3), rel=1e-12)
    # 4 patients: descriptive, outside the family of tests, the sign-flip test leads
    assert ld["clustered_mcnemar"]["descriptive"] and "sign-flip" in ld["clustered_mcnemar"]["note"]
    assert "lesion detection: clustered McNemar" not in {t["label"] for t in s["exploratory"]["tests"]}
    # sign flip over patients: per-patient (index - reference) = -2, -1, +1, -3
    assert ld["sign_flip"]["statistic"] == -5
    null = [sum(s * v for s, v in zip(signs, (-2, -1, 1, -3))) for signs in itertools.product((1, -1), repeat=4)]
    assert ld["sign_flip"]["p_exact"] == pytest.approx(np.mean(np.abs(null) >= 5), rel=EXACT)
    mid = np.mean(np.abs(null) > 5) + 0.5 * np.mean(np.abs(null) == 5)  # the reported mid-p
    assert ld["sign_flip"]["p"] == pytest.approx(mid, rel=EXACT)
    assert ld["sign_flip"]["min_attainable_p_exact"] == pytest.approx(2 / 16, rel=EXACT)
    assert "clustered" in ld["mcnemar"]["note"]  # the naive test is descriptive
    cross = pd.crosstab(table["region"], [table[f"{REF}_detected"], table[f"{IDX}_detected"]])
    for r in ld["by_region"]:
        row = cross.loc[r["region"]]
        assert (r["both"], r["reference_only"], r["index_only"]) == (
            row.get((1, 1), 0),
            row.get((1, 0), 0),
            row.get((0, 1), 0),
        )
    assert sum(r["lesions"] for r in ld["by_region"]) == 14


# --------------------------------------------------------------------------- lesion sets


def test_each_uptake_comparison_names_its_lesion_set():
    spec = {"A": [(10.0, 4.0), (8.0, 2.0), (6.0, 5.0)], "B": [(9.0, 3.0), (7.0, 6.0)], "C": [(12.0, 5.0), (4.0, 3.0)]}
    ref_det = [1, 1, 0, 1, 1, 1, 0]
    idx_det = [1, 0, 1, 1, 0, 1, 1]
    s = stats.summarize(lesion_rows(spec, ref_det, idx_det), patient_table(list(spec)), REF, IDX)
    sets = s["metrics"]["suvmax"]["sets"]
    assert (sets["both"]["n_lesions"], sets["reference"]["n_lesions"], sets["union"]["n_lesions"]) == (3, 5, 7)
    both = np.array([(10.0, 4.0), (9.0, 3.0), (12.0, 5.0)])
    assert sets["both"]["reference"]["mean"] == pytest.approx(both[:, 0].mean(), rel=EXACT)
    assert sets["both"]["definition"] == C.LESION_SETS["both"]
    per_tracer = s["metrics"]["suvmax"]["per_tracer"]
    assert per_tracer["index"]["detected"]["n"] == 5 and per_tracer["reference"]["detected"]["n"] == 5
    for name, entry in sets.items():
        for analysis in ("log_ratio", "difference", "patient_wilcoxon", "lesion_wilcoxon"):
            assert entry[analysis]["n"] == entry["n_lesions"] or analysis == "patient_wilcoxon", (name, analysis)


def test_primary_endpoint_and_holm(half_cohort):
    lesions, patients = half_cohort
    s = stats.summarize(lesions, patients, REF, IDX, primary={"metric": "tbr", "analysis": "difference"}, adjust="holm")
    assert (s["primary"]["metric"], s["primary"]["lesion_set"], s["primary"]["analysis"]) == (
        "tbr",
        "both",
        "difference",
    )
    assert s["primary"]["result"] is s["primary"]["result"] and "p_holm" not in s["primary"]["result"]
    tests = s["exploratory"]["tests"]
    ps = [t["p"] for t in tests]
    expected = _holm(ps)
    got = [t["p_holm"] for t in tests]
    assert [g is None for g in got] == [e is None for e in expected]
    assert [g for g in got if g is not None] == pytest.approx([e for e in expected if e is not None], rel=1e-12)
    assert "tbr, both: difference" not in [t["label"] for t in tests]
    with pytest.raises(DualpetInputError, match="cannot be the primary"):
        stats.summarize(lesions, patients, REF, IDX, primary={"analysis": "lesion_wilcoxon"})
    with pytest.raises(DualpetInputError, match="lesion_set"):
        stats.summarize(lesions, patients, REF, IDX, primary={"lesion_set": "all"})


def _holm(ps):
    """Holm step-down by hand (None kept)."""
    idx = sorted((p, k) for k, p in enumerate(ps) if p is not None)
    m, out, running = len(idx), [None] * len(ps), 0.0
    for rank, (p, k) in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * p))
        out[k] = running
    return [None if p is None else p for p in out]


# --------------------------------------------------------------------------- correlations


def test_spearman_exact_against_enumeration():
    x = np.array([5.0, 10.0, 20.0, 40.0, 40.0, 7.0])
    y = np.array([1.0, 3.0, 2.0, 6.0, 5.0, 3.0])
    res = T.spearman(x, y)
    rho = ss.spearmanr(x, y).statistic
    rx, ry = ss.rankdata(x), ss.rankdata(y)
    null = [np.corrcoef(rx[list(p)], ry)[0, 1] for p in itertools.permutations(range(6))]
    assert res["rho"] == pytest.approx(rho, rel=EXACT)
    assert res["p"] == pytest.approx(np.mean(np.abs(null) >= abs(rho) - 1e-12), rel=EXACT)


def test_spearman_large_n_uses_scipy_p():
    x = np.arange(12.0)
    y = x**2 + np.array([0, 5, -3, 2, 0, 1, -4, 0, 3, 0, -2, 1.0])
    res, ref = T.spearman(x, y), ss.spearmanr(x, y)
    assert res["p"] == res["p_asymptotic"] == pytest.approx(ref.pvalue, rel=EXACT)


def test_correlations_in_the_summary(half_cohort):
    s = stats.summarize(*half_cohort, REF, IDX)
    by_key = {(e["clinical"], e["tracer"], e["metric"]): e for e in s["correlations"]["entries"]}
    e = by_key[("ki67", REF, "suvmax")]
    assert e["rho"] == pytest.approx(1.0) and e["p"] == pytest.approx(2 / math.factorial(4), rel=EXACT)
    assert by_key[("constant", REF, "suvmax")]["p"] is None
    assert s["clinical_columns"]["non_numeric"] == ["histology"]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda l, p: (l, pd.concat([p, p.iloc[[0]]])), "more than once"),
        (lambda l, p: (l, p[p["patient"] != "P2"]), "not in the patients table"),
        (lambda l, p: (l.assign(**{f"{IDX}_detected": [1, 2] + [1] * (len(l) - 2)}), p), "must be 0 or 1"),
        (lambda l, p: (l.assign(**{f"{IDX}_detected": ["yes"] + [1] * (len(l) - 1)}), p), "must be 0 or 1"),
        (lambda l, p: (l, p.assign(**{f"{REF}_positive": [1, 1, 0.5, 1]})), "must be 0 or 1"),
        (lambda l, p: (l.rename(columns={f"{IDX}_detected": "Pentixafor_detected"}), p), "case-sensitive"),
        (lambda l, p: (l.drop(columns=[f"{REF}_detected"]), p), "no column 'fdg_detected'"),
        (lambda l, p: (l, p.assign(FDG_suvmax=[1, 2, 3, 4])), "another case"),
    ],
)
def test_bad_tables_give_one_clear_error(half_cohort, change, message):
    lesions, patients = change(*half_cohort)
    with pytest.raises(DualpetInputError, match=message):
        stats.summarize(lesions, patients, REF, IDX)


def test_same_tracer_twice_is_an_error(half_cohort):
    with pytest.raises(DualpetInputError, match="both"):
        stats.summarize(*half_cohort, REF, REF)


# --------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("lesions", [lesion_rows({}), pd.DataFrame()])
def test_no_lesions(lesions):
    s = stats.summarize(lesions, patient_table(["P1", "P2", "P3"], cxcr4_ihc=[1, 2, 3]), REF, IDX)
    assert s["n_lesions"] == 0 and s["lesion_detection"]["clustered_mcnemar"]["reason"]
    for entry in s["metrics"].values():
        for subset in entry["sets"].values():
            assert all(subset[a]["p"] is None for a in ("log_ratio", "difference", "patient_wilcoxon"))
    assert_json_clean(s)
    assert "# " in stats.render_markdown(s)


def test_all_differences_zero_and_excluded_patients(half_cohort):
    spec = {p: [(v, v) for v in (2.0, 3.0, 5.0)] for p in ("P1", "P2", "P3", "P4")}
    patients = patient_table(list(spec)).assign(
        status=["included"] * 3 + ["excluded"], excluded_reason=["", "", "", "motion"]
    )
    s = stats.summarize(lesion_rows(spec), patients, REF, IDX)
    assert (
        s["n_patients"] == 3
        and s["n_lesions"] == 9
        and s["excluded_patients"] == [{"patient": "P4", "reason": "motion"}]
    )
    both = s["metrics"]["suvmax"]["sets"]["both"]
    assert both["lesion_wilcoxon"]["reason"] == "all differences are zero"
    assert both["log_ratio"]["ratio"] == 1.0 and both["log_ratio"]["p"] is None
    assert_json_clean(s)


# --------------------------------------------------------------------------- report and run


def test_format_p():
    assert (fmt_p(0.0004), fmt_p(0.001), fmt_p(0.25), fmt_p(None)) == ("<0.001", "0.001", "0.250", "n/a")


def test_methods_text_comes_from_the_constants(half_cohort, monkeypatch):
    s = stats.summarize(*half_cohort, REF, IDX)
    text = methods_text(s)
    assert f"n = {C.WILCOXON_EXACT_MAX_N}" in text and f"{C.MIN_MIXED_PATIENTS} patients" in text
    monkeypatch.setattr(C, "WILCOXON_EXACT_MAX_N", 37)
    assert "n = 37" in methods_text(s)


def test_render_markdown(half_cohort):
    s = stats.summarize(*half_cohort, REF, IDX)
    md = stats.render_markdown(s)
    assert "4 patients, 10 lesions" in md
    for heading in (
        "## Primary endpoint",
        "## Patient-level detection",
        "## Lesion-level detection",
        "### suvmax",
        "Paired, by lesion set",
        "## Correlations",
        "## Methods",
        "Obuchowski",
        "sign-flip",
    ):
        assert heading in md, heading
    assert "geometric mean ratio" in md and "**0.50**" in md  # index is exactly half the reference
    assert stats.render_markdown(json.loads(json.dumps(s))) == md
    # the config's tracer_names name the tracers in the report; the JSON keeps the sheet's names
    named = stats.summarize(*half_cohort, REF, IDX, names={REF: "[18F]FDG", IDX: "[68Ga]Pentixafor"})
    assert named["tracers"] == {"reference": REF, "index": IDX}
    text = stats.render_markdown(named)
    assert text.startswith("# Dual-tracer PET/CT cohort statistics: [68Ga]Pentixafor vs [18F]FDG")
    assert "[18F]FDG (reference)" in text and "Detected on [68Ga]Pentixafor (index)" in text


def test_run_writes_json_and_markdown(tmp_path, half_cohort):
    lesions, patients = half_cohort
    lesions = lesions.assign(patient=lesions["patient"].str.replace("P", "00"))
    patients = patients.assign(patient=patients["patient"].str.replace("P", "00"))
    lesions.loc[0, f"{IDX}_suvpeak"] = None
    lpath, ppath = tmp_path / "lesions.tsv", tmp_path / "patients.tsv"
    lesions.to_csv(lpath, sep="\t", index=False, na_rep="")
    patients.to_csv(ppath, sep="\t", index=False, na_rep="")
    out_json, out_md = tmp_path / "out" / "stats.json", tmp_path / "out" / "stats.md"
    summary = stats.run(lpath, ppath, REF, IDX, out_json, out_md)
    assert read_json(out_json) == summary and out_md.read_text() == stats.render_markdown(summary)
    assert summary["metrics"]["suvpeak"]["sets"]["both"]["n_lesions"] == 9
    assert summary["metrics"]["suvmax"]["sets"]["both"]["lesion_wilcoxon"]["p"] == pytest.approx(2 / 2**10, rel=EXACT)
    assert all(e["n"] == 4 for e in summary["correlations"]["entries"] if e["clinical"] == "ki67")  # leading zeros kept
    assert_json_clean(summary)


def test_quality_control_lists_exclusions_and_flagged_registrations():
    lesions = pd.DataFrame(
        {
            "patient": ["A", "A", "B", "C"],
            "lesion": ["L1", "L2", "L1", "L1"],
            "fdg_detected": [1, 1, 1, 1],
            "pentixafor_detected": [0, 1, 1, 0],
            "fdg_suvmax": [10.0, 8.0, 6.0, 5.0],
            "pentixafor_suvmax": [3.0, 4.0, 5.0, 2.0],
        }
    )
    patients = pd.DataFrame(
        {
            "patient": ["A", "B", "C"],
            "status": ["included", "included", "excluded"],
            "excluded_reason": ["", "", "patient C, pentixafor: attribute Units (0054,1001): Units 'CPS'"],
            "fdg_positive": [1, 1, 1],
            "pentixafor_positive": [1, 1, 0],
            "registration_ok": [1, 0, 1],
            "registration_body_dice": [0.99, 0.7, 0.98],
            "registration_warnings": ["", "body-mask Dice after registration is 0.700 (< 0.9)", ""],
            "pentixafor_pet_ct_registered": [1, 0, 0],
        }
    )
    summary = stats.summarize(lesions, patients, "fdg", "pentixafor")
    assert summary["n_patients"] == 2 and summary["n_lesions"] == 3
    assert summary["registration_flagged"] == [
        {"patient": "B", "warnings": "body-mask Dice after registration is 0.700 (< 0.9)"}
    ]
    assert all(
        c["clinical"] not in ("registration_ok", "registration_body_dice") for c in summary["correlations"]["entries"]
    )
    md = stats.render_markdown(summary)
    assert "C excluded" in md and "B: registration flagged" in md and "A, pentixafor: PET registered onto its CT" in md


def test_quality_control_lists_each_studys_background_and_the_organs_dropped():
    """Issue 22, item 5: per study, where the background was measured with its SUVmean and
    the reason for a fallback; organs the organ map dropped as implausible (a kidney that
    failed its checks), not organs with nothing in view (a brain outside a torso scan)."""
    from dualpet.interchange import dropped_organs

    record = {
        "organs": {
            "brain": {"found": False, "volume_ml": 0.0, "checks": {"volume 0 mL within 700-2000 mL": False}},
            "kidney_left": {
                "found": False,
                "volume_ml": 412.0,
                "checks": {"volume 412 mL within 80-300 mL": False, "centre beside the vertebral bodies": True},
            },
            "liver": {"found": True, "volume_ml": 1500.0, "checks": {"volume 1500 mL within 800-3000 mL": True}},
        }
    }
    dropped = dropped_organs(record)
    assert dropped == "kidney_left (volume 412 mL within 80-300 mL)"
    fallback = "blood pool not found (no aorta in the organ map); the liver was used"
    from dualpet.interchange import series_note

    choice = {
        "pet": {
            "series": "series 1 'PET SUV'",
            "chosen_because": "the only PET series ... (no ORIGINAL PT series "
            "qualifies; ImageType DERIVED/SECONDARY ...)",
        },
        "ct": {"series": "series 2 'CT'", "chosen_because": "the only axial CT sharing the PET's frame of reference"},
    }
    note = series_note(choice)
    assert note.startswith("PET series 1 'PET SUV': the only PET series") and "CT series 2" not in note
    lesions = pd.DataFrame(
        {
            "patient": ["A", "B"],
            "lesion": ["L1", "L1"],
            "fdg_detected": [1, 1],
            "pentixafor_detected": [1, 1],
            "fdg_suvmax": [10.0, 6.0],
            "pentixafor_suvmax": [3.0, 5.0],
        }
    )
    patients = pd.DataFrame(
        {
            "patient": ["A", "B"],
            "fdg_positive": [1, 1],
            "pentixafor_positive": [1, 1],
            "fdg_background_source": ["bloodpool:anatomy (descending aorta)", "liver:anatomy (right lobe)"],
            "fdg_background_suvmean": [1.61, 2.04],
            "fdg_background_fallback": ["", fallback],
            "fdg_organs_dropped": ["", dropped],
            "pentixafor_background_source": [
                "bloodpool:anatomy (descending aorta)",
                "bloodpool:anatomy (abdominal aorta)",
            ],
            "pentixafor_background_suvmean": [1.12, 1.3],
            "pentixafor_background_fallback": ["", ""],
            "pentixafor_organs_dropped": ["", ""],
            "fdg_series_note": ["", note],
            "fdg_ct_uncovered_mm": [0.4, 18.2],
        }
    )
    summary = stats.summarize(lesions, patients, "fdg", "pentixafor")
    assert [(b["patient"], b["tracer"], b["suvmean"]) for b in summary["backgrounds"]] == [
        ("A", "fdg", 1.61),
        ("A", "pentixafor", 1.12),
        ("B", "fdg", 2.04),
        ("B", "pentixafor", 1.3),
    ]
    assert summary["backgrounds"][2]["fallback"] == fallback
    md = stats.render_markdown(summary)
    qc = md.split("## Quality control", 1)[1].split("\n## ", 1)[0]
    assert "| B | fdg | 2.04 | liver:anatomy (right lobe) | " + fallback + " |" in qc
    assert "| A | pentixafor | 1.12 | bloodpool:anatomy (descending aorta) |  |" in qc
    assert "B, fdg: organ map dropped" in qc and "kidney_left (volume 412 mL" in qc and "brain" not in qc
    assert "B, fdg: series choice**: PET series 1 'PET SUV'" in qc and "A, fdg: series choice" not in qc
    assert "B, fdg: the CT leaves 18 mm of the PET uncovered" in qc and "A, fdg: the CT" not in qc  # 0.4 mm: rounding
    assert "nan" not in qc and "None" not in qc


def test_config_schema_offers_what_the_statistics_know():
    from pathlib import Path

    import yaml

    schema = yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml").read_text()
    )
    props = schema["properties"]["statistics"]["properties"]
    primary = props["primary"]["properties"]
    assert tuple(primary["metric"]["enum"]) == C.METRICS
    assert tuple(primary["lesion_set"]["enum"]) == tuple(C.LESION_SETS)
    assert set(primary["analysis"]["enum"]) == set(C.ANALYSES) - {"lesion_wilcoxon"}
    assert set(props["adjust"]["enum"]) == set(C.ADJUSTMENTS)
    assert {k: primary[k]["default"] for k in C.DEFAULT_PRIMARY} == C.DEFAULT_PRIMARY


@pytest.mark.parametrize(
    "text, message",
    [
        ("patient\tki67\nP1\t3\nP1\t4\n", "more than once"),
        ("patient\tFDG_suvmax\nP1\t3\n", "another case"),
        ("id\tki67\nP1\t3\n", "no 'patient' column"),
    ],
)
def test_cohort_refuses_a_bad_clinical_sheet(tmp_path, text, message):
    from dualpet.cohort import read_clinical

    path = tmp_path / "clinical.tsv"
    path.write_text(text)
    with pytest.raises(DualpetInputError, match=message):
        read_clinical(path, (REF, IDX), {"P1"})


def test_cohort_leaves_out_clinical_rows_of_unknown_patients(tmp_path, capsys):
    from dualpet.cohort import read_clinical

    path = tmp_path / "clinical.tsv"
    path.write_text("patient\tki67\nP1\t3\nP9\t4\n")
    assert read_clinical(path, (REF, IDX), {"P1"})["patient"].tolist() == ["P1"]
    assert "P9" in capsys.readouterr().err


def test_data_in_the_html_report_is_text_never_markup(half_cohort):
    """Issue 23 (campaign): a clinical column name and an excluded study's SeriesDescription
    reached summary.html as markup. Every piece of data is shown as text: raw HTML, links
    and images written in cells stay characters."""
    from dualpet.sheets import safe_json
    from dualpet.stats.report import render_html

    lesions, patients = half_cohort
    patients = patients.copy()
    patients["<img src=x onerror=alert(1)>"] = range(len(patients))
    patients.loc[0, "status"] = "excluded"
    patients.loc[0, "excluded_reason"] = (
        "no usable PET series (found: series 3 '<script>alert(1)</script>' [x](javascript:alert(2)))"
    )
    summary = stats.summarize(lesions, patients, REF, IDX)
    markdown = stats.render_markdown(summary)
    assert "<img src=x onerror=alert(1)>" in markdown and "<script>" in markdown  # the data is there
    page = render_html(markdown, "t")
    body = page[page.index("<body>") :]
    assert "&lt;img src=x onerror=alert(1)&gt;" in body
    assert "<img" not in body and "<script" not in body and "href=" not in body and "javascript:alert(2)" in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    # the reader's notes reach Snakemake's report only as JSON with <, > and & escaped
    note = [{"note": "</script><img src=x onerror=alert(1)> & co"}]
    assert json.loads(safe_json(note)) == note and not set("<>&") & set(safe_json(note))


def test_a_cohort_whose_every_patient_is_excluded_still_gets_its_summary():
    """All patients refused at inspection: patients.tsv has no tracer columns. The summary
    is written (no patients, every exclusion listed), not an error that stops the run."""
    patients = pd.DataFrame(
        {
            "patient": ["P1", "P2"],
            "status": ["excluded", "excluded"],
            "excluded_reason": ["patient P1, fdg: header check failed: Units CPS", "patient P2, fdg: x"],
        }
    )
    lesions = pd.DataFrame(columns=["patient", "lesion"])
    summary = stats.summarize(lesions, patients, REF, IDX)
    assert summary["n_patients"] == 0 and [e["patient"] for e in summary["excluded_patients"]] == ["P1", "P2"]
    assert "P1 excluded" in stats.render_markdown(summary)
