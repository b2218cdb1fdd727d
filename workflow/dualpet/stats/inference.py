"""The tests: each takes plain arrays and returns a JSON-ready dict.

Every entry carries ``test``, ``n`` and ``p`` (``None`` with a ``reason`` when the test
cannot be computed, never an exception); exact tests also carry ``min_attainable_p``, the
smallest p-value the test can give at its n (with 5 patients an exact test cannot go below
0.0625, and a reader should see that before reading "not significant" as "no effect").
The p-values come from scipy and statsmodels; nothing here re-implements a test they have.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from dualpet.stats import constants as C
from dualpet.stats.mixed import MIXED_METHOD, fit_random_intercept


def as_float(x):
    """Python float, or ``None`` for missing/non-finite values."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def describe(values) -> dict:
    """``n, mean, sd (ddof 1; None below 2), median, q1, q3 (numpy linear), min, max``."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return {k: (0 if k == "n" else None) for k in ("n", "mean", "sd", "median", "q1", "q3", "min", "max")}
    q1, median, q3 = np.percentile(x, [25, 50, 75])
    return {
        "n": n,
        "mean": as_float(np.mean(x)),
        "sd": as_float(np.std(x, ddof=1)) if n > 1 else None,
        "median": as_float(median),
        "q1": as_float(q1),
        "q3": as_float(q3),
        "min": as_float(np.min(x)),
        "max": as_float(np.max(x)),
    }


def zero_differences(index, reference):
    """Paired differences ``index - reference`` with numerically zero ones set to exactly 0.

    A difference counts as zero when it is within C.ZERO_TOLERANCE x the larger of the two
    values (floating-point noise of equal measurements: 1e-13 must not give p < 0.001).
    """
    index = np.asarray(index, dtype=float)
    reference = np.asarray(reference, dtype=float)
    d = index - reference
    scale = np.maximum(np.abs(index), np.abs(reference))
    d[np.abs(d) <= C.ZERO_TOLERANCE * scale] = 0.0
    return d


def _sum(x, axis=-1):
    return np.sum(x, axis=axis)


def _flip_test(values, exact):
    """scipy's paired permutation test (every value's sign flipped) of the sum of
    ``values``: all 2^n sign patterns when ``exact``, else C.PERMUTATIONS random ones."""
    from scipy.stats import permutation_test

    kwargs = {"n_resamples": np.inf} if exact else {"n_resamples": C.PERMUTATIONS, "rng": np.random.default_rng(0)}
    return permutation_test(
        (values,),
        _sum,
        permutation_type="samples",
        alternative="two-sided",
        vectorized=True,
        batch=C.PERMUTATION_BATCH,
        **kwargs,
    )


def _min_p(res):
    """The smallest p-value of a two-sided exact permutation test: the share of its null
    distribution as extreme as its most extreme value."""
    null = np.abs(np.asarray(res.null_distribution))
    return as_float(np.mean(null >= null.max() * (1 - 1e-12)))


def wilcoxon(differences, test=C.WILCOXON_LESION_TEST) -> dict:
    """Two-sided Wilcoxon signed-rank test against 0 (zero differences dropped, Wilcoxon's
    method). ``differences`` should come from :func:`zero_differences`."""
    from scipy.stats import wilcoxon as scipy_wilcoxon

    d = np.asarray(differences, dtype=float)
    d = d[np.isfinite(d)]
    nonzero = d[d != 0]
    out = {
        "test": test,
        "n": int(d.size),
        "n_nonzero": int(nonzero.size),
        "statistic": None,
        "p": None,
        "method": None,
        "min_attainable_p": None,
        "median_difference": as_float(np.median(d)) if d.size else None,
        "mean_difference": as_float(np.mean(d)) if d.size else None,
    }
    if d.size == 0:
        return {**out, "reason": "no paired values"}
    if nonzero.size == 0:
        return {**out, "reason": "all differences are zero"}
    if nonzero.size < C.MIN_WILCOXON_NONZERO:
        return {**out, "reason": f"fewer than {C.MIN_WILCOXON_NONZERO} non-zero differences"}
    from scipy.stats import rankdata

    ties = np.unique(np.abs(nonzero)).size < nonzero.size
    if not ties and nonzero.size <= C.WILCOXON_EXACT_MAX_N:
        res = scipy_wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided", method="exact")
        extreme = scipy_wilcoxon(np.abs(nonzero), zero_method="wilcox", method="exact")  # all signs alike
        out.update(
            statistic=as_float(res.statistic),
            p=as_float(res.pvalue),
            method="exact distribution",
            min_attainable_p=as_float(extreme.pvalue),
        )
    elif nonzero.size <= C.WILCOXON_PERMUTATION_MAX_N:
        # with ties the exact null is that of the signed mid-ranks under sign flips; the
        # sum of signed ranks is a monotone function of scipy's statistic (the smaller rank sum)
        signed = np.sign(nonzero) * rankdata(np.abs(nonzero))
        res = _flip_test(signed, exact=True)
        statistic = min(signed[signed > 0].sum(), -signed[signed < 0].sum())
        out.update(
            statistic=as_float(statistic),
            p=as_float(res.pvalue),
            min_attainable_p=_min_p(res),
            method=f"exact permutation distribution of the mid-ranks (ties; all 2^{nonzero.size} sign patterns)",
        )
    else:
        res = scipy_wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided", method="approx", correction=True)
        out.update(
            statistic=as_float(res.statistic),
            p=as_float(res.pvalue),
            method="normal approximation, tie-corrected variance, continuity correction",
        )
    return out


def mcnemar(reference, index, test=C.MCNEMAR_TEST) -> dict:
    """Exact McNemar test (binomial on the discordant pairs) of paired 0/1 outcomes
    (NaN: pair dropped). The 2x2 table has rows reference +/-, columns index +/-."""
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

    r, i = np.asarray(reference, dtype=float), np.asarray(index, dtype=float)
    ok = np.isfinite(r) & np.isfinite(i)
    r, i = r[ok] == 1, i[ok] == 1
    both, b, c, neither = (int(np.sum(r & i)), int(np.sum(r & ~i)), int(np.sum(~r & i)), int(np.sum(~r & ~i)))
    out = {
        "test": test,
        "n": int(ok.sum()),
        "both": both,
        "reference_only": b,
        "index_only": c,
        "neither": neither,
        "table": [[both, b], [c, neither]],
        "statistic": None,
        "p": None,
        "min_attainable_p": min(1.0, 2.0 * 0.5 ** (b + c)),
    }
    if out["n"] == 0:
        return {**out, "reason": "no pairs with both outcomes known"}
    res = sm_mcnemar(out["table"], exact=True)
    out.update(statistic=as_float(res.statistic), p=as_float(res.pvalue))
    if b + c == 0:
        out["note"] = "no discordant pairs: exact p = 1 (uninformative)"
    return out


def clustered_mcnemar(reference, index, clusters) -> dict:
    """McNemar test for clustered pairs (Obuchowski 1998, Stat Med 17:1495): the difference
    of the two detection proportions over its cluster-robust variance,

        var = I / (I - 1) / N^2 x sum_i (d_i - n_i dbar)^2,   d_i = x_i - y_i,

    with x_i, y_i a patient's lesions detected on each tracer, n_i its lesions, I patients,
    N lesions. Obuchowski refers X^2 = dbar^2 / var to chi^2(1), which is asymptotic in the
    number of patients: at 6-20 patients its type I error was 0.060-0.153 at alpha 0.05
    (``tests/benchmarks/bench_type1.py``). The p here refers sqrt(X^2) to t with I - 1
    degrees of freedom (the small-sample rule of cluster-robust tests): 0.045-0.079 with 6
    patients, 0.049-0.071 with 11, 0.044-0.064 with 20; ``p_chi2`` keeps Obuchowski's.
    Below C.CLUSTERED_MCNEMAR_MIN_PATIENTS patients it is ``descriptive``, outside the
    family of tests (the exact patient sign-flip test, :func:`sign_flip`, leads)."""
    from scipy.stats import chi2
    from scipy.stats import t as t_dist

    r, i = np.asarray(reference, dtype=float), np.asarray(index, dtype=float)
    g = np.asarray(clusters, dtype=object)
    ok = np.isfinite(r) & np.isfinite(i)
    out = {
        "test": C.CLUSTERED_MCNEMAR_TEST,
        "n": int(ok.sum()),
        "n_patients": 0,
        "difference": None,
        "se": None,
        "statistic": None,
        "df": None,
        "p": None,
        "p_chi2": None,
    }
    if not ok.any():
        return {**out, "reason": "no pairs with both outcomes known"}
    frame = pd.DataFrame({"g": g[ok].astype(str), "x": i[ok], "y": r[ok]}).groupby("g")
    x, y, n = frame["x"].sum().to_numpy(), frame["y"].sum().to_numpy(), frame.size().to_numpy(float)
    n_clusters, total = int(n.size), float(n.sum())
    dbar = float((x - y).sum() / total)
    out.update(n_patients=n_clusters, difference=dbar)
    if n_clusters < C.CLUSTERED_MCNEMAR_MIN_PATIENTS:
        out.update(
            descriptive=True,
            note=f"{n_clusters} patients (< {C.CLUSTERED_MCNEMAR_MIN_PATIENTS}): the test does not hold its level "
            "with so few patients; descriptive, read the exact patient sign-flip test",
        )
    if n_clusters < 2:
        return {**out, "reason": "fewer than 2 patients"}
    var = n_clusters / (n_clusters - 1) / total**2 * float((((x - y) - n * dbar) ** 2).sum())
    if var <= 0:
        reason = (
            "no discordant lesions" if np.all(x == y) else "every patient's discordance is the cohort's: variance 0"
        )
        return {**out, "reason": reason}
    stat = dbar**2 / var
    out.update(
        se=math.sqrt(var),
        statistic=stat,
        df=n_clusters - 1,
        p=as_float(2.0 * t_dist.sf(math.sqrt(stat), n_clusters - 1)),
        p_chi2=as_float(chi2.sf(stat, 1)),
    )
    return out


def _integer_sign_flip(values):
    """The exact null distribution of the sum of integer ``values`` under all 2^n sign flips,
    counted by convolving the values' two-point distributions {-|v|, +|v|} (2^n patterns in
    O(n x sum|v|)): ``(p_mid, p_exact, min_mid, min_exact)``, two-sided.

    ``p_exact`` is scipy.stats.permutation_test's two-sided p (twice the smaller tail, at most
    1; for this symmetric null P(|S| >= |s|)); ``p_mid`` counts the patterns whose sum ties
    with the observed one half (Lancaster's mid-p: 2 P(S > |s|) + P(S = |s|), for s != 0)."""
    counts = np.ones(1)
    for v in np.abs(values):
        two_point = np.zeros(2 * v + 1)
        two_point[0] = two_point[-1] = 0.5
        counts = np.convolve(counts, two_point)
    offset = (counts.size - 1) // 2  # the sum s sits at index s + offset
    observed = abs(int(values.sum()))
    upper, tie = float(counts[offset + observed :].sum()), float(counts[offset + observed])
    p_exact = min(1.0, 2.0 * upper)
    p_mid = 1.0 if observed == 0 else min(1.0, 2.0 * upper - tie)
    return p_mid, p_exact, float(counts[-1]), min(1.0, 2.0 * float(counts[-1]))


def sign_flip(per_patient, test=C.SIGN_FLIP_TEST) -> dict:
    """Exact patient-level sign-flip (paired permutation) test that the per-patient values
    (e.g. lesions found on the index tracer minus on the reference) are centred on 0:
    every patient's sign is flipped in all 2^m ways; statistic the sum.

    Integer values (lesion counts) get the exact distribution by convolution and the mid-p
    (``p``; ``p_exact`` the conventional exact p): with counts, many sign patterns tie, and
    the exact p held a type I error of only 0.004-0.042 at alpha 0.05 with 6-20 patients,
    the mid-p 0.027-0.059 (``tests/benchmarks/bench_type1.py``). Other values get
    scipy.stats.permutation_test's exact p (random patterns beyond C.SIGN_FLIP_EXACT_MAX_N)."""
    d = np.asarray(per_patient, dtype=float)
    d = d[np.isfinite(d)]
    nonzero = d[d != 0]
    out = {
        "test": test,
        "n": int(d.size),
        "n_nonzero": int(nonzero.size),
        "statistic": as_float(d.sum()) if d.size else None,
        "p": None,
        "min_attainable_p": None,
    }
    if nonzero.size == 0:
        return {**out, "reason": "no patient differs between the tracers" if d.size else "no patients"}
    if np.all(nonzero == np.round(nonzero)) and np.abs(nonzero).sum() <= C.SIGN_FLIP_MAX_INTEGER_SUM:
        p_mid, p_exact, min_mid, min_exact = _integer_sign_flip(nonzero.astype(np.int64))
        method = (
            f"exact distribution (all 2^{nonzero.size} sign patterns, by convolution), mid-p: patterns tying "
            "with the observed sum count half"
        )
        return {
            **out,
            "p": p_mid,
            "min_attainable_p": min_mid,
            "method": method,
            "p_exact": p_exact,
            "min_attainable_p_exact": min_exact,
        }
    if nonzero.size == 1:  # both signs are as extreme: p = 1 (scipy needs two values)
        return {**out, "p": 1.0, "min_attainable_p": 1.0, "method": "exact (2 sign patterns)"}
    exact = nonzero.size <= C.SIGN_FLIP_EXACT_MAX_N
    res = _flip_test(nonzero, exact)
    out["method"] = (
        f"exact (all 2^{nonzero.size} sign patterns)" if exact else f"{C.PERMUTATIONS} random sign patterns (seed 0)"
    )
    out["p"] = as_float(res.pvalue)
    out["min_attainable_p"] = _min_p(res) if exact else None
    return out


def _rank_correlation(a, b, axis=-1):
    """Pearson correlation of ranks along ``axis`` (Spearman's rho of the original values;
    the ranks travel with their values under the permutation, so the null is exact)."""
    a = a - a.mean(axis=axis, keepdims=True)
    b = b - b.mean(axis=axis, keepdims=True)
    return (a * b).sum(axis=axis) / np.sqrt((a * a).sum(axis=axis) * (b * b).sum(axis=axis))


def spearman(x, y) -> dict:
    """Spearman's rho, pairwise-complete; p exact over all n! pairings for n <=
    C.SPEARMAN_EXACT_MAX_N (scipy.stats.permutation_test), else scipy's t approximation."""
    from scipy.stats import permutation_test, rankdata, spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    out = {
        "test": C.SPEARMAN_TEST,
        "n": int(x.size),
        "rho": None,
        "p": None,
        "p_method": None,
        "p_asymptotic": None,
        "min_attainable_p": None,
    }
    if x.size < C.MIN_SPEARMAN_N:
        return {**out, "reason": f"fewer than {C.MIN_SPEARMAN_N} patients with both values"}
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return {**out, "reason": "constant input: correlation undefined"}
    res = spearmanr(x, y)
    out.update(rho=as_float(res.statistic), p_asymptotic=as_float(res.pvalue))
    if x.size <= C.SPEARMAN_EXACT_MAX_N:
        ry = rankdata(y)  # only x's order is permuted: n! pairings, not (n!)^2
        exact = permutation_test(
            (rankdata(x),),
            lambda rx, axis=-1: _rank_correlation(rx, ry, axis),
            permutation_type="pairings",
            n_resamples=np.inf,
            alternative="two-sided",
            vectorized=True,
            batch=C.PERMUTATION_BATCH,
        )
        out.update(
            p=as_float(exact.pvalue),
            p_method=f"exact permutation (all {x.size}! pairings)",
            min_attainable_p=_min_p(exact),
        )
    else:
        out.update(p=out["p_asymptotic"], p_method="t-distribution approximation (scipy.stats.spearmanr)")
    return out


def mixed_model(values, groups, *, log_ratio=False, scale=1.0) -> dict:
    """The random-intercept model (:mod:`dualpet.stats.mixed`) of per-lesion values
    (differences, or log ratios with ``log_ratio``: then also the geometric mean ratio
    index/reference with its CI). Never raises; ``reason`` says why there is no p.

    ``scale``: the magnitude of the measurements the values derive from (of the two
    tracers' values for differences; of their logarithms, at least 1, for log ratios):
    values whose spread is within C.ZERO_TOLERANCE of it are equal up to rounding and
    not tested (``index = 0.37 x reference`` must not give p = 1e-80). A parameter that
    cannot be estimated is None, with ``not_estimable`` saying why."""
    v = np.asarray(values, dtype=float)
    g = np.asarray(groups, dtype=object)
    ok = np.isfinite(v)
    v, g = v[ok], g[ok]
    n_patients = int(pd.Series(g, dtype=object).nunique()) if v.size else 0
    test = C.MIXED_LOG_TEST if log_ratio else C.MIXED_TEST
    out = {
        "test": test,
        "method": MIXED_METHOD,
        "n": int(v.size),
        "n_lesions": int(v.size),
        "n_patients": n_patients,
        "estimate": None,
        "se": None,
        "df": None,
        "ci95": None,
        "p": None,
        "random_intercept_variance": None,
        "residual_variance": None,
        "at_boundary": None,
    }
    if n_patients < C.MIN_MIXED_PATIENTS:
        return {**out, "reason": f"fewer than {C.MIN_MIXED_PATIENTS} patients with paired lesions"}
    if np.ptp(v) <= C.ZERO_TOLERANCE * max(scale, float(np.max(np.abs(v)))):
        # every lesion the same (up to rounding): the estimate is exact, there is nothing to test
        estimate = float(np.mean(v))
        out.update(estimate=estimate, ratio=math.exp(estimate) if log_ratio else None)
        return {**out, "reason": "all values are identical up to rounding (zero variance): no test"}
    fit = fit_random_intercept(v, g)
    out.update(
        estimate=fit["estimate"],
        se=fit["se"],
        df=fit["df"],
        ci95=fit["ci"],
        p=as_float(fit["p"]),
        t=fit["t"],
        random_intercept_variance=fit["random_intercept_variance"],
        residual_variance=fit["residual_variance"],
        icc=as_float(fit["icc"]),
        at_boundary=fit["at_boundary"],
    )
    if not fit["identifiable"]:
        out["note"] = (
            "one lesion per patient: the between-patient variance is not separable, the estimate "
            "is the mean over patients with its exact t interval"
        )
        out.update(random_intercept_variance=None, residual_variance=None, icc=None, at_boundary=None)
        out["not_estimable"] = dict.fromkeys(
            ("random_intercept_variance", "residual_variance", "icc", "at_boundary"),
            "one lesion per patient: between- and within-patient variance are not separable",
        )
    elif fit["at_boundary"]:
        out["note"] = "between-patient variance at the boundary (0): exact SE of the lesion mean, patient df"
    if log_ratio:
        out["ratio"] = math.exp(fit["estimate"])
        out["ratio_ci95"] = [math.exp(c) for c in fit["ci"]] if all(map(math.isfinite, fit["ci"])) else None
    return out


def holm(pvalues):
    """Holm-adjusted p-values (statsmodels), ``None`` kept in place."""
    from statsmodels.stats.multitest import multipletests

    idx = [k for k, p in enumerate(pvalues) if p is not None]
    out = [None] * len(pvalues)
    if idx:
        adjusted = multipletests([pvalues[k] for k in idx], method="holm")[1]
        for k, p in zip(idx, adjusted):
            out[k] = float(p)
    return out
