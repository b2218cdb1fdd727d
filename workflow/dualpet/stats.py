"""Cohort statistics for a dual-tracer PET/CT study (index tracer vs reference tracer).

The module reads the cohort tables written upstream (``lesions.tsv``: one row per
lesion of the union of both tracers' lesions; ``patients.tsv``: one row per
patient) and produces a JSON-serialisable summary plus a Markdown report:

* patient- and lesion-level detection with exact McNemar tests,
* per-metric descriptive statistics per tracer (all lesions with a value, and
  lesions detected on that tracer),
* paired comparisons of uptake metrics (difference = index - reference):
  per-lesion Wilcoxon signed-rank (descriptive, because lesions are clustered
  within patients), Wilcoxon signed-rank on per-patient mean differences and a
  linear mixed model with a random intercept per patient,
* Spearman correlations of numeric clinical columns with per-patient uptake.

Statistical edge cases (no lesions, a single patient, all-zero differences,
constant inputs, missing values, non-converging models) never raise: the test
entry then carries ``"p": None`` and a ``"reason"``. The summary never contains
NaN or infinity (they become ``None``) nor numpy scalar types.

Public API: :func:`summarize`, :func:`render_markdown`, :func:`run`.
"""

from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from dualpet.errors import DualpetInputError
from dualpet.interchange import LESION_METRICS
from dualpet.io import write_json, write_text

__all__ = ["METRICS", "CORRELATION_METRICS", "summarize", "render_markdown", "run"]

#: Uptake metrics analysed, in report order; ``{tracer}_{metric}`` columns of lesions.tsv.
METRICS = LESION_METRICS  # the per-tracer lesion columns (dualpet.interchange)

#: Metrics correlated with clinical columns and how lesions are aggregated per patient.
CORRELATION_METRICS = {"suvmax": "max", "suvmean": "mean", "tbr": "max"}

#: patients.tsv columns that are neither tracer-specific nor clinical.
NON_CLINICAL_COLUMNS = (
    "patient",
    "status",
    "excluded_reason",
    "registration_ok",
    "registration_body_dice",
    "registration_warnings",
)

#: Status values (case-insensitive) that remove a patient from the analysis.
EXCLUDED_STATUS = frozenset({"excluded", "exclude"})

#: Text cells treated as missing when deciding whether a clinical column is numeric.
_NA_TOKENS = frozenset({"", "na", "nan", "n/a", "none", "null", "-"})

#: Up to this many pairs, Spearman p-values come from exact enumeration of all n! pairings.
SPEARMAN_EXACT_MAX_N = 8

#: Minimum numbers for a test to be attempted.
MIN_WILCOXON_NONZERO = 2
MIN_MIXED_PATIENTS = 3
MIN_SPEARMAN_N = 3

#: MixedLM optimisers tried in turn until one converges with a finite standard error:
#: statsmodels' default gradient-based chain first, then derivative-free methods, which
#: cope better when the random-intercept variance lies on the boundary (0).
MIXED_OPTIMIZERS = ("default", "powell", "nm")

WILCOXON_LESION_TEST = "Wilcoxon signed-rank test (two-sided), paired per lesion"
WILCOXON_PATIENT_TEST = "Wilcoxon signed-rank test (two-sided) on per-patient mean differences"
MIXED_TEST = "Linear mixed model (REML): difference ~ 1 + random intercept per patient; Wald z-test"
MCNEMAR_TEST = "McNemar exact test (two-sided binomial on discordant pairs)"
SPEARMAN_TEST = "Spearman rank correlation"

DIFFERENCE_DEFINITION = "index - reference"
LESION_CLUSTER_NOTE = (
    "Lesions are clustered within patients (not independent); this per-lesion "
    "p-value is descriptive. See the patient-clustered analyses."
)


# --------------------------------------------------------------------------- helpers


def _clean(obj):
    """Return ``obj`` with numpy types converted and NaN/inf replaced by ``None``.

    Parameters
    ----------
    obj : object
        Nested dict/list/tuple of scalars, numpy scalars or arrays.

    Returns
    -------
    object
        A structure accepted by ``json.dumps(..., allow_nan=False)``.
    """
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_clean(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if obj is pd.NA or obj is pd.NaT:
        return None
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _num(series) -> np.ndarray:
    """Convert a column to a float array; unparsable cells and +/-inf become NaN."""
    values = np.array(
        pd.to_numeric(pd.Series(series), errors="coerce").to_numpy(dtype=float, na_value=np.nan), dtype=float
    )
    values[~np.isfinite(values)] = np.nan
    return values


def _flag(series) -> np.ndarray:
    """Convert a 0/1 column to floats 1.0/0.0; anything else (incl. missing) is NaN."""
    values = _num(series)
    out = np.full(values.shape, np.nan)
    out[values == 1] = 1.0
    out[values == 0] = 0.0
    return out


def _float(x):
    """Python float, or ``None`` for missing/non-finite values."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _describe(values) -> dict:
    """Descriptive statistics of the finite entries of ``values``.

    Parameters
    ----------
    values : array_like
        Values; NaN entries are ignored.

    Returns
    -------
    dict
        ``n, mean, sd, median, q1, q3, min, max``. ``sd`` uses ``ddof=1`` and is
        ``None`` when ``n < 2``; all statistics are ``None`` when ``n == 0``.
        Quartiles use linear interpolation (numpy's default, Hyndman-Fan type 7).
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return {k: (0 if k == "n" else None) for k in ("n", "mean", "sd", "median", "q1", "q3", "min", "max")}
    q1, median, q3 = np.percentile(x, [25, 50, 75])
    return {
        "n": n,
        "mean": _float(np.mean(x)),
        "sd": _float(np.std(x, ddof=1)) if n > 1 else None,
        "median": _float(median),
        "q1": _float(q1),
        "q3": _float(q3),
        "min": _float(np.min(x)),
        "max": _float(np.max(x)),
    }


def _wilcoxon_method(nonzero: np.ndarray) -> str:
    """Name the p-value method scipy's ``method='auto'`` uses for these differences."""
    n = nonzero.size
    ties = np.unique(np.abs(nonzero)).size < n
    if n <= 50 and not ties:
        return "exact"
    if n <= 13:
        return "exact permutation (ties present)"
    return "normal approximation (tie- and continuity-corrected)"


def _wilcoxon(differences, test: str) -> dict:
    """Two-sided Wilcoxon signed-rank test of paired differences against zero.

    Parameters
    ----------
    differences : array_like
        Paired differences (index - reference); NaN entries are ignored.
    test : str
        Test name recorded in the result.

    Returns
    -------
    dict
        ``test, n, n_nonzero, statistic, p, method, median_difference,
        mean_difference`` and, when no test is possible, ``reason``. Zero
        differences are discarded before ranking (Wilcoxon's method); ``n`` counts
        all pairs, ``n_nonzero`` those entering the test. ``statistic`` is scipy's
        (the smaller of the positive- and negative-rank sums).
    """
    from scipy.stats import wilcoxon

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
        "median_difference": _float(np.median(d)) if d.size else None,
        "mean_difference": _float(np.mean(d)) if d.size else None,
    }
    if d.size == 0:
        out["reason"] = "no paired values"
        return out
    if nonzero.size == 0:
        out["reason"] = "all differences are zero"
        return out
    if nonzero.size < MIN_WILCOXON_NONZERO:
        out["reason"] = f"fewer than {MIN_WILCOXON_NONZERO} non-zero differences"
        return out
    try:
        res = wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided", method="auto")
    except (ValueError, FloatingPointError) as exc:  # e.g. degenerate input on other scipy versions
        out["reason"] = f"scipy.stats.wilcoxon failed: {exc}"
        return out
    out["statistic"] = _float(res.statistic)
    out["p"] = _float(res.pvalue)
    out["method"] = _wilcoxon_method(nonzero)
    if out["p"] is None:
        out["reason"] = "scipy.stats.wilcoxon returned no p-value"
    return out


def _mcnemar(reference, index) -> dict:
    """Exact McNemar test on paired binary outcomes.

    Parameters
    ----------
    reference, index : array_like
        1.0 (positive), 0.0 (negative) or NaN (missing, pair dropped).

    Returns
    -------
    dict
        ``test, n, both, reference_only (= b), index_only (= c), neither, b, c,
        statistic (= min(b, c)), p`` and ``reason`` or ``note`` where relevant.
        The 2x2 table has rows reference +/-, columns index +/-.
    """
    from statsmodels.stats.contingency_tables import mcnemar

    r = np.asarray(reference, dtype=float)
    i = np.asarray(index, dtype=float)
    ok = np.isfinite(r) & np.isfinite(i)
    r, i = r[ok] == 1, i[ok] == 1
    both = int(np.sum(r & i))
    b = int(np.sum(r & ~i))
    c = int(np.sum(~r & i))
    neither = int(np.sum(~r & ~i))
    out = {
        "test": MCNEMAR_TEST,
        "n": int(ok.sum()),
        "both": both,
        "reference_only": b,
        "index_only": c,
        "neither": neither,
        "b": b,
        "c": c,
        "table": [[both, b], [c, neither]],
        "statistic": None,
        "p": None,
    }
    if out["n"] == 0:
        out["reason"] = "no pairs with both outcomes known"
        return out
    try:
        res = mcnemar(out["table"], exact=True)
    except Exception as exc:  # noqa: BLE001 - never crash on a degenerate table
        out["reason"] = f"McNemar test failed: {exc}"
        return out
    out["statistic"] = _float(res.statistic)
    out["p"] = _float(res.pvalue)
    if b + c == 0:
        out["note"] = "no discordant pairs: exact p = 1 (uninformative)"
    return out


def _mixed_model(differences, groups) -> dict:
    """Random-intercept linear mixed model of paired differences.

    Fits ``difference ~ 1`` with a random intercept per patient by REML
    (``statsmodels`` ``MixedLM``). The fixed intercept is the cohort-level mean
    difference (index - reference) accounting for clustering of lesions within
    patients.

    Parameters
    ----------
    differences : array_like
        Per-lesion differences; NaN entries are dropped.
    groups : array_like
        Patient identifier per lesion (same length as ``differences``).

    Returns
    -------
    dict
        ``test, n (= n_lesions), n_lesions, n_patients, estimate, se, ci95, p,
        random_intercept_variance, residual_variance, converged, optimizer,
        warnings``; when
        the model cannot be fitted (fewer than 3 patients, no patient with two
        lesions, zero variance, fit error, non-convergence or a singular fit)
        ``p`` is ``None`` and ``reason`` explains why. Warnings raised during
        fitting (e.g. ``ConvergenceWarning``) are caught and listed; optimisers in
        :data:`MIXED_OPTIMIZERS` are tried in turn until one converges.
    """
    from statsmodels.regression.mixed_linear_model import MixedLM

    d = np.asarray(differences, dtype=float)
    g = np.asarray(groups, dtype=object)
    ok = np.isfinite(d)
    d, g = d[ok], g[ok]
    sizes = pd.Series(g, dtype=object).value_counts() if d.size else pd.Series(dtype=int)
    out = {
        "test": MIXED_TEST,
        "n": int(d.size),
        "n_lesions": int(d.size),
        "n_patients": int(sizes.size),
        "estimate": None,
        "se": None,
        "ci95": None,
        "p": None,
        "random_intercept_variance": None,
        "residual_variance": None,
        "converged": None,
        "optimizer": None,
        "warnings": [],
    }
    if sizes.size < MIN_MIXED_PATIENTS:
        out["reason"] = f"fewer than {MIN_MIXED_PATIENTS} patients with paired lesions"
        return out
    if int(sizes.max()) < 2:
        out["reason"] = (
            "no patient has more than one paired lesion: the random intercept is not "
            "separable from the residual (use the per-patient Wilcoxon test)"
        )
        return out
    if np.ptp(d) == 0:
        out["reason"] = "all differences are identical (zero variance): model is singular"
        return out

    messages, failures = [], []
    fit = None
    for optimizer in MIXED_OPTIMIZERS:
        kwargs = {} if optimizer == "default" else {"method": optimizer}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with np.errstate(all="ignore"):
                    model = MixedLM(d, np.ones((d.size, 1)), groups=g)
                    candidate = model.fit(reml=True, **kwargs)
            except Exception as exc:  # noqa: BLE001 - LinAlgError, ValueError, ... must not crash
                candidate = None
                failures.append(f"{optimizer}: {type(exc).__name__}: {exc}")
        for w in caught:
            text = f"{w.category.__name__}: {w.message}"
            if text not in messages:
                messages.append(text)
        if candidate is None:
            continue
        fit = candidate
        if bool(getattr(candidate, "converged", True)) and _float(np.asarray(candidate.bse_fe)[0]):
            out["optimizer"] = optimizer
            break
        failures.append(f"{optimizer}: did not converge or singular")
    out["warnings"] = messages
    if failures:
        out["failed_attempts"] = failures
    if fit is None:
        out["reason"] = "model fit failed: " + " | ".join(failures)
        return out

    estimate = _float(np.asarray(fit.fe_params)[0])
    se = _float(np.asarray(fit.bse_fe)[0])
    p = _float(np.asarray(fit.pvalues)[0])
    ci = np.asarray(fit.conf_int())[0]
    out["converged"] = bool(getattr(fit, "converged", True))
    out["random_intercept_variance"] = _float(np.asarray(fit.cov_re)[0, 0])
    out["residual_variance"] = _float(fit.scale)
    out["estimate"] = estimate
    out["se"] = se
    if not out["converged"]:
        out["reason"] = (
            "optimisation did not converge (optimisers tried: " + ", ".join(MIXED_OPTIMIZERS) + ")"
        )
        return out
    if estimate is None or se is None or se <= 0 or p is None:
        out["reason"] = "singular fit: standard error of the intercept not estimable"
        return out
    out["ci95"] = [_float(ci[0]), _float(ci[1])]
    out["p"] = p
    rv, sv = out["random_intercept_variance"], out["residual_variance"]
    if rv is not None and sv is not None and rv <= 1e-6 * sv:
        out["note"] = "random-intercept variance estimated at the boundary (~0)"
    return out


def _spearman_exact_p(x: np.ndarray, y: np.ndarray, rho: float) -> float:
    """Two-sided exact permutation p-value of Spearman's rho (all n! pairings)."""
    from scipy.stats import rankdata

    rx = rankdata(x)
    ry = rankdata(y)
    rx = (rx - rx.mean()) / np.sqrt(np.sum((rx - rx.mean()) ** 2))
    ry = (ry - ry.mean()) / np.sqrt(np.sum((ry - ry.mean()) ** 2))
    perms = np.array(list(itertools.permutations(range(x.size))))
    null = ry[perms] @ rx
    # Small relative tolerance so that ties with the observed |rho| (equal up to
    # rounding) are counted as "at least as extreme".
    return float(np.mean(np.abs(null) >= abs(rho) - 1e-12))


def _spearman(x, y) -> dict:
    """Spearman correlation with missing values dropped pairwise.

    Parameters
    ----------
    x, y : array_like
        Numeric values (NaN = missing).

    Returns
    -------
    dict
        ``test, n, rho, p, p_method, p_asymptotic`` and ``reason`` when skipped.
        ``rho`` and ``p_asymptotic`` come from :func:`scipy.stats.spearmanr`
        (t-distribution approximation). For ``n <= SPEARMAN_EXACT_MAX_N`` the
        reported ``p`` is the exact permutation p-value, because the
        t-approximation is anti-conservative for very small samples (it gives
        p ~ 0 whenever rho = +/-1); otherwise ``p`` equals ``p_asymptotic``.
    """
    from scipy.stats import spearmanr

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    out = {
        "test": SPEARMAN_TEST,
        "n": int(x.size),
        "rho": None,
        "p": None,
        "p_method": None,
        "p_asymptotic": None,
    }
    if x.size < MIN_SPEARMAN_N:
        out["reason"] = f"fewer than {MIN_SPEARMAN_N} patients with both values"
        return out
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        out["reason"] = "constant input: correlation undefined"
        return out
    res = spearmanr(x, y)
    rho = _float(res.statistic)
    out["rho"] = rho
    out["p_asymptotic"] = _float(res.pvalue)
    if rho is None:
        out["reason"] = "correlation undefined"
        return out
    if x.size <= SPEARMAN_EXACT_MAX_N:
        out["p"] = _spearman_exact_p(x, y, rho)
        out["p_method"] = "exact permutation (all n! pairings)"
    else:
        out["p"] = out["p_asymptotic"]
        out["p_method"] = "t-distribution approximation (scipy.stats.spearmanr)"
    return out


def _patient_ids(frame: pd.DataFrame, name: str) -> pd.Series:
    """Patient identifiers of ``frame`` as strings; raise on missing identifiers."""
    if "patient" not in frame.columns:
        if len(frame) == 0:
            return pd.Series([], dtype=object, index=frame.index)
        raise DualpetInputError(f"{name}: required column 'patient' is missing")
    ids = frame["patient"]
    if ids.isna().any():
        rows = [int(i) for i in np.flatnonzero(ids.isna().to_numpy())[:5]]
        raise DualpetInputError(f"{name}: empty 'patient' cell in data row(s) {rows} (0-based)")
    return ids.astype(str).str.strip().astype(object)


def _excluded(patients: pd.DataFrame) -> pd.Series:
    """Boolean mask of patients excluded by ``status`` or a non-empty ``excluded_reason``."""
    mask = pd.Series(False, index=patients.index)
    if "status" in patients.columns:
        status = patients["status"].astype(object).where(patients["status"].notna(), "")
        mask |= status.astype(str).str.strip().str.lower().isin(EXCLUDED_STATUS)
    if "excluded_reason" in patients.columns:
        reason = patients["excluded_reason"].astype(object).where(patients["excluded_reason"].notna(), "")
        mask |= reason.astype(str).str.strip() != ""
    return mask


def _clinical_columns(patients: pd.DataFrame, reference: str, index: str):
    """Split clinical columns into numeric (with parsed values) and non-numeric names.

    A column is numeric if its dtype is numeric/boolean, or if every non-missing
    cell parses as a number (missing tokens such as ``NA`` are ignored).
    """
    numeric, other = {}, []
    prefixes = (f"{reference}_", f"{index}_")
    for col in patients.columns:
        name = str(col)
        if name in NON_CLINICAL_COLUMNS or name.startswith(prefixes):
            continue
        series = patients[col]
        if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            numeric[name] = _num(series.astype(float))
            continue
        text = series.astype(object).where(series.notna(), "").astype(str).str.strip()
        present = ~text.str.lower().isin(_NA_TOKENS)
        parsed = pd.to_numeric(text.where(present, None), errors="coerce")
        if present.any() and parsed[present].notna().all():
            numeric[name] = _num(parsed)
        else:
            other.append(name)
    return numeric, other


# --------------------------------------------------------------------------- summary


def summarize(lesions: pd.DataFrame, patients: pd.DataFrame, reference: str, index: str) -> dict:
    """Compute the cohort statistics comparing the index with the reference tracer.

    Parameters
    ----------
    lesions : pandas.DataFrame
        One row per lesion: ``patient, lesion, x_mm, y_mm, z_mm, region`` and, per
        tracer ``t``, ``{t}_detected`` (0/1) and ``{t}_{metric}`` for the metrics
        in :data:`METRICS` (missing values allowed). Metrics whose columns are
        absent for either tracer are skipped and listed in ``metrics_skipped``.
    patients : pandas.DataFrame
        One row per patient: ``patient``, ``{t}_positive`` (0/1), other
        ``{t}_*`` columns, optional ``status``/``excluded_reason`` and clinical
        columns (every other column). Patients with ``status`` "excluded" or a
        non-empty ``excluded_reason`` are removed, with their lesions.
    reference, index : str
        Tracer names used as column prefixes (e.g. ``"fdg"``, ``"pentixafor"``).

    Returns
    -------
    dict
        JSON-serialisable summary (no NaN, no numpy types) with keys
        ``tracers, n_patients, n_lesions, excluded_patients, definitions,
        patient_detection, lesion_detection, metrics, metrics_skipped,
        clinical_columns, correlations, software``. Every test entry carries
        ``test``, ``n`` and ``p`` (``None`` plus ``reason`` when not computable).
        Differences are index - reference.

    Raises
    ------
    DualpetInputError
        If a non-empty table lacks the ``patient`` column or has empty patient IDs,
        or if ``reference == index``.
    """
    import scipy
    import statsmodels

    if reference == index:
        raise DualpetInputError(f"reference and index tracer are both {reference!r}")
    lesions = lesions.copy()
    patients = patients.copy()
    lesions["patient"] = _patient_ids(lesions, "lesions table")
    patients["patient"] = _patient_ids(patients, "patients table")

    excluded = _excluded(patients)
    excluded_list = []
    for _, row in patients[excluded].iterrows():
        reason = row.get("excluded_reason") if "excluded_reason" in patients.columns else None
        reason = None if reason is None or (isinstance(reason, float) and math.isnan(reason)) else str(reason)
        excluded_list.append({"patient": row["patient"], "reason": reason})
    excluded_ids = {e["patient"] for e in excluded_list}
    pet_ct = []
    for col in (f"{reference}_pet_ct_registered", f"{index}_pet_ct_registered"):
        if col in patients.columns:
            for _, row in patients[~excluded].iterrows():
                if _float(row.get(col)) == 1:
                    pet_ct.append({"patient": row["patient"], "tracer": col.rsplit("_pet_ct_registered", 1)[0]})
    flagged = []
    if "registration_ok" in patients.columns:
        for _, row in patients[~excluded].iterrows():
            if _float(row.get("registration_ok")) == 0:
                warn = row.get("registration_warnings") if "registration_warnings" in patients.columns else None
                warn = None if warn is None or (isinstance(warn, float) and math.isnan(warn)) else str(warn)
                flagged.append({"patient": row["patient"], "warnings": warn})
    patients = patients[~excluded].reset_index(drop=True)
    lesions = lesions[~lesions["patient"].isin(excluded_ids)].reset_index(drop=True)
    tracers = {"reference": reference, "index": index}

    summary = {
        "tracers": tracers,
        "n_patients": int(len(patients)),
        "n_lesions": int(len(lesions)),
        "excluded_patients": excluded_list,
        "registration_flagged": flagged,
        "pet_ct_registered": pet_ct,
        "review": _review_counts(patients, lesions, (reference, index)),
        "definitions": {
            "difference": DIFFERENCE_DEFINITION,
            "positive": "{tracer}_positive == 1 (patient level); missing values are excluded",
            "detected": "{tracer}_detected == 1 (lesion level); missing values are excluded",
            "descriptive_all": "all lesions with a value on that tracer (detected or not)",
            "descriptive_detected": "lesions detected on that tracer with a value",
            "quartiles": "linear interpolation (numpy default)",
            "sd": "sample standard deviation (ddof = 1)",
        },
    }

    # --- patient-level detection
    pdet = {}
    cols = {t: f"{name}_positive" for t, name in tracers.items()}
    missing = [c for c in cols.values() if c not in patients.columns]
    if missing:
        pdet["reason"] = f"column(s) absent: {', '.join(missing)}"
        for t in tracers:
            pdet[t] = {"positive": None, "n": 0, "proportion": None}
        pdet["mcnemar"] = {"test": MCNEMAR_TEST, "n": 0, "p": None, "reason": pdet["reason"]}
    else:
        flags = {t: _flag(patients[c]) for t, c in cols.items()}
        for t in tracers:
            known = np.isfinite(flags[t])
            k, n = int(np.sum(flags[t][known] == 1)), int(known.sum())
            pdet[t] = {"positive": k, "n": n, "proportion": (k / n) if n else None}
        pdet["mcnemar"] = _mcnemar(flags["reference"], flags["index"])
    summary["patient_detection"] = pdet

    # --- lesion-level detection
    ldet = {}
    cols = {t: f"{name}_detected" for t, name in tracers.items()}
    missing = [c for c in cols.values() if c not in lesions.columns]
    detected = {}
    if missing:
        ldet["reason"] = f"column(s) absent: {', '.join(missing)}"
        for t in tracers:
            ldet[t] = {"detected": None, "n": 0}
        ldet["mcnemar"] = {"test": MCNEMAR_TEST, "n": 0, "p": None, "reason": ldet["reason"]}
    else:
        flags = {t: _flag(lesions[c]) for t, c in cols.items()}
        for t in tracers:
            known = np.isfinite(flags[t])
            ldet[t] = {"detected": int(np.sum(flags[t][known] == 1)), "n": int(known.sum())}
            detected[t] = flags[t] == 1
        mc = _mcnemar(flags["reference"], flags["index"])
        mc["note_clustering"] = LESION_CLUSTER_NOTE
        for key in ("both", "reference_only", "index_only", "neither"):
            ldet[key] = mc[key]
        ldet["n"] = mc["n"]
        ldet["mcnemar"] = mc
    summary["lesion_detection"] = ldet

    # --- metrics
    metrics, skipped = {}, {}
    for metric in METRICS:
        needed = [f"{tracers[t]}_{metric}" for t in tracers]
        absent = [c for c in needed if c not in lesions.columns]
        if absent:
            skipped[metric] = f"column(s) absent: {', '.join(absent)}"
            continue
        values = {t: _num(lesions[f"{tracers[t]}_{metric}"]) for t in tracers}
        entry = {}
        for t in tracers:
            det = detected.get(t)
            entry[t] = {
                "all": _describe(values[t]),
                "detected": (
                    _describe(values[t][det])
                    if det is not None
                    else {**_describe([]), "reason": "no detection column"}
                ),
            }
        diff = values["index"] - values["reference"]
        paired = np.isfinite(diff)
        lesion_test = _wilcoxon(diff[paired], WILCOXON_LESION_TEST)
        lesion_test["note"] = LESION_CLUSTER_NOTE
        entry["paired_lesion"] = lesion_test

        frame = pd.DataFrame({"patient": lesions["patient"].to_numpy()[paired], "d": diff[paired]})
        per_patient = frame.groupby("patient", sort=True)["d"].mean()
        patient_test = _wilcoxon(per_patient.to_numpy(), WILCOXON_PATIENT_TEST)
        patient_test["unit"] = "patient (mean of the patient's paired lesion differences)"
        entry["patient_wilcoxon"] = patient_test
        entry["mixed_model"] = _mixed_model(frame["d"].to_numpy(), frame["patient"].to_numpy())
        metrics[metric] = entry
    summary["metrics"] = metrics
    summary["metrics_skipped"] = skipped

    # --- correlations
    numeric, other = _clinical_columns(patients, reference, index)
    summary["clinical_columns"] = {"numeric": list(numeric), "non_numeric": other}
    definition = (
        "Per-patient uptake: maximum over the patient's lesions with a value for "
        "suvmax and tbr, mean over the patient's lesions with a value for suvmean "
        "(all lesions of the patient, detected or not on that tracer); patients "
        "without a value are omitted. Spearman rho with pairwise-complete data; "
        f"p exact by permutation for n <= {SPEARMAN_EXACT_MAX_N}, else t-approximation."
    )
    entries = []
    for clinical, cvalues in numeric.items():
        clin = pd.Series(cvalues, index=patients["patient"].to_numpy())
        clin = clin[~clin.index.duplicated(keep="first")]
        for role, tracer in tracers.items():
            for metric, how in CORRELATION_METRICS.items():
                column = f"{tracer}_{metric}"
                base = {
                    "clinical": clinical,
                    "tracer": tracer,
                    "role": role,
                    "metric": metric,
                    "aggregation": how,
                }
                if column not in lesions.columns:
                    entries.append(
                        {
                            **base,
                            "test": SPEARMAN_TEST,
                            "n": 0,
                            "rho": None,
                            "p": None,
                            "reason": f"column absent: {column}",
                        }
                    )
                    continue
                values = pd.Series(_num(lesions[column]), index=lesions["patient"].to_numpy())
                per_patient = values.groupby(level=0).agg(how) if len(values) else pd.Series(dtype=float)
                uptake = per_patient.reindex(clin.index).to_numpy(dtype=float)
                entries.append({**base, **_spearman(clin.to_numpy(dtype=float), uptake)})
    summary["correlations"] = {"definition": definition, "entries": entries}
    summary["software"] = {
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scipy": scipy.__version__,
        "statsmodels": statsmodels.__version__,
    }
    return _clean(summary)


# --------------------------------------------------------------------------- markdown


def _fmt_p(p) -> str:
    """Format a p-value: ``<0.001`` below 0.001, otherwise three decimals; ``n/a`` if missing."""
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _fmt(x, digits: int = 2) -> str:
    """Format a number for the report; ``–`` if missing."""
    if x is None:
        return "–"
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x)
    if x != 0 and abs(x) < 10 ** (-digits):
        return f"{x:.{digits + 1}g}"
    return f"{x:.{digits}f}"


def _cell(text) -> str:
    """Escape a value for a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header, rows) -> list[str]:
    """Markdown table lines."""
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _note(test: dict) -> str:
    """Reason, note and warnings of a test entry as one cell."""
    parts = [test[k] for k in ("reason", "note") if test.get(k)]
    if test.get("warnings"):
        parts.append(f"{len(test['warnings'])} fit warning(s): " + "; ".join(test["warnings"][:3]))
    return "; ".join(parts)


def _pct(k, n) -> str:
    return f"{100.0 * k / n:.1f} %" if n and k is not None else "–"


def _review_counts(patients, lesions, tracers):
    """How much the readers reviewed: decisions (applied or not) and lesions by origin."""

    def per_patient(kind):  # decisions of that kind per patient, both tracers summed
        cols = [f"{t}_review_{kind}" for t in tracers if f"{t}_review_{kind}" in patients.columns]
        return patients[cols].apply(pd.to_numeric, errors="coerce").fillna(0).sum(axis=1) if cols else pd.Series(dtype=float)

    decisions = per_patient("decisions")
    columns = [lesions[f"{t}_origin"] for t in tracers if f"{t}_origin" in lesions.columns]
    origins = pd.concat(columns) if columns else pd.Series(dtype=str)
    return {"decisions": int(decisions.sum()), "not_applied": int(per_patient("not_applied").sum()),
            "patients_reviewed": int((decisions > 0).sum()), "reader_accepted": int((origins == "reader-accepted").sum()),
            "reader_added": int((origins == "reader-added").sum())}  # fmt: skip


def render_markdown(summary: dict) -> str:
    """Render a summary from :func:`summarize` as a Markdown report.

    Parameters
    ----------
    summary : dict
        Output of :func:`summarize` (or the same structure read back from JSON).

    Returns
    -------
    str
        Markdown with a title, cohort line, detection tables, one table per
        metric (descriptives and paired tests), patient-clustered results, the
        correlation table and a Methods paragraph. p-values are shown as
        ``<0.001`` or with three decimals; ``n/a`` when not computable.
    """
    ref = summary["tracers"]["reference"]
    idx = summary["tracers"]["index"]
    label = {"reference": f"{ref} (reference)", "index": f"{idx} (index)"}
    out = [f"# Dual-tracer PET/CT cohort statistics: {idx} vs {ref}", ""]
    cohort = f"**Cohort:** {summary['n_patients']} patients, {summary['n_lesions']} lesions"
    if summary.get("excluded_patients"):
        cohort += f" ({len(summary['excluded_patients'])} patient(s) excluded)"
    rv = summary.get("review") or {}
    if rv.get("decisions"):
        cohort += (f"; reader review: {rv['decisions']} decision(s) on {rv['patients_reviewed']} patient(s)"
                   f" ({rv['not_applied']} not applied), {rv['reader_accepted']} lesion(s) reader-accepted,"
                   f" {rv['reader_added']} reader-added")  # fmt: skip
    out += [cohort + ".", "", f"Differences are {summary['definitions']['difference']}.", ""]
    if summary.get("excluded_patients") or summary.get("registration_flagged") or summary.get("pet_ct_registered"):
        out += ["## Quality control", ""]
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
        out.append("")

    # patient detection
    pdet = summary["patient_detection"]
    out += ["## Patient-level detection", ""]
    rows = [
        [
            label[t],
            pdet[t]["positive"] if pdet[t]["positive"] is not None else "–",
            pdet[t]["n"],
            _pct(pdet[t]["positive"], pdet[t]["n"]),
        ]
        for t in ("reference", "index")
    ]
    out += _table(["Tracer", "Positive (k)", "n", "%"], rows) + [""]
    mc = pdet["mcnemar"]
    line = f"McNemar exact test (n = {mc['n']} patients"
    if "b" in mc:
        line += f"; {ref}-only b = {mc['b']}, {idx}-only c = {mc['c']}"
    line += f"): p = {_fmt_p(mc['p'])}."
    if _note(mc):
        line += f" ({_note(mc)})"
    out += [line, ""]

    # lesion detection
    ldet = summary["lesion_detection"]
    out += ["## Lesion-level detection", ""]
    rows = [
        [
            f"Detected on {label[t]}",
            ldet[t]["detected"] if ldet[t]["detected"] is not None else "–",
            ldet[t]["n"],
        ]
        for t in ("reference", "index")
    ]
    if "both" in ldet:
        n = ldet["n"]
        rows += [
            ["Both", ldet["both"], n],
            [f"{ref} only", ldet["reference_only"], n],
            [f"{idx} only", ldet["index_only"], n],
            ["Neither", ldet["neither"], n],
        ]
    out += _table(["Lesions", "Count", "n"], rows) + [""]
    mc = ldet["mcnemar"]
    line = f"McNemar exact test on lesions (n = {mc['n']}): p = {_fmt_p(mc['p'])} (descriptive: lesions are clustered within patients)."
    if _note(mc):
        line += f" ({_note(mc)})"
    out += [line, ""]

    # metrics
    out += ["## Uptake metrics", ""]
    if not summary["metrics"]:
        out += ["No metric columns available.", ""]
    for metric, entry in summary["metrics"].items():
        out += [f"### {metric}", ""]
        rows = []
        for t in ("reference", "index"):
            for subset in ("all", "detected"):
                s = entry[t][subset]
                iqr = f"{_fmt(s['median'])} [{_fmt(s['q1'])}–{_fmt(s['q3'])}]" if s["n"] else "–"
                rows.append(
                    [
                        label[t],
                        "all lesions" if subset == "all" else "detected on tracer",
                        s["n"],
                        f"{_fmt(s['mean'])} ± {_fmt(s['sd'])}" if s["n"] else "–",
                        iqr,
                        f"{_fmt(s['min'])}–{_fmt(s['max'])}" if s["n"] else "–",
                    ]
                )
        out += _table(["Tracer", "Lesions", "n", "Mean ± SD", "Median [IQR]", "Range"], rows) + [""]
        lt, pt, mm = entry["paired_lesion"], entry["patient_wilcoxon"], entry["mixed_model"]
        ci = mm.get("ci95")
        rows = [
            [
                "Wilcoxon signed-rank, per lesion (descriptive)",
                f"{lt['n']} lesions",
                f"median Δ = {_fmt(lt['median_difference'])}; W = {_fmt(lt['statistic'])}",
                _fmt_p(lt["p"]),
                "; ".join(x for x in (lt.get("reason"),) if x),
            ],
            [
                "Wilcoxon signed-rank, per-patient mean Δ",
                f"{pt['n']} patients",
                f"median Δ = {_fmt(pt['median_difference'])}; W = {_fmt(pt['statistic'])}",
                _fmt_p(pt["p"]),
                _note(pt),
            ],
            [
                "Linear mixed model, random intercept per patient",
                f"{mm['n_lesions']} lesions / {mm['n_patients']} patients",
                f"mean Δ = {_fmt(mm['estimate'])}"
                + (f" [95% CI {_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""),
                _fmt_p(mm["p"]),
                _note(mm),
            ],
        ]
        out += _table(["Paired test", "n", "Effect", "p", "Note"], rows) + [""]
    if summary.get("metrics_skipped"):
        out += [
            "Skipped metrics: "
            + "; ".join(f"{m} ({r})" for m, r in summary["metrics_skipped"].items())
            + ".",
            "",
        ]

    # patient-clustered summary
    out += ["## Patient-clustered comparisons", ""]
    rows = []
    for metric, entry in summary["metrics"].items():
        pt, mm = entry["patient_wilcoxon"], entry["mixed_model"]
        ci = mm.get("ci95")
        rows.append(
            [
                metric,
                pt["n"],
                _fmt(pt["median_difference"]),
                _fmt_p(pt["p"]),
                _fmt(mm["estimate"]),
                f"{_fmt(ci[0])} to {_fmt(ci[1])}" if ci else "–",
                _fmt_p(mm["p"]),
            ]
        )
    if rows:
        out += _table(
            [
                "Metric",
                "Patients",
                "Median of patient mean Δ",
                "Wilcoxon p",
                "LMM mean Δ",
                "LMM 95% CI",
                "LMM p",
            ],
            rows,
        ) + [""]
    else:
        out += ["No metrics analysed.", ""]

    # correlations
    corr = summary["correlations"]
    out += ["## Correlations with clinical variables", "", corr["definition"], ""]
    if corr["entries"]:
        rows = [
            [
                e["clinical"],
                e["tracer"],
                f"{e['metric']} ({e.get('aggregation', '')})",
                e["n"],
                _fmt(e.get("rho")),
                _fmt_p(e["p"]),
                e.get("reason", ""),
            ]
            for e in corr["entries"]
        ]
        out += _table(["Clinical variable", "Tracer", "Metric", "n", "Spearman rho", "p", "Note"], rows) + [
            ""
        ]
    else:
        out += ["No numeric clinical columns.", ""]
    non_numeric = summary.get("clinical_columns", {}).get("non_numeric") or []
    if non_numeric:
        out += ["Non-numeric clinical columns (not correlated): " + ", ".join(non_numeric) + ".", ""]

    # methods
    out += [
        "## Methods",
        "",
        "Patient-level positivity and lesion-level detection were compared between tracers with the exact "
        "McNemar test (two-sided binomial test on the discordant pairs). Lesions are clustered within "
        "patients, so lesion-level p-values are descriptive. Uptake metrics are summarised as mean ± SD "
        "(ddof = 1) and median [interquartile range] over all lesions with a value and over lesions detected "
        f"on that tracer. Paired differences ({summary['definitions']['difference']}) were tested with the "
        "two-sided Wilcoxon signed-rank test per lesion and on per-patient mean differences (zero differences "
        "discarded; exact p-values when there are no ties and n ≤ 50, otherwise an exact permutation or normal "
        "approximation). A linear mixed model with a random intercept per patient (statsmodels MixedLM, REML) "
        "estimated the mean difference with a 95% Wald confidence interval; it was not fitted with fewer than "
        "three patients. Associations between numeric clinical variables and per-patient uptake were assessed "
        "with Spearman's rank correlation. No correction for multiple testing was applied.",
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------- I/O


def _read_tsv(path) -> pd.DataFrame:
    """Read a cohort TSV: empty cells are missing, patient/lesion IDs stay text."""
    return pd.read_csv(
        path,
        sep="\t",
        dtype={"patient": str, "lesion": str},
        keep_default_na=False,
        na_values=[""],
    )


def run(lesions_tsv, patients_tsv, reference: str, index: str, out_json, out_md) -> dict:
    """Read the cohort tables, summarise them and write JSON and Markdown atomically.

    Parameters
    ----------
    lesions_tsv, patients_tsv : str or path-like
        Tab-separated input tables (see :func:`summarize`).
    reference, index : str
        Reference and index tracer names (column prefixes).
    out_json, out_md : str or path-like
        Output paths for the JSON summary and the Markdown report.

    Returns
    -------
    dict
        The summary written to ``out_json``.
    """
    lesions = _read_tsv(lesions_tsv)
    patients = _read_tsv(patients_tsv)
    summary = summarize(lesions, patients, reference, index)
    write_json(out_json, summary)
    write_text(out_md, render_markdown(summary))
    return summary
