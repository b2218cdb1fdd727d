"""Reading and checking the cohort tables before any statistic is computed.

Bad input is one clear :class:`~dualpet.errors.DualpetInputError` naming the table, the
column and the patient: duplicate or empty patient IDs, lesions of a patient missing from
the patients table, detection flags other than 0/1, tracer columns absent or spelt in
another case (which would otherwise skip every analysis and correlate the tracer columns
as clinical variables).
"""

from __future__ import annotations

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
    known = {t.lower() for t in tracers}
    for col in patients.columns:
        head = str(col).split("_", 1)[0]
        if head.lower() in known and head not in tracers:
            raise DualpetInputError(
                f"patients table: column {col!r} starts with a tracer name in another case; "
                f"the tracers are {reference!r} and {index!r} (case-sensitive)"
            )
    return lesions, patients
