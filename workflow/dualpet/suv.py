"""SUVbw from PET DICOM headers (QIBA/IBSI rules).

SUVbw = activity concentration [Bq/mL] x body weight [g] / injected activity [Bq] decayed
to the time the voxel values refer to. :func:`suv_factors` returns, per slice, the factor
that turns rescaled voxel values (stored x RescaleSlope) into SUVbw, and a sidecar dict
with every input and which rule chose it. No identifying attribute and no absolute date
goes into the sidecar (only durations).

Rules, in order:

- RescaleIntercept must be 0; RescaleSlope is applied per slice by the reader.
- Units BQML: Bq/mL. GML: already normalised; SUVType BW (or empty) is SUVbw, LBM (Morgan),
  LBMJAMES128, LBMJANMA (Janmahasatian), IBW (Sugawara) are mass normalisations
  (SUVbw = value x weight / mass), BSA is an area normalisation like CM2ML (SUVbw = value x
  weight[g] / BSA[cm2], Du Bois). CNTS (Philips): private (7053,1000) SUV Scale Factor gives
  SUVbw, else (7053,1009) Activity Concentration Scale Factor gives Bq/mL. Others: refused.
- Weight PatientWeight in kg (> 1000: grams). Dose RadionuclideTotalDose in Bq (< 1e5: MBq).
- DecayCorrection ADMIN: no decay. START: decay to the reference time T = SeriesDate/Time if
  not after the earliest acquisition; else the GE private scan datetime (0009,100D) of
  GEMS_PETD_01; else back-computed from AcquisitionTime, FrameReferenceTime and
  ActualFrameDuration; else the earliest acquisition time. NONE: every slice is
  decay-corrected to the earliest acquisition start from its own AcquisitionTime and
  frame duration (decay during the frame included), the dose to that same time.
- Injection: RadiopharmaceuticalStartDateTime, else RadiopharmaceuticalStartTime on the
  series date (the previous day if that puts it after the scan).
- Half-life: RadionuclideHalfLife, else from the radionuclide code.
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np

from dualpet.errors import DualpetInputError

#: Half-lives (s) by radionuclide, used when RadionuclideHalfLife is missing.
HALF_LIFE_S = {"F-18": 6586.2, "Ga-68": 4062.6, "C-11": 1223.4, "N-13": 597.9, "Cu-64": 45720.0, "Zr-89": 282240.0}
#: Radionuclide codes (CID 4020, SNOMED-RT and SNOMED CT) -> nuclide.
NUCLIDE_CODES = {
    "C-111A1": "F-18", "77004003": "F-18",
    "C-131A3": "Ga-68",
    "C-105A1": "C-11", "C-107A1": "N-13", "C-127A2": "Cu-64", "C-168A4": "Zr-89",
}  # fmt: skip
#: Element names in CodeMeaning (e.g. "^68^Gallium") -> symbol.
ELEMENTS = {"fluorine": "F", "gallium": "Ga", "carbon": "C", "nitrogen": "N", "copper": "Cu", "zirconium": "Zr"}
PHILIPS_CREATOR = "Philips PET Private Group"
GE_CREATOR = "GEMS_PETD_01"


def _fail(msg, attribute, where):
    raise DualpetInputError(f"{where}: {msg}", attribute=attribute)


def parse_da_tm(date, time):
    """DICOM DA + TM strings -> datetime (fractional seconds kept), or None."""
    date, time = str(date or "").strip(), str(time or "").strip().replace(":", "")
    if len(date) < 8 or len(time) < 2:
        return None
    hh, mm = int(time[0:2]), int(time[2:4] or 0)
    ss = float(time[4:] or 0)
    return dt.datetime.strptime(date[:8], "%Y%m%d") + dt.timedelta(hours=hh, minutes=mm, seconds=ss)


def parse_dt(value):
    """DICOM DT string -> naive datetime (any UTC offset suffix is dropped), or None."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "ignore")
    value = str(value or "").strip().rstrip("\x00 ")
    for sep in ("+", "-"):
        if sep in value[8:]:
            value = value[: 8 + value[8:].index(sep)]
    if len(value) < 12:
        return None
    return parse_da_tm(value[:8], value[8:])


def _private(ds, group, element, creator):
    """Value of a private element by creator (falls back to the usual block 0x10)."""
    try:
        value = ds.get_private_item(group, element, creator).value
    except KeyError:
        elem = ds.get((group, 0x1000 | element))
        value = elem.value if elem is not None else None
    if isinstance(value, bytes):
        value = value.decode("ascii", "ignore").strip("\x00 ")
    return value


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def radionuclide(item):
    """Nuclide name ('F-18', 'Ga-68', ...) from the RadionuclideCodeSequence, or None."""
    for code in item.get("RadionuclideCodeSequence", []) or []:
        value = str(code.get("CodeValue", ""))
        if value in NUCLIDE_CODES:
            return NUCLIDE_CODES[value]
        meaning = re.sub(r"[^a-z0-9]", "", str(code.get("CodeMeaning", "")).lower())
        mass = re.search(r"\d+", meaning)
        for name, symbol in ELEMENTS.items():
            if name in meaning and mass and f"{symbol}-{mass.group()}" in HALF_LIFE_S:
                return f"{symbol}-{mass.group()}"
    return None


# --- body-size normalisations (weight kg, height m) ------------------------------------


def _by_sex(sex, male, female):
    if sex == "M":
        return male
    if sex == "F":
        return female
    return (male + female) / 2.0  # "O" or unknown: mean of both (domain rule)


def lbm_james128(weight, height, sex):
    """Lean body mass (kg), James 1976: 1.10 W - 128 (W/H)^2 (M), 1.07 W - 148 (W/H)^2 (F), H in cm."""
    h = height * 100.0
    return _by_sex(sex, 1.10 * weight - 128.0 * (weight / h) ** 2, 1.07 * weight - 148.0 * (weight / h) ** 2)


def lbm_morgan(weight, height, sex):
    """Lean body mass (kg) of plain SUVType LBM: Morgan & Bray (M: 120), James (F: 148)."""
    h = height * 100.0
    return _by_sex(sex, 1.10 * weight - 120.0 * (weight / h) ** 2, 1.07 * weight - 148.0 * (weight / h) ** 2)


def lbm_janmahasatian(weight, height, sex):
    """Lean body mass (kg), Janmahasatian 2005: 9270 W / (6680 + 216 BMI) (M), (8780 + 244 BMI) (F)."""
    bmi = weight / height**2
    return _by_sex(sex, 9270.0 * weight / (6680.0 + 216.0 * bmi), 9270.0 * weight / (8780.0 + 244.0 * bmi))


def ibw_sugawara(weight, height, sex):
    """Ideal body weight (kg), Sugawara 1999: 48.0 + 1.06 (H - 152) (M), 45.5 + 0.91 (H - 152) (F), H in cm."""
    h = height * 100.0
    return _by_sex(sex, 48.0 + 1.06 * (h - 152.0), 45.5 + 0.91 * (h - 152.0))


def bsa_dubois_cm2(weight, height, sex=None):
    """Body surface area (cm2), Du Bois: 71.84 W^0.425 H^0.725, H in cm."""
    return 71.84 * weight**0.425 * (height * 100.0) ** 0.725


MASS_NORMALISATIONS = {"LBM": lbm_morgan, "LBMJAMES128": lbm_james128, "LBMJANMA": lbm_janmahasatian, "IBW": ibw_sugawara}


def _patient_size(ds):
    """(height m, sex) or (None, sex); PatientSize may be recorded in cm."""
    height = _float(ds.get("PatientSize"))
    if height is not None and height > 3.0:  # recorded in cm
        height /= 100.0
    sex = str(ds.get("PatientSex", "") or "").upper()[:1] or "O"
    return (height if height and height > 0 else None), sex


def other_normalisations(weight, height, sex):
    """Ratios SUVx / SUVbw of the other normalisations (for the sidecar), or a reason."""
    if not height:
        return {"available": False, "reason": "PatientSize (0010,1020) missing"}
    out = {"available": True, "sex_used": sex if sex in ("M", "F") else "O (mean of male and female)"}
    for name, func in (("lbm_janmahasatian", lbm_janmahasatian), ("lbm_james128", lbm_james128), ("ibw_sugawara", ibw_sugawara)):
        mass = func(weight, height, sex)
        out[f"{name}_kg"] = mass
        out[f"suv_{name}_per_suvbw"] = mass / weight
    bsa = bsa_dubois_cm2(weight, height)
    out["bsa_dubois_m2"] = bsa / 1e4
    out["suv_bsa_per_suvbw"] = bsa / (weight * 1000.0)  # (cm2/mL) per (g/mL)
    return out


# --- times ------------------------------------------------------------------------------


def _frame_mid(duration_s, lam):
    """Decay-weighted time within a frame (s after its start)."""
    if duration_s <= 0:
        return 0.0
    x = lam * duration_s
    return np.log(x / (1.0 - np.exp(-x))) / lam


def _acquisitions(datasets):
    out = []
    for d in datasets:
        t = parse_da_tm(d.get("AcquisitionDate", "") or d.get("SeriesDate", ""), d.get("AcquisitionTime", ""))
        out.append(t)
    return out


def _reference_time(ds, datasets, acq, lam, where):
    """Reference time T of DecayCorrection START and the rule that gave it."""
    series = parse_da_tm(ds.get("SeriesDate", ""), ds.get("SeriesTime", ""))
    known = [a for a in acq if a is not None]
    first = min(known) if known else None
    if series is not None and (first is None or series <= first):
        return series, "series_time"
    ge = parse_dt(_private(ds, 0x0009, 0x0D, GE_CREATOR))
    if ge is not None:
        return ge, "ge_private_scan_datetime"
    # back-computed: T = acquisition start + decay-weighted mid-frame - FrameReferenceTime
    starts = []
    for d, a in zip(datasets, acq):
        frt, dur = _float(d.get("FrameReferenceTime")), _float(d.get("ActualFrameDuration"))
        if a is None or not frt or not dur or frt <= 0 or dur <= 0:  # QIBA: both must be > 0
            starts = []
            break
        starts.append(a + dt.timedelta(seconds=_frame_mid(dur / 1000.0, lam) - frt / 1000.0))
    if starts:
        spread = (max(starts) - min(starts)).total_seconds()
        if spread <= 2.0:
            return min(starts), "frame_reference_time"
    if first is not None:
        return first, "earliest_acquisition_time"
    _fail("no usable series or acquisition time", "SeriesTime (0008,0031)", where)


def _injection(ds, item, scan, where):
    if item.get("RadiopharmaceuticalStartDateTime"):
        inj = parse_dt(item.RadiopharmaceuticalStartDateTime)
        if inj is not None:
            return inj, "start_datetime"
    if item.get("RadiopharmaceuticalStartTime"):
        day = ds.get("SeriesDate", "") or ds.get("AcquisitionDate", "") or ds.get("StudyDate", "")
        inj = parse_da_tm(day, item.RadiopharmaceuticalStartTime)
        if inj is not None:
            if scan is not None and inj > scan:
                return inj - dt.timedelta(days=1), "start_time_previous_day"
            return inj, "start_time_on_series_date"
    _fail("injection time missing", "RadiopharmaceuticalStartTime (0018,1072)", where)


# --- the factors ----------------------------------------------------------------------------


def suv_factors(datasets, where="PET series"):
    """Per-slice factors turning rescaled PET values into SUVbw, and the sidecar.

    Parameters
    ----------
    datasets : list of pydicom.Dataset
        The series' slices in volume order (k), headers only.
    where : str
        Names the patient/series in error messages.

    Returns
    -------
    factors : ndarray (K,)
        SUVbw = (stored x RescaleSlope) x factors[k].
    sidecar : dict
        Every input, derived factor and the rule that chose it.
    """
    ds = datasets[0]
    units = str(ds.get("Units", "") or "").upper()
    intercepts = {_float(d.get("RescaleIntercept", 0)) or 0.0 for d in datasets}
    if intercepts != {0.0}:
        _fail(f"RescaleIntercept must be 0 for PET, found {sorted(intercepts)}", "RescaleIntercept (0028,1052)", where)

    weight = _float(ds.get("PatientWeight"))
    if not weight or weight <= 0:
        _fail("patient weight missing or 0: SUVbw needs it", "PatientWeight (0010,1030)", where)
    weight_rule = "kg"
    if weight > 1000:
        weight, weight_rule = weight / 1000.0, "grams_converted"
    height, sex = _patient_size(ds)
    side = {"units_in": units, "weight_kg": weight, "weight_source": weight_rule}
    if height:
        side["height_m"] = height
    side["sex"] = sex
    side["other_normalisations"] = other_normalisations(weight, height, sex)
    nk = len(datasets)

    if units in ("GML", "CM2ML"):
        suv_type = str(ds.get("SUVType", "") or "BW").upper() if units == "GML" else "BSA"
        side["suv_type"] = suv_type
        if suv_type == "BW":
            factor = 1.0
        else:
            if height is None:
                _fail(f"SUVType {suv_type} needs the patient's height", "PatientSize (0010,1020)", where)
            if suv_type in MASS_NORMALISATIONS:
                mass = MASS_NORMALISATIONS[suv_type](weight, height, sex)
                side["normalisation_mass_kg"] = mass
                factor = weight / mass
            elif suv_type == "BSA":
                bsa = bsa_dubois_cm2(weight, height)
                side["bsa_cm2"] = bsa
                factor = weight * 1000.0 / bsa
            else:
                _fail(f"SUVType '{suv_type}' not supported", "SUVType (0054,1006)", where)
        side.update({"factor_source": f"{units}/{suv_type} back-computed to SUVbw", "factor": factor})
        return np.full(nk, factor), _finish(side)

    if units == "CNTS":
        suv_scale = [_float(_private(d, 0x7053, 0x00, PHILIPS_CREATOR)) for d in datasets]
        if all(v is not None for v in suv_scale):
            if any(v <= 0 for v in suv_scale):
                _fail("Philips SUV Scale Factor is 0", "(7053,1000) SUV Scale Factor", where)
            side.update({"factor_source": "philips_suv_scale_factor", "factor": suv_scale[0]})
            return np.array(suv_scale, float), _finish(side)
        acf = [_float(_private(d, 0x7053, 0x09, PHILIPS_CREATOR)) for d in datasets]
        if not all(v is not None for v in acf) or any(v <= 0 for v in acf):
            _fail(
                "Units CNTS need Philips private (7053,1000) SUV Scale Factor or (7053,1009) Activity "
                "Concentration Scale Factor (missing or 0)",
                "Units (0054,1001)",
                where,
            )
        to_bqml = np.array(acf, float)
        side["activity_concentration_scale_factor"] = float(acf[0])
    elif units == "BQML":
        to_bqml = np.ones(nk)
    else:
        _fail(f"Units '{units}' cannot be converted to SUV (supported: BQML, GML, CM2ML, CNTS)", "Units (0054,1001)", where)

    seq = ds.get("RadiopharmaceuticalInformationSequence")
    if not seq:
        _fail("missing", "RadiopharmaceuticalInformationSequence (0054,0016)", where)
    item = seq[0]
    dose = _float(item.get("RadionuclideTotalDose"))
    if not dose or dose <= 0:
        _fail("injected dose missing or 0", "RadionuclideTotalDose (0018,1074)", where)
    dose_rule = "Bq"
    if dose < 1e5:  # no PET injection is below 0.1 MBq: the value is in MBq
        dose, dose_rule = dose * 1e6, "MBq_converted"
    nuclide = radionuclide(item)
    half_life = _float(item.get("RadionuclideHalfLife"))
    half_life_rule = "header"
    if not half_life or half_life <= 0:
        if nuclide is None:
            _fail("half-life missing and radionuclide code unknown", "RadionuclideHalfLife (0018,1075)", where)
        half_life, half_life_rule = HALF_LIFE_S[nuclide], "radionuclide_code"
    lam = np.log(2.0) / half_life

    decay = str(ds.get("DecayCorrection", "") or "").upper()
    acq = _acquisitions(datasets)
    known = [a for a in acq if a is not None]
    first = min(known) if known else parse_da_tm(ds.get("SeriesDate", ""), ds.get("SeriesTime", ""))
    injection, injection_rule = _injection(ds, item, first, where)
    per_slice = np.ones(nk)
    if decay == "ADMIN":
        reference, reference_rule = injection, "injection (images decay-corrected to administration)"
    elif decay == "START":
        reference, reference_rule = _reference_time(ds, datasets, acq, lam, where)
    elif decay == "NONE":
        if any(a is None for a in acq):
            _fail("DecayCorrection NONE needs every slice's acquisition time", "AcquisitionTime (0008,0032)", where)
        reference, reference_rule = min(acq), "earliest_acquisition_time (per-slice decay correction)"
        for k, (d, a) in enumerate(zip(datasets, acq)):
            dur = (_float(d.get("ActualFrameDuration")) or 0.0) / 1000.0
            # activity averaged over the frame -> activity at the frame start -> at the reference
            during = lam * dur / (1.0 - np.exp(-lam * dur)) if dur > 0 else 1.0
            per_slice[k] = 2.0 ** ((a - reference).total_seconds() / half_life) * during
        side["frame_durations_used"] = bool(any(_float(d.get("ActualFrameDuration")) for d in datasets))
    else:
        _fail(f"DecayCorrection '{decay}' not supported (START, ADMIN, NONE)", "DecayCorrection (0054,1102)", where)

    elapsed = (reference - injection).total_seconds()
    if elapsed < 0:
        _fail(f"injection {-elapsed:.0f} s after the image reference time", "RadiopharmaceuticalStartTime (0018,1072)", where)
    dose_ref = dose * 2.0 ** (-elapsed / half_life)
    factor = weight * 1000.0 / dose_ref
    side.update(
        {
            "decay_correction": decay,
            "radionuclide": nuclide,
            "half_life_s": half_life,
            "half_life_source": half_life_rule,
            "injected_dose_bq": dose,
            "dose_source": dose_rule,
            "injection_time_source": injection_rule,
            "reference_time_source": reference_rule,
            "injection_to_reference_s": elapsed,
            "dose_at_reference_time_bq": dose_ref,
            "factor_source": "activity_concentration" if units == "BQML" else "philips_activity_concentration_scale_factor",
            "factor": factor,
        }
    )
    if decay == "NONE":
        side["slice_decay_factor_range"] = [float(per_slice.min()), float(per_slice.max())]
    return to_bqml * per_slice * factor, _finish(side)


def _finish(side):
    side["factor_units"] = "SUVbw per rescaled pixel value"
    return side


def suv_factor(datasets, where="PET series"):
    """Sidecar of :func:`suv_factors` (scalar ``factor``: the factor of the first slice)."""
    factors, side = suv_factors(datasets, where)
    return {**side, "factor": float(factors[0])}
