"""Reading a study folder: series discovery, series choice and slice geometry.

A study folder is searched recursively (any file names, any order; non-DICOM files are
ignored). Files are grouped by SeriesInstanceUID and each series is classified as
attenuation-corrected PET, non-attenuation-corrected PET, axial CT, localizer,
derived/secondary image or other. The AC PET and the axial CT sharing its
FrameOfReferenceUID are chosen unless the studies sheet names them.

Volumes are stacked by slice position along the slice normal (computed from
ImagePositionPatient and ImageOrientationPatient), never by file name or InstanceNumber,
after checking one orientation, one matrix size and uniform spacing.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from dualpet.errors import DualpetInputError
from dualpet.geometry import dicom_affine_lps

#: Relative tolerance on slice spacing before a stack is called non-uniform.
SPACING_RTOL = 0.01
IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.128": "PT",  # PET Image Storage
}


@dataclass
class Series:
    """One series found in a study folder (headers only)."""

    uid: str
    modality: str
    description: str
    number: str
    frame_of_reference: str
    image_type: tuple
    corrected_image: tuple
    sop_class: str
    files: list = field(default_factory=list)
    headers: list = field(default_factory=list, repr=False)  # parsed once; pixel data deferred

    @property
    def kind(self):
        """Classification used for series choice."""
        itype = {v.upper() for v in self.image_type}
        if self.sop_class not in IMAGE_SOP_CLASSES:
            return "secondary"
        if "LOCALIZER" in itype:
            return "localizer"
        if "DERIVED" in itype or "SECONDARY" in itype or "MIP" in itype or "REFORMATTED" in itype:
            return "derived"
        if self.modality == "PT":
            return "pet_ac" if "ATTN" in {v.upper() for v in self.corrected_image} else "pet_nac"
        if self.modality == "CT":
            return "ct_axial"
        return "other"

    def describe(self):
        return f"{self.uid} ({self.modality}, '{self.description}', #{self.number}, {len(self.files)} files, {self.kind})"


def _text(ds, keyword, default=""):
    value = ds.get(keyword, default)
    return default if value is None else str(value)


def scan_folder(folder):
    """Group the DICOM files under ``folder`` by series (reads headers only).

    Returns
    -------
    dict
        SeriesInstanceUID -> :class:`Series`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DualpetInputError(f"DICOM folder {folder} does not exist or is not a folder")
    series = {}
    for root, _dirs, names in os.walk(folder):
        for name in sorted(names):
            path = Path(root) / name
            try:  # force: DICOM files without the 128-byte preamble exist in the wild
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # forced reads of non-DICOM files complain
                    # headers parsed once; elements over 4 KB (pixel data) load lazily on access
                    ds = pydicom.dcmread(path, defer_size=4096, force=True)
                    uid = _text(ds, "SeriesInstanceUID")
            except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, KeyError, AttributeError):
                continue  # not DICOM (or unreadable header): ignored, as documented
            if not uid or "SOPClassUID" not in ds:
                continue
            if uid not in series:
                series[uid] = Series(
                    uid=uid,
                    modality=_text(ds, "Modality"),
                    description=_text(ds, "SeriesDescription"),
                    number=_text(ds, "SeriesNumber"),
                    frame_of_reference=_text(ds, "FrameOfReferenceUID"),
                    image_type=tuple(ds.get("ImageType", []) or []),
                    corrected_image=tuple(ds.get("CorrectedImage", []) or []),
                    sop_class=_text(ds, "SOPClassUID"),
                )
            series[uid].files.append(path)
            series[uid].headers.append(ds)
    return series


def pick_series(series, folder, kind, uid=None, *, option="pet_series", frame=None):
    """The one series of ``kind`` (e.g. "pet_ac"), or the one named by ``uid``.

    ``frame`` prefers series of that FrameOfReferenceUID. Raises
    :class:`DualpetInputError` listing the candidates when none or several qualify, so
    the user can name one (``option`` says where: a studies-sheet column or CLI option).
    """
    if uid:
        if uid not in series:
            raise DualpetInputError(
                f"{option} {uid} not found in {folder}; series present: "
                + "; ".join(s.describe() for s in series.values())
            )
        return series[uid]
    cands = [s for s in series.values() if s.kind == kind]
    if frame is not None:
        cands = [s for s in cands if s.frame_of_reference == frame] or cands
    what = kind.replace("_", " ").replace("pet ac", "attenuation-corrected PET").replace("ct axial", "axial CT")
    if not cands:
        found = "; ".join(s.describe() for s in series.values()) or "no DICOM image files"
        raise DualpetInputError(f"no {what} series in {folder} (found: {found})")
    if len(cands) > 1:
        raise DualpetInputError(
            f"{len(cands)} candidate {what} series in {folder}; name one with {option}: "
            + "; ".join(s.describe() for s in cands)
        )
    return cands[0]


def select_series(series, folder, *, pet_uid=None, ct_uid=None):
    """Choose the AC PET and the axial CT, preferring the CT of the PET's frame of reference
    (sheet columns ``pet_series`` / ``ct_series`` name them when the folder is ambiguous).
    A pair of different frames is returned too: the converter then registers them."""
    pet = pick_series(series, folder, "pet_ac", pet_uid, option="studies-sheet column pet_series")
    ct = pick_series(
        series, folder, "ct_axial", ct_uid, option="studies-sheet column ct_series", frame=pet.frame_of_reference
    )
    return pet, ct


@dataclass
class Volume:
    """A stacked series: ``data[i, j, k]`` (column, row, slice), voxel->LPS ``affine``."""

    data: np.ndarray
    affine: np.ndarray
    datasets: list  # one per slice, in k order (pixel data released)
    slopes: np.ndarray


def _where(series, label):
    return f"{label + ', ' if label else ''}series {series.uid} ('{series.description}')"


def stack_geometry(datasets, where):
    """Order slices along the slice normal and check the stack; returns (datasets, affine).

    Checks one orientation, one matrix size, no duplicate positions and uniform spacing
    (a gap names the missing position). Works on headers alone.
    """
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in datasets):
        raise DualpetInputError(f"{where}: multi-frame images are not supported (attribute NumberOfFrames)")
    for keyword in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
        missing = [ds for ds in datasets if keyword not in ds]
        if missing:
            raise DualpetInputError(f"{where}: attribute {keyword} missing in {len(missing)} file(s)")
    iop0 = np.array(datasets[0].ImageOrientationPatient, dtype=float)
    for ds in datasets:
        if not np.allclose(np.array(ds.ImageOrientationPatient, float), iop0, atol=1e-4):
            raise DualpetInputError(
                f"{where}: mixed slice orientations (attribute ImageOrientationPatient "
                f"{list(ds.ImageOrientationPatient)} vs {iop0.tolist()})"
            )
        if (ds.Rows, ds.Columns) != (datasets[0].Rows, datasets[0].Columns):
            raise DualpetInputError(
                f"{where}: mixed matrix sizes (attributes Rows/Columns {ds.Rows}x{ds.Columns} "
                f"vs {datasets[0].Rows}x{datasets[0].Columns})"
            )
    normal = np.cross(iop0[:3], iop0[3:])
    dist = np.array([np.dot(normal, np.array(ds.ImagePositionPatient, float)) for ds in datasets])
    order = np.argsort(dist, kind="stable")
    datasets = [datasets[i] for i in order]
    dist = dist[order]
    if len(datasets) > 1:
        steps = np.diff(dist)
        if np.any(steps < 1e-3):
            k = int(np.argmin(steps))
            raise DualpetInputError(
                f"{where}: two slices at the same position {dist[k]:.2f} mm along the slice normal "
                "(attribute ImagePositionPatient; duplicate files or several series mixed)"
            )
        step = float(np.median(steps))
        bad = np.flatnonzero(np.abs(steps - step) > SPACING_RTOL * step)
        if bad.size:
            k = int(bad[0])
            n_missing = int(round(steps[k] / step)) - 1
            raise DualpetInputError(
                f"{where}: non-uniform slice spacing (attribute ImagePositionPatient): gap of "
                f"{steps[k]:.2f} mm instead of {step:.2f} mm after the slice at {dist[k]:.2f} mm "
                f"along the normal" + (f" ({n_missing} slice(s) missing)" if n_missing >= 1 else "")
            )
        # The mean step between first and last positions: along the normal for axial
        # stacks, sheared (still exact) for gantry-tilted ones.
        positions = np.array([ds.ImagePositionPatient for ds in (datasets[0], datasets[-1])], float)
        slice_step = (positions[1] - positions[0]) / (len(datasets) - 1)
    else:
        thickness = float(datasets[0].get("SliceThickness", 1.0) or 1.0)
        slice_step = normal * thickness
    affine = dicom_affine_lps(iop0, datasets[0].PixelSpacing, datasets[0].ImagePositionPatient, slice_step)
    return datasets, affine


def read_headers(series, *, label=None):
    """The series' headers (no pixel data) ordered along the slice normal, and the affine."""
    return stack_geometry(_datasets(series, label), _where(series, label))


def _datasets(series, label):
    """The series' datasets: the headers parsed by :func:`scan_folder`, else read now."""
    if len(series.headers) == len(series.files):
        return list(series.headers)
    where = _where(series, label)
    datasets = []
    for path in series.files:
        try:
            datasets.append(pydicom.dcmread(path, defer_size=4096, force=True))
        except Exception as exc:  # corrupt file: name it
            raise DualpetInputError(f"{where}: cannot read {path}: {exc}") from exc
    return datasets


def load_series(series, *, dtype=np.float32, label=None):
    """Read a series' pixels, ordered along the slice normal, with per-slice rescale.

    Parameters
    ----------
    series : Series
    dtype : numpy dtype of the output values.
    label : str, optional
        Prefix for error messages (e.g. "patient P001, fdg").

    Returns
    -------
    Volume
        Values are ``stored * RescaleSlope + RescaleIntercept`` of each slice.
    """
    where = _where(series, label)
    datasets, affine = stack_geometry(_datasets(series, label), where)
    nk = len(datasets)
    data = np.empty((int(datasets[0].Columns), int(datasets[0].Rows), nk), dtype=dtype)
    slopes = np.empty(nk)
    for k, ds in enumerate(datasets):
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        slopes[k] = slope
        try:
            pix = ds.pixel_array
        except Exception as exc:  # truncated or undecodable pixel data: name the file
            name = getattr(ds, "filename", "?")
            raise DualpetInputError(f"{where}: cannot decode pixel data of {name} (attribute PixelData): {exc}") from exc
        data[:, :, k] = (pix.T.astype(np.float64) * slope + intercept).astype(dtype)
        del ds.PixelData
    return Volume(data=data, affine=affine, datasets=datasets, slopes=slopes)
