"""The cohort summary: detection, uptake per named lesion set, correlations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from dualpet.errors import DualpetInputError
from dualpet.stats import constants as C
from dualpet.stats import inference as T
from dualpet.stats.detection import detection_by_region, flags_known
from dualpet.stats.validate import excluded_mask, flags, numbers, validate

#: 3 (issue 26): a lesion set equal to an earlier one for a metric holds ``same_as`` and a
#: note instead of its analyses; the clustered McNemar p is on t (``p_chi2`` Obuchowski's);
#: parameters that cannot be estimated are null with ``not_estimable``.
SCHEMA_VERSION = 3


def clean(obj):
    """``obj`` with numpy types converted and NaN/inf replaced by ``None`` (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [clean(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if obj is pd.NA or obj is pd.NaT:
        return None
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _text(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _clinical_columns(patients, reference, index):
    """Numeric clinical columns (parsed) and the names of the others."""
    numeric, other = {}, []
    for col in patients.columns:
        name = str(col)
        if name in C.NON_CLINICAL_COLUMNS or name.startswith((f"{reference}_", f"{index}_")):
            continue
        series = patients[col]
        if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            numeric[name] = numbers(series.astype(float))
            continue
        text = series.astype(object).where(series.notna(), "").astype(str).str.strip()
        present = ~text.str.lower().isin(C.NA_TOKENS)
        parsed = pd.to_numeric(text.where(present, None), errors="coerce")
        if present.any() and parsed[present].notna().all():
            numeric[name] = numbers(parsed)
        else:
            other.append(name)
    return numeric, other


def review_counts(patients, lesions, tracers):
    """How much the readers reviewed: decisions (applied or not) and lesions by origin."""

    def per_patient(kind):
        cols = [f"{t}_review_{kind}" for t in tracers if f"{t}_review_{kind}" in patients.columns]
        return (
            patients[cols].apply(pd.to_numeric, errors="coerce").fillna(0).sum(axis=1)
            if cols
            else pd.Series(dtype=float)
        )

    decisions = per_patient("decisions")
    columns = [lesions[f"{t}_origin"] for t in tracers if f"{t}_origin" in lesions.columns]
    origins = pd.concat(columns) if columns else pd.Series(dtype=str)
    return {
        "decisions": int(decisions.sum()),
        "not_applied": int(per_patient("not_applied").sum()),
        "patients_reviewed": int((decisions > 0).sum()),
        "reader_accepted": int((origins == "reader-accepted").sum()),
        "reader_added": int((origins == "reader-added").sum()),
    }


def check_primary(primary):
    """The primary endpoint with defaults filled in; unknown names are an error."""
    primary = {**C.DEFAULT_PRIMARY, **(primary or {})}
    for key, allowed in (("metric", C.METRICS), ("lesion_set", tuple(C.LESION_SETS)), ("analysis", tuple(C.ANALYSES))):
        if primary[key] not in allowed:
            raise DualpetInputError(f"statistics.primary.{key}: {primary[key]!r} is not one of {', '.join(allowed)}")
    if primary["analysis"] == "lesion_wilcoxon":
        raise DualpetInputError(
            "statistics.primary.analysis: the per-lesion Wilcoxon test ignores clustering and "
            "cannot be the primary endpoint"
        )
    return primary


def detection_tests(patients, lesions, reference, index):
    """Patient- and lesion-level detection tests, and the lesions' 0/1 flags per role."""
    roles = {"reference": reference, "index": index}
    pdet = {}
    pflags = {
        r: flags(patients, f"{t}_positive", "patients table") if len(patients) else np.zeros(0)
        for r, t in roles.items()
    }
    for r in roles:
        known = ~np.isnan(pflags[r])
        k, n = int(np.sum(pflags[r][known] == 1)), int(known.sum())
        pdet[r] = {"positive": k, "n": n, "proportion": k / n if n else None}
    pdet["mcnemar"] = T.mcnemar(pflags["reference"], pflags["index"])
    pdet["mcnemar"]["unit"] = "patient"

    lflags = {
        r: flags(lesions, f"{t}_detected", "lesions table") if len(lesions) else np.zeros(0) for r, t in roles.items()
    }
    known = flags_known(lesions, reference, index)
    lesions = lesions[known]
    lflags_all, lflags = lflags, {r: f[known] for r, f in lflags.items()}
    naive = T.mcnemar(lflags["reference"], lflags["index"])
    naive["note"] = C.LESION_CLUSTER_NOTE
    ldet = {r: {"detected": int(np.nansum(lflags[r] == 1)), "n": int((~np.isnan(lflags[r])).sum())} for r in roles}
    ldet.update({k: naive[k] for k in ("n", "both", "reference_only", "index_only", "neither")})
    groups = lesions["patient"].to_numpy(dtype=object)
    ldet["clustered_mcnemar"] = T.clustered_mcnemar(lflags["reference"], lflags["index"], groups)
    # per patient: lesions found on the index tracer minus on the reference (patients
    # without lesions contribute 0 and do not change an exact sign-flip test)
    frame = pd.DataFrame({"patient": groups, "d": (lflags["index"] == 1).astype(float) - (lflags["reference"] == 1)})
    per_patient = frame.groupby("patient")["d"].sum().reindex(patients["patient"], fill_value=0.0)
    ldet["sign_flip"] = {
        **T.sign_flip(per_patient.to_numpy()),
        "unit": "patient: lesions detected on the index tracer minus on the reference",
    }
    ldet["mcnemar"] = naive
    ldet["flag_missing"] = int((~known).sum())
    if ldet["flag_missing"]:
        ldet["note"] = f"{ldet['flag_missing']} lesion(s) with an empty detection flag left out of detection"
    table = detection_by_region(lesions, reference, index)
    keys = {"reference": f"{reference}_detected", "index": f"{index}_detected", "both": "both_detected"}
    keys |= {"reference_only": f"{reference}_only", "index_only": f"{index}_only"}
    ldet["by_region"] = [
        {"region": row["region"], "lesions": int(row["lesions"]), **{k: int(row[c]) for k, c in keys.items()}}
        for _, row in table.iloc[:-1].iterrows()  # the regions; the total is the lesion counts above
    ]
    return pdet, ldet, lflags_all


def _set_masks(lflags):
    ref, idx = lflags["reference"] == 1, lflags["index"] == 1
    return {"both": ref & idx, "reference": ref, "union": ref | idx}


def paired_analyses(ref, idx, groups) -> dict:
    """The paired analyses of one metric on one lesion set (:data:`~dualpet.stats.constants.ANALYSES`):
    ``ref``/``idx`` the lesions' values on each tracer, ``groups`` their patients."""
    d = T.zero_differences(idx, ref)
    positive = (ref > 0) & (idx > 0)
    per_patient = pd.DataFrame({"patient": groups, "d": d}).groupby("patient", sort=True)["d"].mean().to_numpy()
    log_ratio = np.log(idx[positive]) - np.log(ref[positive])
    log_ratio[d[positive] == 0] = 0.0  # the same numerically equal pairs as the differences
    logs = np.abs(np.log(np.concatenate([ref[positive], idx[positive]])))
    log_entry = T.mixed_model(log_ratio, groups[positive], log_ratio=True, scale=float(np.max(logs, initial=1.0)))
    if (~positive).any():
        log_entry["left_out"] = f"{int((~positive).sum())} lesion(s) with a value <= 0 (no logarithm)"
    return {
        "log_ratio": log_entry,
        "difference": T.mixed_model(d, groups, scale=float(np.max(np.abs(np.concatenate([ref, idx])), initial=0.0))),
        "patient_wilcoxon": {
            **T.wilcoxon(per_patient, C.WILCOXON_PATIENT_TEST),
            "unit": "patient (mean of the patient's paired lesion differences)",
        },
        "lesion_wilcoxon": {
            **T.wilcoxon(d, C.WILCOXON_LESION_TEST),
            "note": C.LESION_CLUSTER_NOTE,
            "descriptive": True,
        },
    }


def _uptake(lesions, reference, index, lflags):
    """Per metric: the per-tracer descriptives (the seed study's reporting) and, per lesion
    set, the paired analyses."""
    metrics, skipped = {}, {}
    groups = lesions["patient"].to_numpy(dtype=object)
    masks = _set_masks(lflags)
    for metric in C.METRICS:
        absent = [f"{t}_{metric}" for t in (reference, index) if f"{t}_{metric}" not in lesions.columns]
        if absent:
            skipped[metric] = f"column(s) absent: {', '.join(absent)}"
            continue
        ref, idx = numbers(lesions[f"{reference}_{metric}"]), numbers(lesions[f"{index}_{metric}"])
        entry = {
            "per_tracer": {
                role: {"all": T.describe(v), "detected": T.describe(v[lflags[role] == 1])}
                for role, v in (("reference", ref), ("index", idx))
            },
            "sets": {},
        }
        seen = {}  # the lesions of a set already analysed -> that set's name
        for name, mask in masks.items():
            paired = mask & np.isfinite(ref) & np.isfinite(idx)
            entry["sets"][name] = {
                "definition": C.LESION_SETS[name],
                "n_lesions": int(paired.sum()),
                "n_patients": int(pd.Series(groups[paired], dtype=object).nunique()),
            }
            same = seen.setdefault(paired.tobytes(), name) if paired.any() else name
            if same != name:  # e.g. mtv_ml: no value where a tracer missed the lesion, so every set is 'both'
                entry["sets"][name].update(
                    same_as=same,
                    note=f"the same lesions as the '{same}' set for {metric} (the others have no value on both "
                    "tracers): its analyses are reported once, under that set, and tested once",
                )
                continue
            entry["sets"][name].update(
                reference=T.describe(ref[paired]),
                index=T.describe(idx[paired]),
                **paired_analyses(ref[paired], idx[paired], groups[paired]),
            )
        metrics[metric] = entry
    return metrics, skipped


def _correlations(patients, lesions, reference, index):
    numeric, other = _clinical_columns(patients, reference, index)
    entries = []
    for clinical, values in numeric.items():
        clin = pd.Series(values, index=patients["patient"].to_numpy())
        for role, tracer in (("reference", reference), ("index", index)):
            for metric, how in C.CORRELATION_METRICS.items():
                base = {"clinical": clinical, "tracer": tracer, "role": role, "metric": metric, "aggregation": how}
                column = f"{tracer}_{metric}"
                if column not in lesions.columns:
                    entries.append(
                        {
                            **base,
                            "test": C.SPEARMAN_TEST,
                            "n": 0,
                            "rho": None,
                            "p": None,
                            "reason": f"column absent: {column}",
                        }
                    )
                    continue
                per_lesion = pd.Series(numbers(lesions[column]), index=lesions["patient"].to_numpy())
                per_patient = per_lesion.groupby(level=0).agg(how) if len(per_lesion) else pd.Series(dtype=float)
                entries.append(
                    {**base, **T.spearman(clin.to_numpy(float), per_patient.reindex(clin.index).to_numpy(float))}
                )
    definition = (
        "Per-patient uptake: maximum over the patient's lesions with a value for suvmax and tbr, mean for "
        "suvmean (all lesions of the patient, detected or not on that tracer); patients without a value "
        "are omitted. Spearman rho with pairwise-complete data."
    )
    return {"numeric": list(numeric), "non_numeric": other}, {"definition": definition, "entries": entries}


def _multiplicity(summary, primary, adjust):
    """Mark the primary endpoint; list the exploratory tests, Holm-adjusted if asked."""
    family = [
        ("patient detection: McNemar", summary["patient_detection"]["mcnemar"]),
        ("lesion detection: patient sign-flip", summary["lesion_detection"]["sign_flip"]),
    ]
    if not summary["lesion_detection"]["clustered_mcnemar"].get("descriptive"):
        family.append(("lesion detection: clustered McNemar", summary["lesion_detection"]["clustered_mcnemar"]))
    chosen = None
    for metric, entry in summary["metrics"].items():
        sets = entry["sets"]
        primary_set = None
        if metric == primary["metric"] and primary["lesion_set"] in sets:
            primary_set = sets[primary["lesion_set"]].get("same_as", primary["lesion_set"])
        for name, s in sets.items():
            if "same_as" in s:  # tested once, under the set it equals
                continue
            for analysis in ("log_ratio", "difference", "patient_wilcoxon"):
                if (name, analysis) == (primary_set, primary["analysis"]):
                    chosen = s[analysis]
                else:
                    family.append((f"{metric}, {name}: {analysis}", s[analysis]))
    family += [
        (f"correlation: {e['clinical']} vs {e['tracer']} {e['metric']}", e) for e in summary["correlations"]["entries"]
    ]
    adjusted = T.holm([t.get("p") for _, t in family]) if adjust == "holm" else [None] * len(family)
    for (_, test), p in zip(family, adjusted):
        if adjust == "holm":
            test["p_holm"] = p
    out = {
        **primary,
        "result": chosen,
        "reason": None if chosen is not None else f"metric {primary['metric']!r} not in the lesions table",
    }
    return out, {
        "adjustment": adjust,
        "n_tests": len(family),
        "tests": [{"label": label, "p": t.get("p"), "p_holm": t.get("p_holm")} for label, t in family],
    }


def _study_notes(kept, reference, index) -> dict:
    """What the QC section lists per patient or study of the patients kept (summary.json keys)."""
    pet_ct = [
        {"patient": row["patient"], "tracer": t}
        for t in (reference, index)
        if f"{t}_pet_ct_registered" in kept
        for _, row in kept.iterrows()
        if T.as_float(row.get(f"{t}_pet_ct_registered")) == 1
    ]
    flagged = [
        {"patient": row["patient"], "warnings": _text(row.get("registration_warnings"))}
        for _, row in kept.iterrows()
        if "registration_ok" in kept and T.as_float(row.get("registration_ok")) == 0
    ]
    # per study: the background's fallback (why the configured region was not used) and the
    # organs the organ map dropped as implausible
    studies = {
        key: [
            {"patient": row["patient"], "tracer": t, "note": _text(row.get(f"{t}_{key}"))}
            for t in (reference, index)
            if f"{t}_{key}" in kept
            for _, row in kept.iterrows()
            if _text(row.get(f"{t}_{key}"))
        ]
        for key in ("background_fallback", "organs_dropped", "series_note")
    }
    # per study: the PET's planes the CT leaves uncovered (more than a millimetre)
    uncovered = [
        {"patient": row["patient"], "tracer": t, "mm": T.as_float(row.get(f"{t}_ct_uncovered_mm"))}
        for _, row in kept.iterrows()
        for t in (reference, index)
        if (T.as_float(row.get(f"{t}_ct_uncovered_mm")) or 0.0) > 1.0
    ]
    # per study: where its background was measured, its SUVmean and the reason for any fallback
    backgrounds = [
        {
            "patient": row["patient"],
            "tracer": t,
            "source": _text(row.get(f"{t}_background_source")),
            "suvmean": T.as_float(row.get(f"{t}_background_suvmean")),
            "fallback": _text(row.get(f"{t}_background_fallback")),
        }
        for _, row in kept.iterrows()
        for t in (reference, index)
        if f"{t}_background_source" in kept
    ]
    return {
        "registration_flagged": flagged,
        "pet_ct_registered": pet_ct,
        "backgrounds": backgrounds,
        "background_fallbacks": studies["background_fallback"],
        "organs_dropped": studies["organs_dropped"],
        "series_notes": studies["series_note"],
        "ct_uncovered": uncovered,
    }


def _definitions() -> dict:
    """How the summary's terms are defined (its ``definitions`` section)."""
    return {
        "difference": C.DIFFERENCE_DEFINITION,
        "ratio": "index / reference",
        "lesion_sets": C.LESION_SETS,
        "analyses": C.ANALYSES,
        "zero_difference": f"|index - reference| <= {C.ZERO_TOLERANCE:g} x max(|index|, |reference|)",
        "positive": "{tracer}_positive == 1 (patient level)",
        "detected": "{tracer}_detected == 1 (lesion level)",
        "quartiles": "linear interpolation (numpy default)",
        "sd": "sample standard deviation (ddof = 1)",
    }


def summarize(lesions, patients, reference, index, *, primary=None, adjust="none", names=None) -> dict:
    """The cohort statistics comparing the index with the reference tracer (JSON-ready).

    ``lesions``: one row per union lesion (``patient``, ``region``, ``{t}_detected`` 0/1,
    ``{t}_{metric}``); ``patients``: one row per patient (``{t}_positive`` 0/1, optional
    ``status``/``excluded_reason``, clinical columns). Excluded patients are left out with
    their lesions. ``primary``: the primary endpoint (metric, lesion_set, analysis; see
    :data:`~dualpet.stats.constants.DEFAULT_PRIMARY`); every other test is exploratory,
    Holm-adjusted with ``adjust="holm"``. ``names``: tracer -> display name for the report
    (``tracer_names``: reference and index). Bad tables raise DualpetInputError (see
    :mod:`dualpet.stats.validate`); statistical edge cases never raise (``p`` None and a
    ``reason``).
    """
    import scipy
    import statsmodels

    primary = check_primary(primary)
    if adjust not in C.ADJUSTMENTS:
        raise DualpetInputError(f"statistics.adjust: {adjust!r} is not one of {', '.join(C.ADJUSTMENTS)}")
    lesions, patients = validate(lesions, patients, reference, index)
    excluded = excluded_mask(patients)
    excluded_list = [
        {"patient": row["patient"], "reason": _text(row.get("excluded_reason"))}
        for _, row in patients[excluded].iterrows()
    ]
    kept = patients[~excluded]
    notes = _study_notes(kept, reference, index)
    patients = kept.reset_index(drop=True)
    lesions = lesions[~lesions["patient"].isin({e["patient"] for e in excluded_list})].reset_index(drop=True)
    summary = {
        "schema_version": SCHEMA_VERSION,
        "tracers": {"reference": reference, "index": index},
        "tracer_names": {
            "reference": (names or {}).get(reference) or reference,
            "index": (names or {}).get(index) or index,
        },
        "n_patients": int(len(patients)),
        "n_lesions": int(len(lesions)),
        "excluded_patients": excluded_list,
        **notes,
        "review": review_counts(patients, lesions, (reference, index)),
        "definitions": _definitions(),
    }
    pdet, ldet, lflags = detection_tests(patients, lesions, reference, index)
    summary["patient_detection"], summary["lesion_detection"] = pdet, ldet
    summary["metrics"], summary["metrics_skipped"] = _uptake(lesions, reference, index, lflags)
    summary["clinical_columns"], summary["correlations"] = _correlations(patients, lesions, reference, index)
    summary["primary"], summary["exploratory"] = _multiplicity(summary, primary, adjust)
    summary["software"] = {
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scipy": scipy.__version__,
        "statsmodels": statsmodels.__version__,
    }
    return clean(summary)
