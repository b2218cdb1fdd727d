"""The reliability campaign's cases (issue 23), as data: each names what it does to a copy of
a generated study folder and the outcome dualpet must give.

Outcomes:

- ``included``: the study passes inspection and converts to the same numbers as the
  untouched study (the PET's SUVs and the CT's HU, voxel for voxel);
- ``excluded``: inspection (or conversion) refuses it with one line that names the
  patient and study and matches ``expect`` (the series and the DICOM attribute at fault);
- for sheet and config attacks (:data:`ATTACKS`), ``refused``: the dry run stops before
  any job, with a message matching ``expect``, and nothing it should not say.

``SHORT`` lists the cases ``make test`` runs; ``make test-reliability`` runs them all.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom


@dataclass
class Case:
    name: str
    apply: Callable[[Path], None]  # mutates a copy of the study folder (PT_3, CT_2 inside)
    outcome: str  # included or excluded
    expect: str = ""  # regex the exclusion line must match
    numbers: bool = True  # included: the converted volumes equal the untouched study's


def _files(folder, series):
    return sorted(
        (folder / series).glob("*.dcm"),
        key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]),
    )


def _edit(folder, series, every=None, only=None, **attrs):
    """Set attributes (values or callables of the dataset) on a series' files (all, every
    n-th, or the ``only``-th in slice order)."""
    files = _files(folder, series)
    chosen = [files[only]] if only is not None else files[::every] if every else files
    for p in chosen:
        ds = pydicom.dcmread(p)
        for key, value in attrs.items():
            if value is None:
                if key in ds:
                    delattr(ds, key)
            else:
                setattr(ds, key, value(ds) if callable(value) else value)
        ds.save_as(p)


def _radiopharm(folder, **attrs):
    for p in _files(folder, "PT_3"):
        ds = pydicom.dcmread(p)
        item = ds.RadiopharmaceuticalInformationSequence[0]
        for key, value in attrs.items():
            if value is None:
                delattr(item, key)
            else:
                setattr(item, key, value)
        ds.save_as(p)


def _rename_to_uids(folder):
    for n, p in enumerate(sorted(folder.rglob("*.dcm"))):
        p.rename(p.with_name(f"1.2.826.0.1.3680043.{n}"))


def _strip_preamble(folder):
    for p in sorted((folder / "PT_3").glob("*.dcm"))[::3]:
        raw = p.read_bytes()
        ds = pydicom.dcmread(p)
        ds.preamble = None
        pydicom.dcmwrite(p, ds, enforce_file_format=False)
        assert p.read_bytes() != raw


def _foreign_files(folder):
    (folder / "README.txt").write_text("exported by a workstation\n")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 64)
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + b"\x00" * 64)
    (folder / "PT_3" / "DICOMDIR.bak").write_bytes(b"\x00" * 200)


def _nest(folder):
    deep = folder / "a" / "b" / "c"
    deep.mkdir(parents=True)
    shutil.move(str(folder / "PT_3"), str(deep / "PT_3"))


def _shuffle_instance_numbers(folder):
    files = _files(folder, "PT_3")
    for n, p in enumerate(reversed(files)):
        ds = pydicom.dcmread(p)
        ds.InstanceNumber = (n * 7) % len(files) + 1
        ds.save_as(p)


def _delete_slice(folder):
    _files(folder, "PT_3")[20].unlink()


def _truncate(folder):
    p = _files(folder, "PT_3")[7]
    p.write_bytes(p.read_bytes()[:-500])


def _duplicate_file(folder):
    p = _files(folder, "PT_3")[5]
    shutil.copy(p, p.with_name(p.stem + " (1).dcm"))


def _other_patients_pet(folder):
    _edit(folder, "PT_3", PatientID="ZZ9999999")


def _no_ct(folder):
    shutil.rmtree(folder / "CT_2")


def _half_ct(folder):
    for p in _files(folder, "CT_2")[: len(list((folder / "CT_2").glob("*.dcm"))) // 2]:
        p.unlink()


def _empty(folder):
    for child in list(folder.iterdir()):
        shutil.rmtree(child) if child.is_dir() else child.unlink()


def _symlinked_series(folder):
    target = folder.parent / (folder.name + "_elsewhere")
    shutil.move(str(folder / "PT_3"), str(target))
    (folder / "PT_3").symlink_to(target, target_is_directory=True)


def _week_later(ds):
    return (dt.datetime.strptime(ds.AcquisitionDate, "%Y%m%d") + dt.timedelta(days=7)).strftime("%Y%m%d")


def _one_slice_other_size(folder):
    p = _files(folder, "PT_3")[11]
    ds = pydicom.dcmread(p)
    arr = ds.pixel_array[:-2, :]
    ds.Rows = arr.shape[0]
    ds.PixelData = arr.tobytes()
    ds.save_as(p)


def _gantry_tilt(folder):
    import math

    t = math.radians(7.5)
    _edit(folder, "CT_2", ImageOrientationPatient=[1, 0, 0, 0, math.cos(t), math.sin(t)])


CASES = [
    # ---- the same study in another dress: included, same numbers
    Case("files named by UID", _rename_to_uids, "included"),
    Case("files without preamble", _strip_preamble, "included"),
    Case("foreign files beside the DICOM", _foreign_files, "included"),
    Case("series nested three folders deep", _nest, "included"),
    Case("InstanceNumber shuffled", _shuffle_instance_numbers, "included"),
    Case("CorrectedImage single-valued", lambda f: _edit(f, "PT_3", CorrectedImage="ATTN"), "included"),
    Case(
        "AttenuationCorrectionMethod free text",
        lambda f: _edit(f, "PT_3", AttenuationCorrectionMethod="CT, measured"),
        "included",
    ),
    Case("a file copied twice ('x (1).dcm')", _duplicate_file, "included"),
    Case("gantry-tilted CT (PET unchanged)", _gantry_tilt, "included", numbers=False),
    Case(
        "PET volume DERIVED/SECONDARY (a workstation's copy)",
        lambda f: _edit(f, "PT_3", ImageType=["DERIVED", "SECONDARY"]),
        "included",
    ),
    # ---- silently wrong numbers before: refused, naming the attribute
    Case(
        "RescaleSlope 0 in one slice",
        lambda f: _edit(f, "PT_3", only=9, RescaleSlope="0"),
        "excluded",
        r"RescaleSlope \(0028,1053\) of image InstanceNumber",
    ),
    Case(
        "RescaleSlope negative",
        lambda f: _edit(f, "PT_3", RescaleSlope="-1"),
        "excluded",
        r"RescaleSlope \(0028,1053\)",
    ),
    Case(
        "RescaleIntercept not zero", lambda f: _edit(f, "PT_3", RescaleIntercept="100"), "excluded", r"RescaleIntercept"
    ),
    # ---- what SUV needs, missing or implausible
    Case("Units CPS", lambda f: _edit(f, "PT_3", Units="CPS"), "excluded", r"Units CPS"),
    Case("Units missing", lambda f: _edit(f, "PT_3", Units=None), "excluded", r"Units \(0054,1001\) missing"),
    Case(
        "PatientWeight missing",
        lambda f: _edit(f, "PT_3", PatientWeight=None),
        "excluded",
        r"PatientWeight \(0010,1030\)",
    ),
    Case("PatientWeight 0", lambda f: _edit(f, "PT_3", PatientWeight="0"), "excluded", r"PatientWeight \(0010,1030\)"),
    Case(
        "RadionuclideTotalDose missing",
        lambda f: _radiopharm(f, RadionuclideTotalDose=None),
        "excluded",
        r"RadionuclideTotalDose \(0018,1074\)",
    ),
    Case(
        "RadionuclideHalfLife missing",
        lambda f: _radiopharm(f, RadionuclideHalfLife=None, RadionuclideCodeSequence=None),
        "excluded",
        r"RadionuclideHalfLife \(0018,1075\)",
    ),
    Case(
        "SeriesType DYNAMIC",
        lambda f: _edit(f, "PT_3", SeriesType=["DYNAMIC", "IMAGE"]),
        "excluded",
        r"SeriesType DYNAMIC",
    ),
    Case(
        "PET not attenuation-corrected",
        lambda f: _edit(f, "PT_3", CorrectedImage=["DECY", "NORM"]),
        "excluded",
        r"CorrectedImage lacks ATTN",
    ),
    Case(
        "PET as a MIP",
        lambda f: _edit(f, "PT_3", ImageType=["DERIVED", "SECONDARY", "MIP"]),
        "excluded",
        r"ImageType DERIVED/SECONDARY/MIP",
    ),
    # ---- slices and pixels
    Case("one PET slice missing", _delete_slice, "excluded", r"ImagePositionPatient.*1 slice\(s\) missing"),
    Case("a truncated PET file", _truncate, "excluded", r"PixelData|InstanceNumber"),
    Case("one slice of another matrix size", _one_slice_other_size, "excluded", r"Rows|Columns|matrix"),
    Case(
        "two acquisitions mixed in the PET",
        lambda f: _edit(f, "PT_3", every=2, AcquisitionDate=_week_later),
        "excluded",
        r"mixes images of more than one acquisition: AcquisitionDate",
    ),
    Case(
        "two patients' weights in the PET",
        lambda f: _edit(f, "PT_3", every=2, PatientWeight="99"),
        "excluded",
        r"mixes images of more than one acquisition: PatientWeight \(0010,1030\)",
    ),
    # ---- the folder
    Case("another patient's PET in the folder", _other_patients_pet, "excluded", r"different PatientID \(0010,0020\)"),
    Case("no CT", _no_ct, "excluded", r"no usable axial CT series"),
    Case("a CT covering half the PET", _half_ct, "excluded", r"max_uncovered_fraction"),
    Case("an empty folder", _empty, "excluded", r"no usable PET series.*no PT image series"),
    Case(
        "the PET folder a symbolic link", _symlinked_series, "excluded", r"symbolic link to a folder \(not followed\)"
    ),
]

#: The cases `make test` runs (the rest: `make test-reliability`).
SHORT = {
    "files named by UID",
    "RescaleSlope 0 in one slice",
    "Units CPS",
    "one PET slice missing",
    "two acquisitions mixed in the PET",
    "PET volume DERIVED/SECONDARY (a workstation's copy)",
    "an empty folder",
}


@dataclass
class Attack:
    """A hostile or broken sheet or config: the dry run must refuse it before any job."""

    name: str
    files: dict  # relative path -> text (or a callable of the work dir writing it)
    expect: str
    never: list = field(default_factory=list)  # text the output must not contain


_SHEET = "patient\ttracer\tdicom_dir\n"
_GOOD = _SHEET + "P1\tfdg\td\nP1\tpentixafor\td\n"
_FOLDER = {"d/keep.txt": ""}  # the sheet's study folder exists (a missing one is refused first)

ATTACKS = [
    Attack(
        "duplicate config key",
        {
            "config/config.yaml": "studies: s.tsv\nindex_tracer: pentixafor\nindex_tracer: fdg\n",
            "s.tsv": _GOOD,
            **_FOLDER,
        },
        r"key 'index_tracer' given twice",
    ),
    Attack(
        "shell injection in a patient ID",
        {
            "config/config.yaml": "studies: s.tsv\n",
            "s.tsv": _SHEET + "P1;touch pwned\tfdg\td\nP1;touch pwned\tpentixafor\td\n",
        },
        r"line 2, column patient: .* is not valid",
        never=["Traceback"],
    ),
    Attack(
        "braces in a mask path",
        {
            "config/config.yaml": "studies: s.tsv\n",
            "s.tsv": _SHEET[:-1] + "\tlesion_mask\nP1\tfdg\td\tm{x}.nii\nP1\tpentixafor\td\t\n",
        },
        r"column lesion_mask: 'm\{x\}.nii' is not valid",
        never=["WildcardError"],
    ),
    Attack(
        "a quote swallowing rows",
        {"config/config.yaml": "studies: s.tsv\n", "s.tsv": _SHEET + 'P1\tfdg\t"d\nP1\tpentixafor\td\n'},
        r"line 2: a double quote \(\"\) opens a cell",
    ),
    Attack(
        "a system file as the clinical sheet",
        {"config/config.yaml": "studies: s.tsv\nclinical: /etc/passwd\n", "s.tsv": _GOOD, **_FOLDER},
        r"clinical sheet /etc/passwd.*not a header of tab-separated column names",
        never=["root:x"],
    ),
    Attack(
        "a device as the clinical sheet",
        {"config/config.yaml": "studies: s.tsv\nclinical: /dev/zero\n", "s.tsv": _GOOD, **_FOLDER},
        r"not a regular file",
    ),
    Attack(
        "a tracer the config does not know",
        {"config/config.yaml": "studies: s.tsv\n", "s.tsv": _SHEET + "P1\tfdg\td\nP1\tga68\td\n"},
        r"not configured",
    ),
    Attack(
        "a review decision that is not one",
        {
            "config/config.yaml": "studies: s.tsv\nreview: r.tsv\n",
            "s.tsv": _GOOD,
            **_FOLDER,
            "r.tsv": "patient\ttracer\tx\ty\tz\tdecision\nP1\tfdg\t1\t2\t3\tdelete\n",
        },
        r"review sheet .*r.tsv, line 2, column decision",
    ),
    Attack(
        "a review position of 1e999",
        {
            "config/config.yaml": "studies: s.tsv\nreview: r.tsv\n",
            "s.tsv": _GOOD,
            **_FOLDER,
            "r.tsv": "patient\ttracer\tx\ty\tz\tdecision\nP1\tfdg\t1e999\t2\t3\treject\n",
        },
        r"r.tsv, line 2, column x",
    ),
]

ATTACKS += [
    Attack(
        "a misspelt optional column",
        {
            "config/config.yaml": "studies: s.tsv\n",
            **_FOLDER,
            "s.tsv": _SHEET[:-1] + "\tbackgorund_lps\nP1\tfdg\td\t\nP1\tpentixafor\td\t\n",
        },
        r"line 1: unknown column 'backgorund_lps' \(did you mean 'background_lps'\?\)",
        never=["Traceback"],
    ),
    Attack(
        "spaces instead of tabs",
        {"config/config.yaml": "studies: s.tsv\n", **_FOLDER, "s.tsv": _SHEET + "P1\tfdg\td\nP1 pentixafor d\n"},
        r"line 3: 1 field where the header has 3: separate the columns by tabs",
        never=["Traceback"],
    ),
    Attack(
        "a study folder that does not exist",
        {
            "config/config.yaml": "studies: s.tsv\n",
            **_FOLDER,
            "s.tsv": _SHEET + "P1\tfdg\td\nP1\tpentixafor\tRichter^Frank_MRN123\n",
        },
        r"line 3, column dicom_dir: the folder does not exist",
        never=["Traceback", "Richter", "MRN123"],
    ),
    Attack(
        "a misspelt setting",
        {"config/config.yaml": "studies: s.tsv\ndetecton:\n  method: local\n", "s.tsv": _GOOD, **_FOLDER},
        r"config config.yaml: unknown setting 'detecton' \(did you mean 'detection'\?\)",
        never=["Traceback", "Failed validating"],
    ),
    Attack(
        "a study folder that is a file",
        {
            "config/config.yaml": "studies: s.tsv\n",
            **_FOLDER,
            "f": "x",
            "s.tsv": _SHEET + "P1\tfdg\td\nP1\tpentixafor\tf\n",
        },
        r"line 3, column dicom_dir: this is a file, not a folder",
        never=["Traceback"],
    ),
]

SHORT_ATTACKS = {"duplicate config key", "braces in a mask path", "a system file as the clinical sheet"}
