"""Write synthetic volumes as standard DICOM CT / PET Image Storage series (pydicom)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from dualpet.geometry import apply_affine

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.1457.1"  # not a registered root: synthetic data only

#: Radionuclide codes (DICOM CID 4020, SNOMED-RT designators) and names.
NUCLIDE_CODES = {
    "F-18": ("C-111A1", "^18^Fluorine"),
    "Ga-68": ("C-131A3", "^68^Gallium"),
}
RADIOPHARMACEUTICAL = {"fdg": "Fluorodeoxyglucose F^18^", "pentixafor": "Ga-68 Pentixafor"}


def uid(*entropy):
    """Deterministic UID in the 2.25 (UUID-derived, 128-bit) form from the entropy sources.

    (pydicom's ``generate_uid(prefix=None)`` ignores ``entropy_srcs`` and is random.)
    """
    digest = hashlib.sha256("|".join(str(e) for e in entropy).encode()).hexdigest()
    return f"2.25.{int(digest[:32], 16)}"


def dicom_date(dt):
    return dt.strftime("%Y%m%d")


def dicom_time(dt):
    return dt.strftime("%H%M%S.%f")[:13]


def _base_dataset(sop_class, sop_uid, header):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    for key, value in header.items():
        setattr(ds, key, value)
    return ds


def write_series(
    folder,
    stored,
    affine,
    *,
    sop_class,
    header,
    slopes,
    intercept,
    per_slice=None,
    uid_seed,
    file_prefix,
    instances_from="head",
    hook=None,
    jitter_mm=0.0,
):
    """Write a volume as one DICOM file per axial slice.

    Parameters
    ----------
    folder : path
        Output folder (created).
    stored : ndarray (I, J, K), int16
        Stored pixel values indexed [column, row, slice].
    affine : ndarray (4, 4)
        Voxel -> LPS (mm). Must be axis-aligned with slices along +z or -z.
    header : dict
        Attributes common to all slices (patient, study, series, equipment...).
    slopes : sequence of float (K,)
        RescaleSlope per slice.
    intercept : float
        RescaleIntercept for all slices.
    per_slice : callable(k) -> dict, optional
        Extra attributes for slice ``k``.
    uid_seed : str
        Entropy for deterministic SOPInstanceUIDs.
    file_prefix : str
        File names are ``{file_prefix}{instance:04d}.dcm``.
    instances_from : "head" or "feet"
        Where InstanceNumber 1 is (scanners number head-first or feet-first acquisitions
        from where they start).
    hook : callable(ds, k), optional
        Last-minute changes to slice ``k`` (private elements, removed attributes).
    jitter_mm : float
        Each slice's recorded position moves along the slice normal by a deterministic
        uniform offset within +-``jitter_mm`` (real scanners round positions and overlap
        beds); the pixels stay those of the uniform grid.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ni, nj, nk = stored.shape
    iop = np.concatenate([affine[:3, 0] / np.linalg.norm(affine[:3, 0]), affine[:3, 1] / np.linalg.norm(affine[:3, 1])])
    spacing = [float(np.linalg.norm(affine[:3, 1])), float(np.linalg.norm(affine[:3, 0]))]
    thickness = float(np.linalg.norm(affine[:3, 2]))
    # Instance numbers run head to feet, as most scanners number axial series.
    z = apply_affine(affine, np.stack([np.zeros(nk), np.zeros(nk), np.arange(nk)], 1))[:, 2]
    order = np.argsort(-z if instances_from == "head" else z, kind="stable")
    normal = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    seed = int(hashlib.sha256(repr(uid_seed).encode()).hexdigest()[:8], 16)
    offsets = np.random.default_rng(seed).uniform(-jitter_mm, jitter_mm, nk) if jitter_mm else np.zeros(nk)
    for instance, k in enumerate(order, start=1):
        sop_uid = uid(uid_seed, k)
        ds = _base_dataset(sop_class, sop_uid, header)
        pos = apply_affine(affine, [0.0, 0.0, float(k)]) + offsets[k] * normal
        ds.InstanceNumber = instance
        ds.ImagePositionPatient = [f"{v:.4f}" for v in pos]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in iop]
        ds.SliceLocation = f"{pos[2]:.4f}"
        ds.SliceThickness = f"{thickness:.4f}"
        ds.PixelSpacing = [f"{v:.6f}" for v in spacing]
        ds.Rows, ds.Columns = nj, ni
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = f"{intercept:g}"
        ds.RescaleSlope = f"{slopes[k]:.10g}"
        if per_slice is not None:
            for key, value in per_slice(int(k)).items():
                setattr(ds, key, value)
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).astype("<i2").tobytes()
        if hook is not None:
            hook(ds, int(k))
        pydicom.dcmwrite(folder / f"{file_prefix}{instance:04d}.dcm", ds, enforce_file_format=True)


def radiopharmaceutical_sequence(tracer, nuclide, dose_bq, half_life_s, injection_dt):
    """RadiopharmaceuticalInformationSequence (0054,0016) with one item."""
    item = Dataset()
    item.Radiopharmaceutical = RADIOPHARMACEUTICAL.get(tracer, tracer)
    item.RadiopharmaceuticalStartTime = dicom_time(injection_dt)
    item.RadiopharmaceuticalStartDateTime = dicom_date(injection_dt) + dicom_time(injection_dt)
    item.RadionuclideTotalDose = f"{dose_bq:.6g}"
    item.RadionuclideHalfLife = f"{half_life_s:g}"
    item.RadionuclidePositronFraction = "0.967" if nuclide == "F-18" else "0.889"
    code, meaning = NUCLIDE_CODES[nuclide]
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = code, "SRT", meaning
    item.RadionuclideCodeSequence = Sequence([c])
    return Sequence([item])


#: Non-image objects a scanner export holds beside the images (SOP class, modality).
OBJECT_SOP_CLASSES = {
    "RWV": ("1.2.840.10008.5.1.4.1.1.67", "RWV"),  # Real World Value Mapping (SUV factors)
    "SEG": ("1.2.840.10008.5.1.4.1.1.66.4", "SEG"),  # Segmentation
    "SR": ("1.2.840.10008.5.1.4.1.1.88.22", "SR"),  # Enhanced SR (a dose report or measurements)
}


def write_object(path, kind, header, *, series_uid, sop_uid, number, description, frames=None):
    """One non-image object (RWV, SEG, SR) with the study's patient and study attributes.

    A SEG carries ``frames`` (binary, uint8 (n, rows, cols)) as its pixel data, as real
    segmentations do; the others carry their kind's typical top-level attributes only.
    """
    sop_class, modality = OBJECT_SOP_CLASSES[kind]
    keep = {
        k: v
        for k, v in header.items()
        if k.startswith(
            ("Patient", "Study", "Accession", "Referring", "Institution", "Manufacturer", "FrameOfReference")
        )
    }
    ds = _base_dataset(
        sop_class,
        sop_uid,
        {
            **keep,
            "Modality": modality,
            "SeriesInstanceUID": series_uid,
            "SeriesNumber": number,
            "SeriesDescription": description,
            "InstanceNumber": 1,
        },
    )
    if kind == "SEG" and frames is not None:
        n, rows, cols = frames.shape
        ds.NumberOfFrames, ds.Rows, ds.Columns = n, rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.SegmentationType = "BINARY"  # stored as 8 bit here (simpler than 1-bit packing)
        ds.PixelData = np.ascontiguousarray(frames, dtype=np.uint8).tobytes()
    elif kind == "SR":
        ds.ValueType, ds.CompletionFlag, ds.VerificationFlag = "CONTAINER", "COMPLETE", "UNVERIFIED"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
