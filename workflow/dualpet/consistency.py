"""Checks at inspection that the chosen series belong together and can be read.

From headers (and one decoded image per series), before any conversion:

- the PET and the CT of a study are of one patient (PatientID, when both carry one), of one
  study or one frame of reference (StudyInstanceUID or FrameOfReferenceUID) and of one day
  (acquisition dates at most a day apart, for scans across midnight);
- both tracers' studies of a patient carry the same PatientID and PatientSex (when present);
- the CT covers the PET's axial range but for a stated share of it (``max_uncovered_fraction``,
  default :data:`MAX_UNCOVERED_FRACTION`);
- every image's pixel data is complete (the file is as long as its PixelData says), and
  one image per series decodes (its transfer syntax is supported).

Messages name attributes, never their values: identifiers stay out of every output.
"""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pydicom

from dualpet.dicom import IMAGE_SOP_CLASSES, header_text, looks_like_dicom
from dualpet.errors import DualpetInputError
from dualpet.files import regular_files
from dualpet.settings import default

#: The share of the PET's axial length the CT may leave uncovered, both ends together (the
#: config's inspection.max_uncovered_fraction, whose default the schema holds). Held-out
#: phantom studies left 11-27 mm of a 350 mm PET uncovered (3-8 %); detection already
#: ignores the noisy 12 mm end planes; those planes only lack anatomy.
MAX_UNCOVERED_FRACTION = default("inspection.max_uncovered_fraction")
PIXEL_DATA = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF


def _value(ds, keyword):
    return header_text(ds, keyword).strip()


def _day(ds):
    for keyword in ("AcquisitionDate", "SeriesDate", "StudyDate"):
        text = _value(ds, keyword)
        if len(text) >= 8:
            try:
                return dt.datetime.strptime(text[:8], "%Y%m%d").date()
            except ValueError:
                continue
    return None


def same_study(pet, ct, where):
    """Refuse a PET and CT of different patients, studies or days (header of one image each)."""
    if _value(pet, "PatientID") and _value(ct, "PatientID") and _value(pet, "PatientID") != _value(ct, "PatientID"):
        raise DualpetInputError(
            f"{where}: the PET and the CT carry different PatientID (0010,0020): another patient's "
            "series in the study folder?"
        )
    shared = [
        keyword
        for keyword in ("StudyInstanceUID", "FrameOfReferenceUID")
        if _value(pet, keyword) and _value(pet, keyword) == _value(ct, keyword)
    ]
    if not shared:
        raise DualpetInputError(
            f"{where}: the PET and the CT share neither StudyInstanceUID (0020,000D) nor "
            "FrameOfReferenceUID (0020,0052): they are not of one study"
        )
    a, b = _day(pet), _day(ct)
    if a and b and abs((a - b).days) > 1:
        raise DualpetInputError(
            f"{where}: the PET and the CT were acquired {abs((a - b).days)} days apart "
            "(AcquisitionDate (0008,0022)): not of one study"
        )


#: Attributes every image of one PET acquisition shares (keyword, tag); the radiopharmaceutical
#: ones are read from the first item of RadiopharmaceuticalInformationSequence.
ONE_ACQUISITION = (
    ("StudyInstanceUID", "(0020,000D)"),
    ("FrameOfReferenceUID", "(0020,0052)"),
    ("PatientWeight", "(0010,1030)"),
    ("Units", "(0054,1001)"),
    ("DecayCorrection", "(0054,1102)"),
)
ONE_INJECTION = (
    ("RadionuclideTotalDose", "(0018,1074)"),
    ("RadiopharmaceuticalStartDateTime", "(0018,1078)"),
    ("RadiopharmaceuticalStartTime", "(0018,1072)"),
    ("RadionuclideHalfLife", "(0018,1075)"),
)


def one_acquisition(headers, where, label="the PET"):
    """Refuse a PET series whose images come from more than one acquisition (a series
    mixed from two scans): they must share the study, frame of reference, weight, units,
    decay correction and injection, and their acquisition dates lie within a day. Without
    this, a mixed series was refused for a misleading reason (the CT 'acquired 7 days
    apart', an injection 'after the reference time') or read with one slice's factors."""

    def distinct(values):
        return len({v for v in values if v != ""}) > 1

    for keyword, tag in ONE_ACQUISITION:
        if distinct(_value(ds, keyword) for ds in headers):
            raise DualpetInputError(
                f"{where}: {label} series mixes images of more than one acquisition: "
                f"{keyword} {tag} differs between its images"
            )
    items = [(ds.get("RadiopharmaceuticalInformationSequence") or [None])[0] for ds in headers]
    for keyword, tag in ONE_INJECTION:
        if distinct(_value(item, keyword) if item is not None else "" for item in items):
            raise DualpetInputError(
                f"{where}: {label} series mixes images of more than one acquisition: "
                f"{keyword} {tag} differs between its images"
            )
    days = [d for d in (_day(ds) for ds in headers) if d]
    if days and (max(days) - min(days)).days > 1:
        raise DualpetInputError(
            f"{where}: {label} series mixes images of more than one acquisition: AcquisitionDate "
            f"(0008,0022) spans {(max(days) - min(days)).days} days between its images"
        )


def same_patient(pet, other_folder, tracer, other_tracer, where):
    """Refuse when the other tracer's study (the first image in its folder) carries another
    PatientID or PatientSex than this study's PET. A missing other folder is its own
    study's problem, not this one's."""
    other = _first_image(other_folder)
    if other is None:
        return
    for keyword, tag in (("PatientID", "(0010,0020)"), ("PatientSex", "(0010,0040)")):
        mine, theirs = _value(pet, keyword), _value(other, keyword)
        if mine and theirs and mine != theirs:
            raise DualpetInputError(
                f"{where}: the {tracer} and {other_tracer} studies carry different {keyword} {tag}: "
                "not one patient? (set inspection.check_patient_identity: false if the studies "
                "were de-identified separately)"
            )


def _first_image(folder):
    if not folder or not os.path.isdir(folder):
        return None
    for path in regular_files(folder):
        if not looks_like_dicom(path):
            continue
        try:
            ds = pydicom.dcmread(
                path, stop_before_pixels=True, force=True, specific_tags=["SOPClassUID", "PatientID", "PatientSex"]
            )
        except Exception:
            continue
        if _value(ds, "SOPClassUID") in IMAGE_SOP_CLASSES:
            from dualpet import privacy

            privacy.register(ds)
            return ds
    return None


def ct_covers_pet(pet_headers, ct_headers, where, max_fraction=MAX_UNCOVERED_FRACTION):
    """The CT's coverage of the PET's axial range (same frame of reference assumed):
    ``uncovered_mm`` at the low and high end. Refuses a CT that leaves more than
    ``max_fraction`` of the PET's length uncovered, naming the limit."""
    cover = coverage(z_extent(pet_headers), z_extent(ct_headers))
    (p_lo, p_hi), (c_lo, c_hi), uncovered = cover["pet_z_mm"], cover["ct_z_mm"], cover["uncovered_mm"]
    length = max(p_hi - p_lo, 1e-6)
    if sum(uncovered) > max_fraction * length + 1e-6:
        raise DualpetInputError(
            f"{where}: the CT covers z = {c_lo:.0f} to {c_hi:.0f} mm but the PET spans {p_lo:.0f} to {p_hi:.0f} mm "
            f"({sum(uncovered):.0f} mm uncovered, {100 * sum(uncovered) / length:.0f} % of the PET's length; the limit is "
            f"{100 * max_fraction:g} %, config inspection.max_uncovered_fraction; attribute ImagePositionPatient)"
        )
    return cover


def coverage(pet_extent, ct_extent):
    """The CT's coverage of the PET along z: both extents (low, high world z, mm) and the
    PET's ``uncovered_mm`` at its low and high end."""
    (p_lo, p_hi), (c_lo, c_hi) = pet_extent, ct_extent
    uncovered = max(c_lo - p_lo, 0.0), max(p_hi - c_hi, 0.0)
    return {
        "pet_z_mm": [round(p_lo, 1), round(p_hi, 1)],
        "ct_z_mm": [round(c_lo, 1), round(c_hi, 1)],
        "uncovered_mm": [round(u, 1) for u in uncovered],
    }


def z_extent(headers):
    """(low, high) world z (mm) of a stack from its slices' ImagePositionPatient, half a
    slice beyond the end slices."""
    z = np.sort([float(h.ImagePositionPatient[2]) for h in headers])
    half = float(np.median(np.diff(z))) / 2.0 if len(z) > 1 else 0.0
    return float(z[0] - half), float(z[-1] + half)


def pixel_data_readable(series, headers, where):
    """Refuse truncated images (every file) and an undecodable transfer syntax (one image)."""
    for ds in headers:
        element = ds.get_item(PIXEL_DATA, keep_deferred=True)
        number = _value(ds, "InstanceNumber") or "?"
        if element is None:
            raise DualpetInputError(
                f"{where}, {series.label}: image InstanceNumber {number} has no PixelData (7FE0,0010)"
            )
        value = getattr(element, "value", None)
        length = getattr(element, "length", None)
        if value is None and length not in (None, UNDEFINED_LENGTH):  # deferred: compare with the file's size
            size = os.path.getsize(ds.filename)
            if element.value_tell + length > size:
                raise DualpetInputError(
                    f"{where}, {series.label}: image InstanceNumber {number} is truncated (PixelData (7FE0,0010) "
                    f"needs {length} bytes, the file ends {element.value_tell + length - size} bytes short)"
                )
    probe = pydicom.dcmread(headers[len(headers) // 2].filename, force=True)
    try:
        probe.pixel_array  # noqa: B018 - decoding is the check
    except Exception as exc:
        syntax = getattr(getattr(probe, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", "") or "unknown"
        raise DualpetInputError(
            f"{where}, {series.label}: pixel data cannot be decoded (transfer syntax {name}, attribute "
            f"TransferSyntaxUID (0002,0010)): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
