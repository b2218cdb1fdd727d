"""Reading a study folder: series discovery, series choice and slice geometry.

A study folder is searched recursively (any file names, any order; only regular files;
non-DICOM files are ignored). Files are grouped by SeriesInstanceUID. Non-image objects
(real-world value maps, segmentations, structure sets, reports, presentation states,
secondary captures...) are recognised by their SOP class and skipped quietly. Every PET
and CT image series is checked with every signal the headers carry (SOP class,
ImageType, Units, CorrectedImage, AttenuationCorrectionMethod, SeriesType,
SeriesDescription, slice count and orientation); each reason a series cannot be the
study's quantitative attenuation-corrected PET or its axial CT is recorded. The one
usable PET is chosen, and the axial CT sharing its FrameOfReferenceUID; when several
qualify the choice is refused with the candidates listed, unless the studies sheet names
one (by SeriesInstanceUID or SeriesNumber).

Volumes are stacked by slice position along the slice normal (computed from
ImagePositionPatient and ImageOrientationPatient), never by file name or InstanceNumber,
after checking one orientation and one matrix size. Slice positions may jitter (scanners
round positions and overlap beds): a gap is accepted when it is within
:data:`GAP_ATOL_MM` + :data:`GAP_RTOL` x the median spacing of the median, the tolerance
dicom2nifti applies; a larger gap (a missing slice) is refused and named. The affine is
the least-squares fit of the slice positions, and the largest deviation of a slice from it
is recorded.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from dualpet import privacy
from dualpet.errors import DualpetInputError, redact_paths
from dualpet.files import regular_files
from dualpet.geometry import dicom_affine_lps
from dualpet.suv import quantitative_units

#: Slice gap tolerance (dicom2nifti's): |gap - median gap| <= GAP_ATOL_MM + GAP_RTOL x median.
GAP_ATOL_MM = 0.1
GAP_RTOL = 0.05
#: Single-frame image storage SOP classes dualpet reads.
IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.128": "PT",  # Positron Emission Tomography Image Storage
}
#: Multi-frame (enhanced) images: recognised, to say why they are not used.
MULTIFRAME_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT",
    "1.2.840.10008.5.1.4.1.1.130": "Enhanced PET",
    "1.2.840.10008.5.1.4.1.1.128.1": "Legacy Converted Enhanced PET",
}
#: Names of the non-image objects study folders hold (SOP class prefix -> name), for inspect.json.
OBJECT_NAMES = (
    ("1.2.840.10008.5.1.4.1.1.67", "RWV"),
    ("1.2.840.10008.5.1.4.1.1.66.4", "SEG"),
    ("1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT"),
    ("1.2.840.10008.5.1.4.1.1.88.59", "KO"),
    ("1.2.840.10008.5.1.4.1.1.88.67", "dose report"),
    ("1.2.840.10008.5.1.4.1.1.88.68", "dose report"),
    ("1.2.840.10008.5.1.4.1.1.88.", "SR"),
    ("1.2.840.10008.5.1.4.1.1.11.", "PR"),
    ("1.2.840.10008.5.1.4.1.1.7", "secondary capture"),
    ("1.2.840.10008.5.1.4.1.1.104.", "encapsulated document"),
    ("1.2.840.10008.5.1.4.1.1.66", "raw data or registration"),
    ("1.2.840.10008.5.1.4.1.1.481.", "RT object"),
)
#: ImageType values of derived pictures rather than reconstructed volumes.
DERIVED_IMAGE_TYPES = {"MIP", "PROJECTION", "REFORMATTED", "SCREEN SAVE", "MPR", "FUSED"}
#: SeriesDescription words (upper case, whole words) and what they mean.
DESCRIPTION_HINTS = (
    (
        r"N\s?AC|NOAC|NON[\s-]?AC|NO[\s-]AC|NON[\s-]?ATTN|NO[\s-]?ATTN|UNCORR(ECTED)?|NOT[\s-]CORR(ECTED)?|NO[\s-]?CORR",
        "not_attenuation_corrected",
        "not attenuation-corrected",
    ),
    (
        r"MIP|MIPS|PROJECTION|FUSED|FUSION|SCREEN\s?SAVE|SCREEN\s?CAPTURE|KEY\s?IMAGES?|SNAPSHOT|3D\s?VR|CORONAL|SAGITTAL",
        "derived",
        "a derived picture",
    ),
    (r"SCOUT|TOPO(GRAM)?|SURVIEW|LOCALI[SZ]ER|SCANOGRAM", "localizer", "a localizer"),
)
#: AttenuationCorrectionMethod values (whole, normalised) that mean none was applied.
NO_ATTENUATION_CORRECTION = {"NONE", "NO", "NAC", "NOAC", "NO AC", "NOT CORRECTED", "UNCORRECTED"}
#: Slices a volume needs.
MIN_SLICES = 2
#: |slice normal . z| below which a stack is not axial (gantry tilt up to ~60 degrees passes).
MIN_AXIAL_COS = 0.5


def _words(text):
    """Upper-case text with separators normalised, padded, for whole-word matching."""
    return " " + re.sub(r"[-+_/\\.,;:()\[\]]+", " ", str(text).upper()) + " "


def _values(ds, keyword):
    """A multi-valued attribute as a tuple of strings (a single value is one item, not its letters)."""
    value = ds.get(keyword)
    if value is None or value == "":
        return ()
    if isinstance(value, (str, bytes)):
        return (value.decode("ascii", "ignore") if isinstance(value, bytes) else value,)
    return tuple(str(v) for v in value)


def header_text(ds, keyword, default=""):
    value = ds.get(keyword, default)
    return default if value is None else str(value)


def object_name(sop_class):
    """Short name of a non-image object's SOP class ('RWV', 'SEG', ...), or 'other object'."""
    for prefix, name in OBJECT_NAMES:
        if sop_class == prefix or (prefix.endswith(".") and sop_class.startswith(prefix)):
            return name
    return "other object"


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
    def is_image(self):
        return self.sop_class in IMAGE_SOP_CLASSES or self.sop_class in MULTIFRAME_SOP_CLASSES

    @property
    def label(self):
        """How messages name the series: number and description, never the UID."""
        number = f"series {self.number}" if self.number else "unnumbered series"
        return f"{number} '{self.description}'" if self.description else number

    def describe(self):
        return f"{self.label} ({self.modality}, {len(self.files)} file(s))"

    @cached_property
    def rejections(self):
        """[(category, reason)]: why this series is not a usable PET or CT volume (empty: usable)."""
        if not self.is_image:
            return [("object", f"not an image ({object_name(self.sop_class)})")]
        out = []
        if self.sop_class in MULTIFRAME_SOP_CLASSES:
            out.append(
                ("multiframe", f"multi-frame {MULTIFRAME_SOP_CLASSES[self.sop_class]} objects are not supported")
            )
        itype = {v.strip().upper() for v in self.image_type}
        if "LOCALIZER" in itype:
            out.append(("localizer", "ImageType LOCALIZER"))
        if itype & DERIVED_IMAGE_TYPES:  # a picture made from the volume, never the volume itself
            out.append(("derived", f"ImageType {'/'.join(self.image_type)}"))
        words = _words(self.description)
        for pattern, category, meaning in DESCRIPTION_HINTS:
            if category == "not_attenuation_corrected" and self.modality != "PT":
                continue
            if re.search(rf" ({pattern}) ", words):
                out.append((category, f"SeriesDescription says {meaning}"))
        if self.modality == "PT":
            out += self._pet_rejections()
        elif self.modality != "CT":
            out.append(("modality", f"modality {self.modality}"))
        out += self._geometry_rejections()
        return out

    def _pet_rejections(self):
        out = []
        ds = self.headers[0] if self.headers else {}
        if "ATTN" not in {v.strip().upper() for v in self.corrected_image}:
            out.append(("not_attenuation_corrected", "CorrectedImage lacks ATTN"))
        method = _words(header_text(ds, "AttenuationCorrectionMethod")).strip()
        if method in NO_ATTENUATION_CORRECTION:  # the whole value, not a word of free text
            out.append(("not_attenuation_corrected", f"AttenuationCorrectionMethod {method}"))
        ok, why = quantitative_units(ds)
        if not ok:
            out.append(("not_quantitative", why))
        series_type = [str(v).upper() for v in (ds.get("SeriesType") or [])]
        if series_type and series_type[0] in ("DYNAMIC", "GATED"):
            out.append(("dynamic", f"SeriesType {series_type[0]} (a static volume is needed)"))
        return out

    def _geometry_rejections(self):
        if len(self.files) < MIN_SLICES:
            return [("geometry", f"{len(self.files)} image(s), not a volume (attribute ImagePositionPatient)")]
        orientations = {
            tuple(np.round(np.asarray(h.get("ImageOrientationPatient") or [0] * 6, float), 3)) for h in self.headers
        }
        if len(orientations) > 1:
            return [("geometry", "several ImageOrientationPatient values (rotating MIP or reformats)")]
        iop = np.array(next(iter(orientations)))
        normal = np.cross(iop[:3], iop[3:])
        if np.linalg.norm(normal) < 0.5:
            return [("geometry", "ImageOrientationPatient missing or invalid")]
        if abs(normal[2]) / np.linalg.norm(normal) < MIN_AXIAL_COS:
            return [("geometry", "ImageOrientationPatient is not axial")]
        return []

    @property
    def derived_volume(self):
        """Whether the series is a volume derived from the reconstruction (ImageType DERIVED:
        SUV or Bq/mL computed by a workstation, a research archive's conversion, a
        re-reconstruction): used only when no ORIGINAL series of its modality qualifies."""
        return "DERIVED" in {v.strip().upper() for v in self.image_type}

    @property
    def kind(self):
        """One word for the series: pet_ac, ct_axial (usable) or why not (pet_nac, localizer, ...)."""
        cats = [c for c, _ in self.rejections]
        if not cats:
            return {"PT": "pet_ac", "CT": "ct_axial"}[self.modality]
        for cat, kind in (
            ("object", "object"),
            ("localizer", "localizer"),
            ("derived", "derived"),
            ("not_attenuation_corrected", "pet_nac"),
        ):
            if cat in cats:
                return kind
        return "pet_other" if self.modality == "PT" else "ct_other"

    def why_not(self):
        return "; ".join(reason for _, reason in self.rejections)


def looks_like_dicom(path, skipped=None):
    """Whether a file is worth parsing as DICOM, from its first 132 bytes: the 'DICM'
    marker after the preamble, or (files written without preamble) a first element of
    group 0002 or 0008 in little-endian order. Keeps the cost of foreign files bounded.
    A file that cannot be opened is noted in ``skipped``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        if skipped is not None:
            skipped.append("a file that cannot be read (no permission or an I/O error)")
        return False
    return head[128:132] == b"DICM" or head[:2] in (b"\x02\x00", b"\x08\x00")


class Found(dict):
    """The series of a folder (SeriesInstanceUID -> :class:`Series`), with ``skipped``:
    one phrase per folder entry that was not read (see :func:`dualpet.files.regular_files`)."""

    skipped: list

    def skipped_note(self):
        """'; not read: 2 x a file that cannot be read ...' or '' when nothing was skipped."""
        if not self.skipped:
            return ""
        counts = {}
        for text in self.skipped:
            counts[text] = counts.get(text, 0) + 1
        return "; not read in the folder: " + ", ".join(
            f"{n} x {text}" if n > 1 else text for text, n in counts.items()
        )


def scan_folder(folder):
    """Group the DICOM files under ``folder`` by series (reads headers only).

    Returns
    -------
    dict
        SeriesInstanceUID -> :class:`Series`. Non-image objects are listed with their
        files but without their headers (they are never read again).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DualpetInputError("the study's DICOM folder does not exist or is not a folder")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise DualpetInputError("the study's DICOM folder cannot be read (permission denied)")
    series = Found()
    series.skipped = []
    seen = set()  # (series, SOPInstanceUID) read
    for path in regular_files(folder, series.skipped):
        if not looks_like_dicom(path, series.skipped):
            continue  # not DICOM: ignored, as documented (and never parsed)
        try:  # force: DICOM files without the 128-byte preamble exist in the wild
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # forced reads of non-DICOM files complain
                # headers parsed once; elements over 4 KB (pixel data) load lazily on access
                ds = pydicom.dcmread(path, defer_size=4096, force=True)
                uid = header_text(ds, "SeriesInstanceUID")
        except OSError:
            series.skipped.append("a file that cannot be read (no permission or an I/O error)")
            continue
        except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, AttributeError, OverflowError):
            continue  # not DICOM (or unreadable header): ignored, as documented
        if not uid or "SOPClassUID" not in ds:
            continue
        privacy.register(ds)  # its identifying values never reach a log, whoever writes them
        instance = (uid, header_text(ds, "SOPInstanceUID"))
        if instance[1] and instance in seen:  # the same image twice in its series ('x (1).dcm'): read once
            series.skipped.append("a second copy of an image (same SOPInstanceUID)")
            continue
        seen.add(instance)
        if uid not in series:
            series[uid] = Series(
                uid=uid,
                modality=header_text(ds, "Modality"),
                description=header_text(ds, "SeriesDescription").strip(),
                number=header_text(ds, "SeriesNumber").strip(),
                frame_of_reference=header_text(ds, "FrameOfReferenceUID"),
                image_type=_values(ds, "ImageType"),
                corrected_image=_values(ds, "CorrectedImage"),
                sop_class=header_text(ds, "SOPClassUID"),
            )
        series[uid].files.append(path)
        if series[uid].is_image:
            series[uid].headers.append(ds)
    return series


def _named(series, name, option, modality):
    """The series a user named by SeriesInstanceUID or SeriesNumber (among ``modality``'s)."""
    if name in series:
        return series[name]
    by_number = [s for s in series.values() if s.is_image and s.number == name and s.modality == modality]
    if len(by_number) == 1:
        return by_number[0]
    present = "; ".join(s.describe() for s in series.values() if s.is_image) or "no image series"
    if len(by_number) > 1:
        raise DualpetInputError(
            f"{option} {name}: several series have this number; name one by SeriesInstanceUID "
            f"(series present: {present})"
        )
    raise DualpetInputError(f"{option} {name} not found (series present: {present})")


def _listing(series_list):
    return "; ".join(f"{s.describe()}: {s.why_not() or 'usable'}" for s in series_list)


def _usable(series, modality, named, option, what):
    """((the series the user named, why), [], "") or (None, the usable series of
    ``modality``, a note on their tier): ORIGINAL series (ImageType not DERIVED) when any
    qualifies, else derived volumes (see :attr:`Series.derived_volume`), named as such in
    the note. Refuses when none is usable, listing why each series of that modality is not
    and how to name one anyway."""
    if named:
        chosen = _named(series, named, option, modality)
        if chosen.modality != modality:
            name = {"PT": "PET", "CT": "CT"}.get(modality, modality)
            raise DualpetInputError(f"{option} {named} is {chosen.describe()}, not a {name} series")
        return (chosen, f"named by {option}" + (f" (note: {chosen.why_not()})" if chosen.rejections else "")), [], ""
    found = [s for s in series.values() if s.is_image and s.modality == modality]
    usable = [s for s in found if not s.rejections]
    if not usable:
        listing = _listing(found) if found else f"no {modality} image series in the folder"
        hint = (
            f"; to use one of them anyway, name it in the {option} (series number or SeriesInstanceUID)"
            if found
            else ""
        )
        raise DualpetInputError(f"no usable {what} series: {WANTED[modality]} is needed (found: {listing}){hint}")
    original = [s for s in usable if not s.derived_volume]
    if original:
        return None, original, ""
    return (
        None,
        usable,
        (
            f"no ORIGINAL {modality} series qualifies; ImageType {'/'.join(usable[0].image_type)} marks a volume "
            "derived from the reconstruction (e.g. converted by a workstation or archive), used as it is"
        ),
    )


#: What a usable series of each modality is (the refusal's words).
WANTED = {
    "PT": "a static axial volume with quantitative units (BQML, GML, CM2ML, or CNTS with a vendor factor), "
    "attenuation-corrected, not a picture made from it",
    "CT": "an axial volume, not a localizer or a picture made from it",
}


def choose_pet(series, named=None, *, option="studies-sheet column pet_series"):
    """The study's quantitative attenuation-corrected PET and why it was chosen (an
    ORIGINAL series before a derived volume, see :func:`_usable`).

    Raises :class:`DualpetInputError` listing the PET series when none or several qualify.
    """
    named_choice, usable, tier = _usable(series, "PT", named, option, "PET")
    if named_choice:
        return named_choice
    why = "the only PET series with quantitative units, attenuation correction and a static axial volume"
    if len(usable) > 1:
        cts = {s.frame_of_reference for s in series.values() if s.kind == "ct_axial"}
        with_ct = [s for s in usable if s.frame_of_reference in cts]
        if len(with_ct) == 1:
            why = why.replace("the only PET series", "of the usable PET series, the only one") + (
                " sharing its frame of reference with an axial CT"
            )
            return with_ct[0], why + (f" ({tier})" if tier else "")
        raise DualpetInputError(
            f"{len(usable)} candidate attenuation-corrected PET series; name one in the {option} "
            f"(series number or SeriesInstanceUID): " + "; ".join(s.describe() for s in usable)
        )
    return usable[0], why + (f" ({tier})" if tier else "")


def _z_range(s):
    z = [float(np.asarray(h.ImagePositionPatient, float)[2]) for h in s.headers if "ImagePositionPatient" in h]
    return (min(z), max(z)) if z else (0.0, 0.0)


def choose_ct(series, pet, named=None, *, option="studies-sheet column ct_series"):
    """The axial CT for ``pet`` and why: preferably of the PET's frame of reference; among
    several, the one covering the PET's axial range best, then the one whose slice spacing
    is closest to the PET's (the CT the scanner used for attenuation correction)."""
    named_choice, usable, tier = _usable(series, "CT", named, option, "axial CT")
    if named_choice:
        return named_choice
    note = f" ({tier})" if tier else ""
    same_frame = [s for s in usable if pet.frame_of_reference and s.frame_of_reference == pet.frame_of_reference]
    pool = same_frame or usable
    frame = (
        "sharing the PET's frame of reference"
        if same_frame
        else "(none shares the PET's frame of reference: registered)"
    )
    if len(pool) == 1:
        return pool[0], f"the only axial CT {frame}{note}"
    if not same_frame:
        raise DualpetInputError(
            f"{len(pool)} candidate axial CT series and none shares the PET's frame of reference; name one in the "
            f"{option} (series number or SeriesInstanceUID): " + "; ".join(s.describe() for s in pool)
        )
    lo, hi = _z_range(pet)
    pet_step = (hi - lo) / max(len(pet.files) - 1, 1)

    def rank(s):
        a, b = _z_range(s)
        coverage = max(0.0, min(b, hi + pet_step) - max(a, lo - pet_step)) / max(hi - lo + 2 * pet_step, 1e-6)
        step = (b - a) / max(len(s.files) - 1, 1)
        return (-round(coverage, 2), abs(step - pet_step), -len(s.files))

    ranked = sorted(pool, key=rank)
    if rank(ranked[0]) == rank(ranked[1]):
        raise DualpetInputError(
            f"{len(pool)} equally suitable axial CT series; name one in the {option} (series number or "
            "SeriesInstanceUID): " + "; ".join(s.describe() for s in pool)
        )
    return ranked[0], (
        f"of {len(pool)} axial CTs {frame}, the one covering the PET's axial range best with the slice "
        f"spacing closest to the PET's{note}"
    )


@dataclass
class Selection:
    """The series chosen in a study folder, why, and what was left aside."""

    pet: Series
    ct: Series
    pet_why: str
    ct_why: str
    series: dict = field(repr=False)

    def report(self):
        """JSON-ready account of the choice (series by number/description; no UIDs)."""
        skipped = [
            {
                "series": s.label,
                "modality": s.modality,
                "images": len(s.files),
                "not_used_because": s.why_not() or "not needed",
            }
            for s in self.series.values()
            if s.is_image and s is not self.pet and s is not self.ct
        ]
        objects = {}
        for s in self.series.values():
            if not s.is_image:
                name = object_name(s.sop_class)
                objects[name] = objects.get(name, 0) + len(s.files)
        return {
            "pet": {"series": self.pet.label, "chosen_because": self.pet_why},
            "ct": {"series": self.ct.label, "chosen_because": self.ct_why},
            "other_image_series": skipped,
            "non_image_objects_skipped": dict(sorted(objects.items())),
        }


def select_series(series, *, pet_uid=None, ct_uid=None):
    """Choose the AC PET and its axial CT (sheet columns ``pet_series`` / ``ct_series``
    name them when the folder is ambiguous). A pair of different frames of reference is
    returned too: the converter then registers them."""
    pet, pet_why = choose_pet(series, pet_uid)
    ct, ct_why = choose_ct(series, pet, ct_uid)
    return Selection(pet=pet, ct=ct, pet_why=pet_why, ct_why=ct_why, series=series)


def select_in_folder(dicom_dir, where, pet_series=None, ct_series=None):
    """A study folder's series read (headers only) and its PET and CT chosen
    (:func:`select_series`); a refusal names ``where`` and the folder's entries that were not
    read (why a series may be missing)."""
    series = scan_folder(dicom_dir)
    try:
        return select_series(series, pet_uid=pet_series or None, ct_uid=ct_series or None)
    except DualpetInputError as exc:
        raise DualpetInputError(f"{where}: {exc}{series.skipped_note()}") from exc


@dataclass
class Volume:
    """A stacked series: ``data[i, j, k]`` (column, row, slice), voxel->LPS ``affine``."""

    data: np.ndarray
    affine: np.ndarray
    datasets: list  # one per slice, in k order (pixel data released)
    slopes: np.ndarray
    geometry: dict = field(default_factory=dict)


def _where(series, label):
    return f"{label + ', ' if label else ''}{series.label}"


def _check_stack(datasets, where):
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
    return iop0


def _check_gaps(dist, where):
    """Refuse duplicate positions and gaps beyond the jitter tolerance; the gaps."""
    steps = np.diff(dist)
    if np.any(steps < 1e-3):
        k = int(np.argmin(steps))
        raise DualpetInputError(
            f"{where}: two slices at the same position {dist[k]:.2f} mm along the slice normal "
            "(attribute ImagePositionPatient; duplicate files or several series mixed)"
        )
    step = float(np.median(steps))
    bad = np.flatnonzero(np.abs(steps - step) > GAP_ATOL_MM + GAP_RTOL * step)
    if bad.size:
        k = int(bad[np.argmax(np.abs(steps[bad] - step))])
        n_missing = int(round(steps[k] / step)) - 1
        raise DualpetInputError(
            f"{where}: non-uniform slice spacing (attribute ImagePositionPatient): gap of "
            f"{steps[k]:.2f} mm instead of {step:.2f} mm after the slice at {dist[k]:.2f} mm "
            f"along the normal"
            + (f" ({n_missing} slice(s) missing)" if n_missing >= 1 else "")
            + f"; tolerated: {GAP_ATOL_MM:g} mm + {GAP_RTOL:.0%} of the spacing"
        )
    return steps


def stack_geometry(datasets, where):
    """Order slices along the slice normal and check the stack.

    Works on headers alone. Checks one orientation, one matrix size, no duplicate
    positions and gaps within the jitter tolerance (a larger gap names the missing
    position). The slice axis of the affine is the least-squares line through the slice
    positions, so jitter does not bias the spacing.

    Returns
    -------
    datasets : list, in slice order
    affine : ndarray (4, 4), voxel -> LPS mm
    geometry : dict
        ``slices``, ``slice_spacing_mm`` (fitted), ``slice_gaps_mm`` (min, max) and
        ``slice_position_max_deviation_mm`` (largest distance of a slice from the fit).
    """
    iop0 = _check_stack(datasets, where)
    normal = np.cross(iop0[:3], iop0[3:])
    positions = np.array([np.array(ds.ImagePositionPatient, float) for ds in datasets])
    order = np.argsort(positions @ normal, kind="stable")
    datasets = [datasets[i] for i in order]
    positions = positions[order]
    geometry = {"slices": len(datasets)}
    if len(datasets) > 1:
        steps = _check_gaps(positions @ normal, where)
        k = np.arange(len(datasets), dtype=float)
        design = np.stack([np.ones_like(k), k], axis=1)
        (origin, slice_step), *_ = np.linalg.lstsq(design, positions, rcond=None)
        deviation = float(np.linalg.norm(positions - design @ np.stack([origin, slice_step]), axis=1).max())
        spacing = float(abs(slice_step @ normal))
        if deviation > GAP_ATOL_MM + GAP_RTOL * spacing:
            raise DualpetInputError(
                f"{where}: slice positions drift from a uniform stack by up to {deviation:.2f} mm (attribute "
                f"ImagePositionPatient; tolerated: {GAP_ATOL_MM:g} mm + {GAP_RTOL:.0%} of the {spacing:.2f} mm spacing)"
            )
        geometry.update(
            slice_spacing_mm=round(spacing, 5),
            slice_gaps_mm=[round(float(steps.min()), 4), round(float(steps.max()), 4)],
            slice_position_max_deviation_mm=round(deviation, 4),
        )
    else:
        thickness = float(datasets[0].get("SliceThickness", 1.0) or 1.0)
        origin, slice_step = positions[0], normal * thickness
        geometry.update(slice_spacing_mm=thickness, slice_position_max_deviation_mm=0.0)
    affine = dicom_affine_lps(iop0, datasets[0].PixelSpacing, origin, slice_step)
    for k, ds in enumerate(datasets):  # refused here already at inspection, before any pixel is read
        rescale(ds, where, k, len(datasets))
    return datasets, affine, geometry


def rescale(ds, where, k, nk):
    """(RescaleSlope, RescaleIntercept) of one image: absent means 1 and 0; a slope that is
    zero, negative or not a number is refused (read as 1 it would give wrong values)."""
    values = []
    for keyword, tag, default in (("RescaleSlope", "(0028,1053)", 1.0), ("RescaleIntercept", "(0028,1052)", 0.0)):
        raw = ds.get(keyword)
        if raw is None or str(raw).strip() == "":
            values.append(default)
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = float("nan")
        if not np.isfinite(value) or (keyword == "RescaleSlope" and value <= 0):
            raise DualpetInputError(
                f"{where}: {keyword} {tag} of image InstanceNumber {header_text(ds, 'InstanceNumber') or '?'} (slice {k + 1} "
                f"of {nk}) is {str(raw).strip()[:20]!r}: stored values cannot be rescaled"
            )
        values.append(value)
    return values[0], values[1]


def read_headers(series, *, label=None):
    """The series' headers (no pixel data) in slice order, the affine and the geometry."""
    return stack_geometry(_datasets(series, label), _where(series, label))


def _datasets(series, label):
    """The series' datasets: the headers parsed by :func:`scan_folder`, else read now."""
    if len(series.headers) == len(series.files):
        return list(series.headers)
    where = _where(series, label)
    datasets = []
    for n, path in enumerate(series.files, start=1):
        try:
            datasets.append(pydicom.dcmread(path, defer_size=4096, force=True))
        except Exception as exc:  # corrupt file: say which (not by file name: names are often UIDs)
            raise DualpetInputError(
                f"{where}: cannot read its file {n} of {len(series.files)}: {redact_paths(exc)}"
            ) from exc
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
    datasets, affine, geometry = stack_geometry(_datasets(series, label), where)
    nk = len(datasets)
    # Filled a slice at a time in memory order ([k, j, i], each slice contiguous) and handed
    # out as its [i, j, k] view (Fortran order, NIfTI's own): writing slices into the last
    # axis of a C-order array strides every value (a clinical CT 1.4 -> 1.0 s).
    stack = np.empty((nk, int(datasets[0].Rows), int(datasets[0].Columns)), dtype=dtype)
    slopes = np.empty(nk)
    for k, ds in enumerate(datasets):
        slope, intercept = rescale(ds, where, k, nk)
        slopes[k] = slope
        try:
            pix = ds.pixel_array
        except Exception as exc:  # truncated or undecodable pixel data: name the image (not its file: often a UID)
            raise DualpetInputError(
                f"{where}: cannot decode the pixel data of image InstanceNumber {header_text(ds, 'InstanceNumber') or '?'} "
                f"(slice {k + 1} of {nk}; attribute PixelData): {redact_paths(exc)}"
            ) from exc
        if stack.dtype == np.float32 and _exact_in_float32(pix, slope, intercept):
            stack[k] = pix  # whole numbers below 2**24: float32 holds every step exactly
            if slope != 1:
                stack[k] *= np.float32(slope)
            stack[k] += np.float32(intercept)
        else:
            stack[k] = pix.astype(np.float64) * slope + intercept
        del ds.PixelData
    data = stack.transpose(2, 1, 0)
    tilt = shear_deg(affine)
    if tilt > MAX_SHEAR_DEG:  # gantry tilt: slices stepped along z, not along their normal
        outside = -1024.0 if header_text(datasets[0], "Modality") == "CT" else 0.0
        data, affine = deshear(data, affine, outside)
        geometry = {**geometry, "gantry_tilt_deg": round(tilt, 2), "resampled": "gantry tilt removed (linear)"}
    return Volume(data=data, affine=affine, datasets=datasets, slopes=slopes, geometry=geometry)


def _exact_in_float32(pix, slope, intercept):
    """Whether ``pix * slope + intercept`` (whole stored values, a whole slope and
    intercept, as a CT's usually are) stays a whole number below 2**24 at every step, so
    float32 arithmetic gives exactly what float64's rounded to float32 does."""
    whole = float(slope).is_integer() and float(intercept).is_integer()  # (False for NaN, inf)
    if pix.dtype.kind not in "iu" or pix.dtype.itemsize > 2 or not whole:
        return False
    return 65536 * abs(slope) + abs(intercept) < 2**24


#: Angle (degrees) between the slice step and the slices' normal above which a stack is
#: sheared (a gantry-tilted CT) and is resampled onto an orthogonal grid, as dcm2niix does:
#: a sheared affine is read rotated by SimpleITK (which keeps orthonormal directions only).
MAX_SHEAR_DEG = 0.1


def shear_deg(affine):
    """Angle (degrees) between the slice axis and the normal of the in-plane axes."""
    a = np.asarray(affine, float)[:3, :3]
    normal = np.cross(a[:, 0], a[:, 1])
    cos = abs(normal @ a[:, 2]) / (np.linalg.norm(normal) * np.linalg.norm(a[:, 2]))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def deshear(data, affine, outside):
    """A sheared stack resampled (linear) onto an orthogonal grid: the rows' axis kept, the
    slice axis along the slice step (the table's direction), the column axis orthogonal to
    both; the same spacings; extent covering the whole stack."""
    from scipy import ndimage

    a = np.asarray(affine, float)
    row, col, step = a[:3, 0], a[:3, 1], a[:3, 2]
    z_axis = step / np.linalg.norm(step)
    x_axis = row - (row @ z_axis) * z_axis  # the rows' direction, made orthogonal to the table's
    x_axis /= np.linalg.norm(x_axis)
    y_axis = np.cross(z_axis, x_axis)
    if y_axis @ col < 0:
        y_axis = -y_axis
    spacing = np.array([np.linalg.norm(row), np.linalg.norm(col), np.linalg.norm(step)])
    # the stack's corners in the new frame: the new grid's extent
    corners = np.array(
        [[i, j, k] for i in (0, data.shape[0] - 1) for j in (0, data.shape[1] - 1) for k in (0, data.shape[2] - 1)],
        float,
    )
    world = corners @ a[:3, :3].T + a[:3, 3]
    frame = np.stack([x_axis, y_axis, z_axis], axis=1)  # columns: the new axes (unit)
    local = (world - a[:3, 3]) @ frame / spacing
    lo, hi = np.floor(local.min(axis=0) + 1e-6), np.ceil(local.max(axis=0) - 1e-6)
    shape = tuple(int(v) for v in hi - lo + 1)
    new = np.eye(4)
    new[:3, :3] = frame * spacing
    new[:3, 3] = a[:3, 3] + frame @ (lo * spacing)
    grid = np.indices(shape, dtype=np.float64).reshape(3, -1)
    src = np.linalg.solve(a, new) @ np.vstack([grid, np.ones(grid.shape[1])])
    out = ndimage.map_coordinates(
        data, src[:3], order=1, mode="constant", cval=outside, output=np.float32, prefilter=False
    )
    return out.reshape(shape).astype(data.dtype), new
