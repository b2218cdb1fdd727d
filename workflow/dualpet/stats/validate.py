"""Reading and checking the cohort tables before any statistic is computed.

Bad input is one clear :class:`~dualpet.errors.DualpetInputError` naming the table, the
column and the patient: duplicate or empty patient IDs, a lesion listed twice, lesions of
a patient missing from the patients table, detection flags other than 0/1, tracer columns
absent or spelt in another case (which would otherwise skip every analysis and correlate
the tracer columns as clinical variables), a metric cell that is not a number (``12,5``,
``n/a``: only an empty cell is missing) or out of range (infinite, above
:data:`~dualpet.stats.constants.MAX_METRIC_VALUE` or negative, except a mean: a VOI over
near-zero uptake can average below 0 where the scanner keeps negative voxels), and a clinical number written with a
decimal comma.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from dualpet.errors import DualpetInputError
from dualpet.stats import constants as C


def numbers(series) -> np.ndarray:
    """A column as floats; unparsable cells and +/-inf become NaN."""
    values = pd.to_numeric(pd.Series(series), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    values = np.array(values, dtype=float)
    values[~np.isfinite(values)] = np.nan
    return values


def _ids(frame, name):
    if "patient" not in frame.columns:
        if len(frame) == 0:
            return pd.Series([], dtype=object, index=frame.index)
        raise DualpetInputError(f"{name}: required column 'patient' is missing")
    ids = frame["patient"]
    if ids.isna().any():
        rows = [int(i) + 1 for i in np.flatnonzero(ids.isna().to_numpy())[:5]]
        raise DualpetInputError(f"{name}: empty 'patient' cell in data row(s) {rows}")
    return ids.astype(str).str.strip().astype(object)


def _require_tracer_columns(frame, name, tracers, suffix):
    """``{tracer}_{suffix}`` present for each tracer; a near miss in case is named."""
    lower = {str(c).lower(): str(c) for c in frame.columns}
    for t in tracers:
        want = f"{t}_{suffix}"
        if want in frame.columns:
            continue
        near = lower.get(want.lower())
        hint = (
            f"; it has {near!r}: tracer names are case-sensitive and must match the sample sheet"
            if near
            else f"; its tracer columns: {_tracer_prefixes(frame, suffix) or 'none'}"
        )
        raise DualpetInputError(f"{name}: no column {want!r} for tracer {t!r}{hint}")


def _tracer_prefixes(frame, suffix):
    return ", ".join(sorted({str(c)[: -len(suffix) - 1] for c in frame.columns if str(c).endswith(f"_{suffix}")}))


def flags(frame, column, name) -> np.ndarray:
    """A 0/1 column as 1.0/0.0 (empty cells NaN); any other value is an error."""
    values = numbers(frame[column])
    bad = ~np.isnan(values) & ~np.isin(values, (0.0, 1.0))
    bad |= np.isnan(values) & frame[column].notna().to_numpy()  # text that is not a number
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        who = frame["patient"].iloc[k] if "patient" in frame.columns else f"row {k + 1}"
        raise DualpetInputError(
            f"{name}: column {column!r} must be 0 or 1; patient {who} has "
            f"{frame[column].iloc[k]!r} ({int(bad.sum())} such cell(s))"
        )
    return values


def _cell(frame, k):
    """Where cell ``k`` of ``column`` is, for a message: the patient (and lesion)."""
    where = f"patient {frame['patient'].iloc[k]}" if "patient" in frame.columns else f"data row {k + 1}"
    if "lesion" in frame.columns:
        where += f", lesion {frame['lesion'].iloc[k]}"
    return where


def _check_metric_column(frame, column, metric, name):
    """A metric column: empty (missing) or a finite number in [0, MAX_METRIC_VALUE] (a mean
    from -MAX_METRIC_VALUE: C.MEAN_METRICS)."""
    raw = frame[column]
    parsed = pd.to_numeric(raw, errors="coerce")
    text = raw.astype(object).where(raw.notna(), "").astype(str).str.strip()
    unparsed = (parsed.isna() & (text != "")).to_numpy()  # (a NaN cell is missing: text "")
    if unparsed.any():
        k = int(np.flatnonzero(unparsed)[0])
        raise DualpetInputError(
            f"{name}: column {column!r} has {text.iloc[k]!r} ({_cell(frame, k)}), not a number "
            f"({int(unparsed.sum())} such cell(s)); write numbers with a decimal point and leave a missing value empty"
        )
    values = parsed.to_numpy(dtype=float, na_value=np.nan)
    low = -C.MAX_METRIC_VALUE if metric in C.MEAN_METRICS else 0.0
    bad = ~np.isnan(values) & ~((values >= low) & (values <= C.MAX_METRIC_VALUE))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise DualpetInputError(
            f"{name}: column {column!r} has {float(values[k]):g} ({_cell(frame, k)}), out of range: "
            f"{metric} is a finite number from {low:g} to {C.MAX_METRIC_VALUE:g} ({int(bad.sum())} such cell(s))"
        )


def _check_lesion_ids(lesions, name):
    """No lesion listed twice (the same patient and lesion ID)."""
    if "lesion" not in lesions.columns:
        return
    ids = lesions["lesion"].astype(object).where(lesions["lesion"].notna(), "").astype(str).str.strip()
    pairs = pd.DataFrame({"patient": lesions["patient"].to_numpy(), "lesion": ids.to_numpy()})[ids.to_numpy() != ""]
    dup = pairs[pairs.duplicated()]
    if len(dup):
        twice = sorted({f"{p} {les}" for p, les in dup.itertuples(index=False)})
        raise DualpetInputError(
            f"{name}: lesion(s) listed more than once: {', '.join(twice[:10])} (one row per patient and lesion)"
        )


def _check_clinical_decimal_commas(patients, name, tracers):
    """A clinical cell like ``12,5`` would make its column text and drop it from the correlations."""
    for col in patients.columns:
        if str(col) in C.NON_CLINICAL_COLUMNS or str(col).startswith(tuple(f"{t}_" for t in tracers)):
            continue
        if pd.api.types.is_numeric_dtype(patients[col]) or pd.api.types.is_bool_dtype(patients[col]):
            continue
        text = patients[col].where(patients[col].notna(), "").astype(str).str.strip()
        comma = text.map(lambda v: bool(_DECIMAL_COMMA.fullmatch(v))).to_numpy()
        if comma.any():
            k = int(np.flatnonzero(comma)[0])
            raise DualpetInputError(
                f"{name}: column {col!r} has {text.iloc[k]!r} (patient {patients['patient'].iloc[k]}): write "
                "numbers with a decimal point"
            )


_DECIMAL_COMMA = re.compile(r"[-+]?\d+,\d+")


def excluded_mask(patients):
    """Patients removed from the analysis: ``status`` excluded, or a non-empty ``excluded_reason``."""
    mask = pd.Series(False, index=patients.index)
    if "status" in patients.columns:
        mask |= patients["status"].fillna("").astype(str).str.strip().str.lower().isin(C.EXCLUDED_STATUS)
    if "excluded_reason" in patients.columns:
        mask |= patients["excluded_reason"].fillna("").astype(str).str.strip() != ""
    return mask


def validate(lesions: pd.DataFrame, patients: pd.DataFrame, reference: str, index: str):
    """Checked copies of the two tables (patient IDs as stripped text)."""
    if reference == index:
        raise DualpetInputError(f"reference and index tracer are both {reference!r}")
    lesions, patients = lesions.copy(), patients.copy()
    lesions["patient"] = _ids(lesions, "lesions table")
    patients["patient"] = _ids(patients, "patients table")
    dup = patients["patient"][patients["patient"].duplicated()].unique().tolist()
    if dup:
        raise DualpetInputError(f"patients table: patient(s) listed more than once: {', '.join(map(str, dup[:10]))}")
    orphans = sorted(set(lesions["patient"]) - set(patients["patient"]))
    if orphans:
        raise DualpetInputError(
            f"lesions table: lesions of patient(s) not in the patients table: {', '.join(map(str, orphans[:10]))}"
        )
    tracers = (reference, index)
    if (~excluded_mask(patients)).any():
        _require_tracer_columns(patients, "patients table", tracers, "positive")
        for t in tracers:
            flags(patients, f"{t}_positive", "patients table")
    else:  # every patient excluded (e.g. all refused at inspection): no tracer columns to read
        for t in tracers:
            if f"{t}_positive" not in patients.columns:
                patients[f"{t}_positive"] = np.nan
    if len(lesions):
        _require_tracer_columns(lesions, "lesions table", tracers, "detected")
        for t in tracers:
            flags(lesions, f"{t}_detected", "lesions table")
        _check_lesion_ids(lesions, "lesions table")
        for t, metric in ((t, m) for t in tracers for m in C.METRICS):
            if f"{t}_{metric}" in lesions.columns:
                _check_metric_column(lesions, f"{t}_{metric}", metric, "lesions table")
    _check_clinical_decimal_commas(patients, "patients table", tracers)
    known = {t.lower() for t in tracers}
    for col in patients.columns:
        head = str(col).split("_", 1)[0]
        if head.lower() in known and head not in tracers:
            raise DualpetInputError(
                f"patients table: column {col!r} starts with a tracer name in another case; "
                f"the tracers are {reference!r} and {index!r} (case-sensitive)"
            )
    return lesions, patients
