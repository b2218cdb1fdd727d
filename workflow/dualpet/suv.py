"""SUVbw from PET DICOM headers.

SUVbw = activity concentration [Bq/mL] x body weight [g] / injected activity [Bq] decayed
to the time the voxel values refer to. :func:`suv_factor` returns the factor that turns
rescaled voxel values into SUVbw, together with every input and which rule chose it,
for the JSON sidecar. No identifying attribute and no absolute date goes into it.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from dualpet.errors import DualpetInputError

#: Half-lives (s) by radionuclide, used when RadionuclideHalfLife is missing.
HALF_LIFE_S = {"F-18": 6586.2, "Ga-68": 4062.6, "C-11": 1223.4, "N-13": 597.9, "Cu-64": 45720.0, "Zr-89": 282240.0}
#: Radionuclide codes (CID 4020, SNOMED-RT and SNOMED CT) and code meanings -> nuclide.
NUCLIDE_CODES = {
    "C-111A1": "F-18", "77004003": "F-18",
    "C-131A3": "Ga-68", "C-131A2": "Ga-68", "1156958003": "Ga-68",
    "C-105A1": "C-11", "C-107A1": "N-13", "C-127A2": "Cu-64", "C-B1031": "Zr-89",
}  # fmt: skip


def _fail(msg, attribute, where):
    raise DualpetInputError(f"{where}: {msg}", attribute=attribute)


def parse_da_tm(date, time):
    """DICOM DA + TM strings -> datetime (fractional seconds kept)."""
    date, time = str(date).strip(), str(time).strip().replace(":", "")
    if not date or not time:
        return None
    hh, mm = int(time[0:2]), int(time[2:4] or 0)
    ss = float(time[4:] or 0)
    base = dt.datetime.strptime(date[:8], "%Y%m%d")
    return base + dt.timedelta(hours=hh, minutes=mm, seconds=ss)


def parse_dt(value):
    """DICOM DT string -> naive datetime (any UTC offset suffix is dropped)."""
    value = str(value).strip()
    for sep in ("+", "-"):
        if sep in value[8:]:
            value = value[: 8 + value[8:].index(sep)]
    if len(value) < 12:
        return None
    return parse_da_tm(value[:8], value[8:])


def _radionuclide(item):
    for code in item.get("RadionuclideCodeSequence", []) or []:
        value = str(code.get("CodeValue", ""))
        if value in NUCLIDE_CODES:
            return NUCLIDE_CODES[value]
        meaning = str(code.get("CodeMeaning", "")).replace("^", "").lower()
        for nuclide in HALF_LIFE_S:
            element, mass = nuclide.split("-")
            if mass in meaning and element.lower() in meaning.replace(mass, ""):
                return nuclide
    return None


def suv_factor(datasets, where="PET series"):
    """SUVbw factor for a PET series with Units BQML.

    Parameters
    ----------
    datasets : list of pydicom.Dataset
        The series' slices (headers; pixel data not needed).
    where : str
        Names the patient/series in error messages.

    Returns
    -------
    dict
        ``factor`` (SUVbw per Bq/mL, i.e. g/Bq) and the inputs and rules behind it.
    """
    ds = datasets[0]
    units = str(ds.get("Units", "")).upper()
    if units != "BQML":
        _fail(f"Units '{units}' not supported (supported: BQML)", "Units (0054,1001)", where)
    intercepts = {float(d.get("RescaleIntercept", 0) or 0) for d in datasets}
    if intercepts != {0.0}:
        _fail(f"RescaleIntercept must be 0 for PET, found {sorted(intercepts)}", "RescaleIntercept (0028,1052)", where)

    weight = float(ds.get("PatientWeight", 0) or 0)
    if weight <= 0:
        _fail("patient weight missing or 0: SUVbw needs it", "PatientWeight (0010,1030)", where)
    weight_rule = "kg"
    if weight > 1000:  # recorded in grams
        weight, weight_rule = weight / 1000.0, "grams_converted"

    seq = ds.get("RadiopharmaceuticalInformationSequence")
    if not seq:
        _fail("missing", "RadiopharmaceuticalInformationSequence (0054,0016)", where)
    item = seq[0]
    dose = float(item.get("RadionuclideTotalDose", 0) or 0)
    if dose <= 0:
        _fail("injected dose missing or 0", "RadionuclideTotalDose (0018,1074)", where)
    dose_rule = "Bq"
    if dose < 1e5:  # no PET injection is below 0.1 MBq: the value is in MBq
        dose, dose_rule = dose * 1e6, "MBq_converted"

    nuclide = _radionuclide(item)
    half_life = float(item.get("RadionuclideHalfLife", 0) or 0)
    half_life_rule = "header"
    if half_life <= 0:
        if nuclide is None:
            _fail("half-life missing and radionuclide unknown", "RadionuclideHalfLife (0018,1075)", where)
        half_life, half_life_rule = HALF_LIFE_S[nuclide], "radionuclide_code"

    decay = str(ds.get("DecayCorrection", "")).upper()
    series_dt = parse_da_tm(ds.get("SeriesDate", ""), ds.get("SeriesTime", ""))
    acq = [parse_da_tm(d.get("AcquisitionDate", ""), d.get("AcquisitionTime", "")) for d in datasets]
    acq = [a for a in acq if a is not None]
    first_acq = min(acq) if acq else None

    injection = None
    injection_rule = None
    if item.get("RadiopharmaceuticalStartDateTime"):
        injection, injection_rule = parse_dt(item.RadiopharmaceuticalStartDateTime), "start_datetime"
    if injection is None and item.get("RadiopharmaceuticalStartTime"):
        day = ds.get("SeriesDate", "") or ds.get("AcquisitionDate", "") or ds.get("StudyDate", "")
        injection, injection_rule = parse_da_tm(day, item.RadiopharmaceuticalStartTime), "start_time_on_series_date"
        scan = first_acq or series_dt
        if injection is not None and scan is not None and injection > scan:
            injection -= dt.timedelta(days=1)  # injected before midnight, scanned after
            injection_rule = "start_time_previous_day"

    if decay == "ADMIN":
        reference, reference_rule, dose_ref = injection, "injection (decay corrected to administration)", dose
    elif decay == "START":
        if injection is None:
            _fail("injection time missing", "RadiopharmaceuticalStartTime (0018,1072)", where)
        if series_dt is not None and (first_acq is None or series_dt <= first_acq):
            reference, reference_rule = series_dt, "series_time"
        elif first_acq is not None:
            reference, reference_rule = first_acq, "earliest_acquisition_time"
        else:
            _fail("no series or acquisition time", "SeriesTime (0008,0031)", where)
        elapsed = (reference - injection).total_seconds()
        if elapsed < 0:
            _fail(f"injection {-elapsed:.0f} s after the reference time", "RadiopharmaceuticalStartTime (0018,1072)", where)
        dose_ref = dose * 2.0 ** (-elapsed / half_life)
    else:
        _fail(f"DecayCorrection '{decay}' not supported (supported: START, ADMIN)", "DecayCorrection (0054,1102)", where)

    uptake = (reference - injection).total_seconds() if (reference and injection) else None
    return {
        "units_in": units,
        "decay_correction": decay,
        "radionuclide": nuclide,
        "half_life_s": half_life,
        "half_life_source": half_life_rule,
        "injected_dose_bq": dose,
        "dose_source": dose_rule,
        "injection_time_source": injection_rule,
        "reference_time_source": reference_rule,
        "injection_to_reference_s": uptake,
        "dose_at_reference_time_bq": dose_ref,
        "weight_kg": weight,
        "weight_source": weight_rule,
        "factor": weight * 1000.0 / dose_ref,
        "factor_units": "SUVbw per Bq/mL (g/Bq)",
    }


def to_suv(values_bqml, factor):
    """Rescaled PET values (Bq/mL) -> SUVbw (float32)."""
    return (np.asarray(values_bqml, dtype=np.float64) * factor).astype(np.float32)
