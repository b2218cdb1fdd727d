"""SUVbw from PET DICOM headers (QIBA pseudo-code and the IBSI SUV computation manual).

SUVbw = activity concentration [Bq/mL] x body weight [g] / injected activity [Bq] decayed
to the time the voxel values refer to. :func:`suv_factors` returns, per slice, the factor
that turns rescaled voxel values (stored x RescaleSlope) into SUVbw, and a sidecar dict
with every input and which rule chose it. No identifying attribute and no absolute date
goes into the sidecar (only durations).

Rules, in order:

- RescaleIntercept must be 0; RescaleSlope is applied per slice by the reader.
- Units BQML: Bq/mL. GML: already normalised; SUVType BW (or empty) is SUVbw, LBM (Morgan),
  LBMJAMES128, LBMJANMA (Janmahasatian), IBW (Sugawara) are mass normalisations
  (SUVbw = value x weight / mass; PatientSex M, F or O (mean of both) and PatientSize
  needed), BSA and Units CM2ML are area normalisations (SUVbw = value x weight[g] /
  BSA[cm2], Du Bois). CNTS (Philips): private (7053,1000) SUV Scale Factor gives SUVbw,
  (7053,1009) Activity Concentration Scale Factor gives Bq/mL (preferred when
  DecayCorrection is NONE, whose per-slice decay it keeps explicit). Others: refused
  (see :func:`quantitative_units`).
- Weight PatientWeight in kg (>= 1000: grams), needed only where the rule uses it.
  Dose RadionuclideTotalDose in Bq (< 1e5: MBq).
- DecayCorrection ADMIN: no decay. START: decay to the reference time T = SeriesDate/Time
  if not after the earliest acquisition; else the vendor's private decay reference
  (Siemens (0071,1022), GE (0009,100D)); else back-computed from each slice's
  AcquisitionTime and FrameReferenceTime (GE: T = acquisition - FrameReferenceTime;
  others: T = acquisition + decay-weighted mid-frame - FrameReferenceTime, which needs
  ActualFrameDuration); else the earliest acquisition time. NONE: every slice is
  decay-corrected to the earliest acquisition start from its own AcquisitionTime and
  ActualFrameDuration (decay during the frame included), the dose to that same time.
- Injection: RadiopharmaceuticalStartDateTime, unless it implies an implausible uptake
  time (date shifted by de-identification); then, like RadiopharmaceuticalStartTime, the
  time of day on the scan date (the previous day if that puts it after the scan). A time
  of day alone is refused for nuclides whose uptake may exceed a day (half-life >= 11.5 h).
- Half-life: RadionuclideHalfLife, else from the radionuclide code.
- Acquisition dates that differ from the series date by more than a day (shifted by
  de-identification) are replaced by the series date (times of day kept).
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
    "C-111A1": "F-18",
    "77004003": "F-18",
    "C-131A3": "Ga-68",
    "C-105A1": "C-11",
    "C-107A1": "N-13",
    "C-127A2": "Cu-64",
    "C-168A4": "Zr-89",
}
#: Element names in CodeMeaning (e.g. "^68^Gallium") -> symbol.
ELEMENTS = {"fluorine": "F", "gallium": "Ga", "carbon": "C", "nitrogen": "N", "copper": "Cu", "zirconium": "Zr"}
PHILIPS_CREATOR = "Philips PET Private Group"
GE_CREATOR = "GEMS_PETD_01"
SIEMENS_CREATOR = "SIEMENS MED PT"
#: Units whose values are quantitative (can become SUVbw); CNTS only with a Philips factor.
QUANTITATIVE_UNITS = ("BQML", "GML", "CM2ML", "CNTS")
#: Weight (kg) at or above which PatientWeight is taken to be in grams.
GRAMS_FROM = 1000.0
#: Dose (Bq) below which RadionuclideTotalDose is taken to be in MBq (no PET injection is
#: below 0.1 MBq, none above 100 GBq).
MBQ_BELOW = 1e5
#: How far (s) a vendor's private scan-start datetime may lie from the first acquisition.
PRIVATE_START_TOLERANCE_S = 2 * 3600.0
#: Half-life (s) from which uptake may exceed a day: a time of day alone is ambiguous.
DAY_AMBIGUOUS_HALF_LIFE_S = 41400.0
#: Plausible uptake times (s, image reference time - injection): up to a day for shorter-
#: lived nuclides, up to two weeks for longer-lived ones (Zr-89, Cu-64, I-124 imaging days
#: after injection); the scan may appear up to an hour "before" injection (clock skew).
PLAUSIBLE_UPTAKE_S = {"short": (-3600.0, 86400.0), "long": (-3600.0, 14 * 86400.0)}


def plausible_uptake(half_life):
    """(lowest, highest) plausible uptake time (s) for a nuclide of this half-life."""
    return PLAUSIBLE_UPTAKE_S["long" if half_life >= DAY_AMBIGUOUS_HALF_LIFE_S else "short"]


def _fail(msg, attribute, where):
    raise DualpetInputError(f"{where}: {msg}", attribute=attribute)


def parse_da_tm(date, time):
    """DICOM DA + TM strings -> datetime (fractional seconds kept), or None."""
    date, time = str(date or "").strip(), str(time or "").strip().replace(":", "")
    if len(date) < 8 or len(time) < 2:
        return None
    try:
        hh, mm = int(time[0:2]), int(time[2:4] or 0)
        ss = float(time[4:] or 0)
        return dt.datetime.strptime(date[:8], "%Y%m%d") + dt.timedelta(hours=hh, minutes=mm, seconds=ss)
    except ValueError:
        return None


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


def _vendor(ds):
    """'GE', 'SIEMENS', 'PHILIPS' or '' from Manufacturer (case-insensitive words)."""
    maker = str(ds.get("Manufacturer", "") or "").upper()
    words = set(re.split(r"[^A-Z]+", maker))
    if words & {"GE", "GEMS"} or "GENERAL ELECTRIC" in maker:
        return "GE"
    if "SIEMENS" in maker or words & {"CPS", "CTI"}:
        return "SIEMENS"
    if "PHILIPS" in maker:
        return "PHILIPS"
    return ""


def philips_factors(ds):
    """(SUV Scale Factor, Activity Concentration Scale Factor) of one slice; None if absent or <= 0."""
    suv = _float(_private(ds, 0x7053, 0x00, PHILIPS_CREATOR))
    acf = _float(_private(ds, 0x7053, 0x09, PHILIPS_CREATOR))
    return (suv if suv and suv > 0 else None), (acf if acf and acf > 0 else None)


def quantitative_units(ds):
    """Whether a PET slice's values can become SUVbw, and why not: (bool, reason or '')."""
    units = str(ds.get("Units", "") or "").strip().upper()
    if not units:
        return False, "Units (0054,1001) missing"
    if units not in QUANTITATIVE_UNITS:
        return False, f"Units {units} are not quantitative"
    if units == "CNTS" and philips_factors(ds) == (None, None):
        return False, (
            "Units CNTS without a Philips SUV Scale Factor (7053,1000) or Activity Concentration Scale "
            "Factor (7053,1009)"
        )
    return True, ""


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
    return (male + female) / 2.0  # "O": mean of both (QIBA/IBSI: no consensus, mean is reasonable)


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
    """Body surface area (cm2), Du Bois 1916: 71.84 W^0.425 H^0.725 (W kg, H cm).

    The formula of the DICOM Units CM2ML, the IBSI SUV manual and the vendors' SUVbsa.
    """
    return 71.84 * weight**0.425 * (height * 100.0) ** 0.725


MASS_NORMALISATIONS = {
    "LBM": lbm_morgan,
    "LBMJAMES128": lbm_james128,
    "LBMJANMA": lbm_janmahasatian,
    "IBW": ibw_sugawara,
}


def _patient_size(ds):
    """(height m or None, sex 'M'/'F'/'O' or None): PatientSize may be recorded in cm."""
    height = _float(ds.get("PatientSize"))
    if height is not None and height > 3.0:  # recorded in cm
        height /= 100.0
    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    return (height if height and height > 0 else None), (sex if sex in ("M", "F", "O") else None)


def other_normalisations(weight, height, sex):
    """Ratios SUVx / SUVbw of the other normalisations (for the sidecar), or a reason."""
    if not weight:
        return {"available": False, "reason": "PatientWeight (0010,1030) missing"}
    if not height:
        return {"available": False, "reason": "PatientSize (0010,1020) missing"}
    out = {"available": True}
    bsa = bsa_dubois_cm2(weight, height)
    out["bsa_dubois_m2"] = bsa / 1e4
    out["suv_bsa_per_suvbw"] = bsa / (weight * 1000.0)  # (cm2/mL) per (g/mL)
    if sex is None:
        out["mass_normalisations"] = "PatientSex (0010,0040) missing or not M/F/O"
        return out
    out["sex_used"] = sex if sex in ("M", "F") else "O (mean of male and female)"
    for name, func in (
        ("lbm_janmahasatian", lbm_janmahasatian),
        ("lbm_james128", lbm_james128),
        ("ibw_sugawara", ibw_sugawara),
    ):
        mass = func(weight, height, sex)
        out[f"{name}_kg"] = mass
        out[f"suv_{name}_per_suvbw"] = mass / weight
    return out


# --- times ------------------------------------------------------------------------------


def _frame_mid(duration_s, lam):
    """Decay-weighted time within a frame (s after its start)."""
    if duration_s <= 0:
        return 0.0
    x = lam * duration_s
    return np.log(x / (1.0 - np.exp(-x))) / lam


def _acquisitions(datasets, ds):
    """Each slice's acquisition start, and whether any AcquisitionDate was replaced.

    An AcquisitionDate more than a day and a half from both the StudyDate and the
    SeriesDate was shifted by de-identification: the time of day is kept on the series
    date (the next or previous day when that is closer, for scans across midnight). A date
    that agrees with either is kept: series reconstructed again days later carry the
    reconstruction's SeriesDate, and studies imaged over several days (long-lived
    nuclides) the first day's StudyDate.
    """
    study = parse_da_tm(ds.get("StudyDate", ""), "120000")
    series = parse_da_tm(ds.get("SeriesDate", ""), ds.get("SeriesTime", "") or "120000")
    anchors = [a for a in (study, series) if a is not None]
    out, replaced = [], False
    for d in datasets:
        time = d.get("AcquisitionTime", "")
        t = parse_da_tm(d.get("AcquisitionDate", "") or d.get("SeriesDate", ""), time)
        if t is not None and anchors and all(abs((t - a).total_seconds()) > 1.5 * 86400.0 for a in anchors):
            anchor = series or study
            on_day = parse_da_tm(anchor.strftime("%Y%m%d"), time)
            t = min(
                (on_day + dt.timedelta(days=k) for k in (-1, 0, 1)), key=lambda c: abs((c - anchor).total_seconds())
            )
            replaced = True
        out.append(t)
    return out, replaced


def _frame_reference_starts(datasets, acq, lam, vendor):
    """Series start back-computed per slice from FrameReferenceTime, or None."""
    starts = []
    for d, a in zip(datasets, acq):
        frt, dur = _float(d.get("FrameReferenceTime")), _float(d.get("ActualFrameDuration"))
        if a is None or frt is None or frt < 0:
            return None
        if vendor == "GE":  # GE: FrameReferenceTime is the frame start's offset from the series start (>= 0)
            starts.append(a - dt.timedelta(seconds=frt / 1000.0))
        elif frt > 0 and dur and dur > 0:  # QIBA/IBSI: reference = acquisition + decay-weighted mid-frame - FRT
            starts.append(a + dt.timedelta(seconds=_frame_mid(dur / 1000.0, lam) - frt / 1000.0))
        else:
            return None
    spread = (max(starts) - min(starts)).total_seconds()
    return min(starts) if spread <= 2.0 else None


def _reference_time(ds, datasets, acq, lam, where):
    """Reference time T of DecayCorrection START and the rule that gave it."""
    series = parse_da_tm(ds.get("SeriesDate", ""), ds.get("SeriesTime", ""))
    known = [a for a in acq if a is not None]
    first = min(known) if known else None
    if series is not None and (first is None or series <= first):
        return series, "series_time"
    vendor = _vendor(ds)
    for name, group, element, creator in (("siemens", 0x0071, 0x22, SIEMENS_CREATOR), ("ge", 0x0009, 0x0D, GE_CREATOR)):
        if vendor in ("", name.upper()):
            private = parse_dt(_private(ds, group, element, creator))
            # the scan's start, so within the hour of the first acquisition; one that
            # de-identification left unshifted lies days away: not used
            if private is not None and (
                first is None or abs((private - first).total_seconds()) <= PRIVATE_START_TOLERANCE_S
            ):
                return private, f"{name}_private_{'decay_correction' if name == 'siemens' else 'scan'}_datetime"
    start = _frame_reference_starts(datasets, acq, lam, vendor)
    if start is not None:
        return start, "frame_reference_time" + ("_ge" if vendor == "GE" else "")
    if first is not None:
        return first, "earliest_acquisition_time"
    _fail("no usable series or acquisition time", "SeriesTime (0008,0031)", where)


def _injection(ds, item, scan, half_life, where):
    """Injection datetime and the rule that gave it (``scan``: the scan's start)."""
    note = ""
    if item.get("RadiopharmaceuticalStartDateTime"):
        inj = parse_dt(item.RadiopharmaceuticalStartDateTime)
        if inj is not None:
            uptake = (scan - inj).total_seconds() if scan is not None else 0.0
            lo, hi = plausible_uptake(half_life)
            if scan is None or lo <= uptake <= hi:
                return inj, "start_datetime"
            if half_life >= DAY_AMBIGUOUS_HALF_LIFE_S:
                _fail(
                    f"RadiopharmaceuticalStartDateTime implies an uptake time of {uptake / 3600:.1f} h "
                    f"(outside {lo / 3600:.0f} to {hi / 3600:.0f} h: date shifted?)",
                    "RadiopharmaceuticalStartDateTime (0018,1078)",
                    where,
                )
            note = "start_datetime_date_set_aside_"  # a shifted date: its time of day is still right
    time_of_day = item.get("RadiopharmaceuticalStartTime") or (
        str(item.get("RadiopharmaceuticalStartDateTime", ""))[8:] if note else ""
    )
    if time_of_day:
        if half_life >= DAY_AMBIGUOUS_HALF_LIFE_S:
            _fail(
                "only the time of day of the injection is known, and this nuclide's uptake may exceed a day",
                "RadiopharmaceuticalStartDateTime (0018,1078)",
                where,
            )
        day = scan.strftime("%Y%m%d") if scan is not None else (ds.get("SeriesDate", "") or ds.get("StudyDate", ""))
        inj = parse_da_tm(day, time_of_day)
        if inj is not None:
            if scan is not None and inj > scan:
                return inj - dt.timedelta(days=1), note + "start_time_previous_day"
            return inj, note + "start_time_on_series_date"
    _fail("injection time missing", "RadiopharmaceuticalStartTime (0018,1072)", where)


# --- the factors ----------------------------------------------------------------------------


class _Header:
    """Lazy access to the inputs a rule needs, failing with the attribute's name."""

    def __init__(self, datasets, where):
        self.datasets, self.ds, self.where = datasets, datasets[0], where

    def weight(self, side):
        weight = _float(self.ds.get("PatientWeight"))
        if not weight or weight <= 0:
            _fail("patient weight missing or 0: SUVbw needs it", "PatientWeight (0010,1030)", self.where)
        if weight >= GRAMS_FROM:
            weight, rule = weight / 1000.0, "grams_converted"
        else:
            rule = "kg"
        side.update(weight_kg=weight, weight_source=rule)
        return weight

    def size_and_sex(self, suv_type, need_sex):
        height, sex = _patient_size(self.ds)
        if height is None:
            _fail(
                f"SUVType {suv_type} needs the patient's height (missing or 0)", "PatientSize (0010,1020)", self.where
            )
        if need_sex and sex is None:
            found = str(self.ds.get("PatientSex", "") or "").strip() or "missing"
            _fail(
                f"SUVType {suv_type} needs the patient's sex M, F or O (found: {found})",
                "PatientSex (0010,0040)",
                self.where,
            )
        return height, sex


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
        Every input, derived factor and the rule that chose it. The keys
        ``decay_correction``, ``reference_time_source``, ``factor_source`` and ``factor``
        are always present (``None`` where the rule does not use them).
    """
    ds = datasets[0]
    hdr = _Header(datasets, where)
    units = str(ds.get("Units", "") or "").strip().upper()
    intercepts = {_float(d.get("RescaleIntercept", 0)) or 0.0 for d in datasets}
    if intercepts != {0.0}:
        _fail(f"RescaleIntercept must be 0 for PET, found {sorted(intercepts)}", "RescaleIntercept (0028,1052)", where)
    decay = str(ds.get("DecayCorrection", "") or "").strip().upper()
    side = {"units_in": units, "decay_correction": decay or None, "reference_time_source": None}
    ok, why = quantitative_units(ds)
    if not ok and units != "CNTS":
        _fail(f"{why} (supported: {', '.join(QUANTITATIVE_UNITS)})", "Units (0054,1001)", where)

    if units in ("GML", "CM2ML"):
        factors = np.full(len(datasets), _normalised_factor(hdr, units, side))
    else:
        factors = _activity_factors(hdr, units, decay, side)
    height, sex = _patient_size(ds)
    if height:
        side["height_m"] = height
    if "weight_kg" not in side and (_float(ds.get("PatientWeight")) or 0) > 0:
        hdr.weight(side)  # for the sidecar's other normalisations only
    side["sex"] = sex or str(ds.get("PatientSex", "") or "").strip() or None
    side["other_normalisations"] = other_normalisations(side.get("weight_kg"), height, sex)
    side["factor_units"] = "SUVbw per rescaled pixel value"
    return factors, side


def _normalised_factor(hdr, units, side):
    """Units GML/CM2ML: values are already normalised; the factor back to SUVbw."""
    ds = hdr.ds
    suv_type = str(ds.get("SUVType", "") or "BW").strip().upper() if units == "GML" else "BSA"
    side.update(suv_type=suv_type, reference_time_source="not needed: values are already normalised")
    if suv_type == "BW":
        factor = 1.0
    elif suv_type in MASS_NORMALISATIONS:
        weight = hdr.weight(side)
        height, sex = hdr.size_and_sex(suv_type, need_sex=True)
        mass = MASS_NORMALISATIONS[suv_type](weight, height, sex)
        side["normalisation_mass_kg"] = mass
        factor = weight / mass
    elif suv_type == "BSA":
        weight = hdr.weight(side)
        height, _ = hdr.size_and_sex(suv_type, need_sex=False)
        bsa = bsa_dubois_cm2(weight, height)
        side["bsa_cm2"] = bsa
        factor = weight * 1000.0 / bsa  # (g/mL) per (cm2/mL)
    else:
        _fail(f"SUVType '{suv_type}' not supported", "SUVType (0054,1006)", hdr.where)
    side.update(factor_source=f"{units}/{suv_type} back-computed to SUVbw", factor=factor)
    return factor


def _activity_factors(hdr, units, decay, side):
    """Units BQML or CNTS: per-slice factors from activity, dose, weight and decay."""
    datasets, where = hdr.datasets, hdr.where
    to_bqml = np.ones(len(datasets))
    if units == "CNTS":
        suv_scale, to_bqml = _philips_scales(datasets, decay, side, where)
        if suv_scale is not None:
            return suv_scale

    weight = hdr.weight(side)
    ds = hdr.ds
    item = _radiopharmaceutical(ds, where)
    dose, dose_rule = _injected_dose(item, where)
    nuclide, half_life, half_life_rule = _half_life(item, where)
    lam = np.log(2.0) / half_life

    acq, first = _acquisition_start(datasets, ds, side)
    injection, injection_rule = _injection(ds, item, first, half_life, where)
    per_slice = np.ones(len(datasets))
    reference, reference_rule = _decay_reference(
        decay, ds, datasets, acq, injection, half_life, lam, per_slice, side, where
    )

    elapsed = (reference - injection).total_seconds()
    _check_uptake(elapsed, half_life, reference_rule, where)
    dose_ref = dose * 2.0 ** (-elapsed / half_life)
    factor = weight * 1000.0 / dose_ref
    side.update(
        {
            "radionuclide": nuclide,
            "half_life_s": half_life,
            "half_life_source": half_life_rule,
            "injected_dose_bq": dose,
            "dose_source": dose_rule,
            "injection_time_source": injection_rule,
            "reference_time_source": reference_rule,
            "injection_to_reference_s": elapsed,
            "dose_at_reference_time_bq": dose_ref,
            "factor_source": "activity_concentration"
            if units == "BQML"
            else "philips_activity_concentration_scale_factor",
            "factor": factor,
        }
    )
    return to_bqml * per_slice * factor


def _philips_scales(datasets, decay, side, where):
    """Units CNTS: (per-slice SUVbw factors, None) or (None, per-slice factors to Bq/mL)."""
    pairs = [philips_factors(d) for d in datasets]
    suv_scale = [p[0] for p in pairs]
    acf = [p[1] for p in pairs]
    have_suv, have_acf = all(v is not None for v in suv_scale), all(v is not None for v in acf)
    # NONE: the activity factor keeps each slice's decay explicit (IBSI)
    if have_suv and not (decay == "NONE" and have_acf):
        side.update(
            factor_source="philips_suv_scale_factor",
            factor=suv_scale[0],
            reference_time_source="not needed: Philips SUV Scale Factor",
        )
        return np.array(suv_scale, float), None
    if not have_acf:
        _fail(
            "Units CNTS need Philips private (7053,1000) SUV Scale Factor or (7053,1009) Activity "
            "Concentration Scale Factor (missing or 0)",
            "Units (0054,1001)",
            where,
        )
    to_bqml = np.array(acf, float)
    side["activity_concentration_scale_factor"] = float(acf[0])
    return None, to_bqml


def _radiopharmaceutical(ds, where):
    """The first item of the RadiopharmaceuticalInformationSequence (required)."""
    seq = ds.get("RadiopharmaceuticalInformationSequence")
    if not seq:
        _fail("missing", "RadiopharmaceuticalInformationSequence (0054,0016)", where)
    return seq[0]


def _injected_dose(item, where):
    """Injected dose (Bq) and its rule (MBq values converted)."""
    dose = _float(item.get("RadionuclideTotalDose"))
    if not dose or dose <= 0:
        _fail("injected dose missing or not positive", "RadionuclideTotalDose (0018,1074)", where)
    dose_rule = "Bq"
    if dose < MBQ_BELOW:
        dose, dose_rule = dose * 1e6, "MBq_converted"
    return dose, dose_rule


def _half_life(item, where):
    """Radionuclide, half-life (s) and its rule: the header's, else the radionuclide code's."""
    nuclide = radionuclide(item)
    half_life = _float(item.get("RadionuclideHalfLife"))
    half_life_rule = "header"
    if not half_life or half_life <= 0:
        if nuclide is None:
            _fail("half-life missing and radionuclide code unknown", "RadionuclideHalfLife (0018,1075)", where)
        half_life, half_life_rule = HALF_LIFE_S[nuclide], "radionuclide_code"
    return nuclide, half_life, half_life_rule


def _acquisition_start(datasets, ds, side):
    """Each slice's acquisition start and the earliest (else the series time); notes replaced dates."""
    series = parse_da_tm(ds.get("SeriesDate", ""), ds.get("SeriesTime", ""))
    acq, acq_replaced = _acquisitions(datasets, ds)
    if acq_replaced:
        side["acquisition_date_replaced"] = (
            "AcquisitionDate far from both StudyDate and SeriesDate (de-identified): the series date used"
        )
    known = [a for a in acq if a is not None]
    first = min(known) if known else series
    return acq, first


def _decay_reference(decay, ds, datasets, acq, injection, half_life, lam, per_slice, side, where):
    """Reference time the values refer to, and its rule, by DecayCorrection (NONE fills ``per_slice``)."""
    if decay == "ADMIN":
        return injection, "injection (images decay-corrected to administration)"
    if decay == "START":
        return _reference_time(ds, datasets, acq, lam, where)
    if decay == "NONE":
        reference, reference_rule = _none_decay(datasets, acq, half_life, lam, per_slice, where)
        side["slice_decay_factor_range"] = [float(per_slice.min()), float(per_slice.max())]
        return reference, reference_rule
    _fail(f"DecayCorrection '{decay}' not supported (START, ADMIN, NONE)", "DecayCorrection (0054,1102)", where)


def _check_uptake(elapsed, half_life, reference_rule, where):
    """Refuse an injection after the reference time or an implausibly long uptake."""
    if elapsed < 0:
        _fail(
            f"injection {-elapsed:.0f} s after the image reference time",
            "RadiopharmaceuticalStartTime (0018,1072)",
            where,
        )
    if elapsed > plausible_uptake(half_life)[1]:
        _fail(
            f"{elapsed / 3600:.1f} h from injection to the image reference time ({reference_rule}): the dates "
            "disagree (shifted by de-identification?)",
            "RadiopharmaceuticalStartDateTime (0018,1078)",
            where,
        )


def _none_decay(datasets, acq, half_life, lam, per_slice, where):
    """DecayCorrection NONE: per-slice factors (in place) to the earliest acquisition start."""
    if any(a is None for a in acq):
        _fail("DecayCorrection NONE needs every slice's acquisition time", "AcquisitionTime (0008,0032)", where)
    durations = [_float(d.get("ActualFrameDuration")) for d in datasets]
    if any(not v or v <= 0 for v in durations):
        _fail(
            "DecayCorrection NONE needs every slice's frame duration (decay during the frame)",
            "ActualFrameDuration (0018,1242)",
            where,
        )
    reference = min(acq)
    for k, (a, dur_ms) in enumerate(zip(acq, durations)):
        dur = dur_ms / 1000.0
        # activity averaged over the frame -> activity at the frame start -> at the reference
        during = lam * dur / (1.0 - np.exp(-lam * dur))
        per_slice[k] = 2.0 ** ((a - reference).total_seconds() / half_life) * during
    return reference, "earliest_acquisition_time (per-slice decay correction)"


def suv_factor(datasets, where="PET series"):
    """Sidecar of :func:`suv_factors` (scalar ``factor``: the factor of the first slice)."""
    factors, side = suv_factors(datasets, where)
    return {**side, "factor": float(factors[0])}
