"""DICOM reading, geometry and SUVbw: against hand computation, dicom2nifti, and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dualpet.convert import convert_pet, convert_study
from dualpet.dicom import choose_pet, load_series, scan_folder, select_series
from dualpet.errors import DualpetInputError
from dualpet.geometry import apply_affine, lps_affine
from dualpet.suv import suv_factor


def _pet_header(**over):
    """A minimal PET slice header for SUV tests (values chosen for hand computation)."""
    ds = Dataset()
    ds.Units = "BQML"
    ds.DecayCorrection = "START"
    ds.PatientWeight = "75"
    ds.SeriesDate, ds.SeriesTime = "20240310", "110000"
    ds.AcquisitionDate, ds.AcquisitionTime = "20240310", "110000"
    ds.RescaleIntercept, ds.RescaleSlope = "0", "1"
    item = Dataset()
    item.RadionuclideTotalDose = "370000000"
    item.RadionuclideHalfLife = "6586.2"
    item.RadiopharmaceuticalStartDateTime = "20240310100000"
    ds.RadiopharmaceuticalInformationSequence = Sequence([item])
    for key, value in over.items():
        if key.startswith("rp_"):
            setattr(item, key[3:], value)
        else:
            setattr(ds, key, value)
    return ds


# Hand computation: 370 MBq at 10:00, reference 11:00 (3600 s), F-18:
# dose(ref) = 370e6 * 2^(-3600/6586.2); SUV factor = 75000 g / dose(ref).
EXPECTED = 75000.0 / (370e6 * 2 ** (-3600 / 6586.2))


def test_suv_textbook_start():
    out = suv_factor([_pet_header()])
    assert out["factor"] == pytest.approx(EXPECTED, rel=1e-9)
    assert out["reference_time_source"] == "series_time"
    assert out["injection_to_reference_s"] == 3600


def test_suv_dose_in_mbq_and_weight_in_grams():
    out = suv_factor([_pet_header(rp_RadionuclideTotalDose="370", PatientWeight="75000")])
    assert out["factor"] == pytest.approx(EXPECTED, rel=1e-9)
    assert out["dose_source"] == "MBq_converted" and out["weight_source"] == "grams_converted"


def test_suv_injection_time_before_midnight():
    # injected 23:30 the day before, scanned 00:30: one hour of decay, not minus 23 h
    ds = _pet_header(SeriesTime="003000", AcquisitionTime="003000", rp_RadiopharmaceuticalStartTime="233000")
    del ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime
    out = suv_factor([ds])
    assert out["injection_time_source"] == "start_time_previous_day"
    assert out["factor"] == pytest.approx(EXPECTED, rel=1e-9)


def test_suv_admin_needs_no_decay():
    out = suv_factor([_pet_header(DecayCorrection="ADMIN")])
    assert out["factor"] == pytest.approx(75000.0 / 370e6, rel=1e-9)


def test_suv_half_life_from_radionuclide_code():
    ds = _pet_header()
    item = ds.RadiopharmaceuticalInformationSequence[0]
    del item.RadionuclideHalfLife
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "C-111A1", "SRT", "^18^Fluorine"
    item.RadionuclideCodeSequence = Sequence([code])
    out = suv_factor([ds])
    assert out["half_life_source"] == "radionuclide_code"
    assert out["factor"] == pytest.approx(EXPECTED, rel=1e-9)


def test_series_time_after_acquisition_uses_acquisition():
    # post-processed series: SeriesTime 11:30 after the acquisition at 11:00
    out = suv_factor([_pet_header(SeriesTime="113000")])
    assert out["reference_time_source"] == "earliest_acquisition_time"
    assert out["factor"] == pytest.approx(EXPECTED, rel=1e-9)


@pytest.mark.parametrize(
    "over, attribute",
    [
        ({"Units": "CPS"}, "Units"),
        ({"PatientWeight": "0"}, "PatientWeight"),
        ({"rp_RadionuclideTotalDose": "0"}, "RadionuclideTotalDose"),
        ({"RescaleIntercept": "5"}, "RescaleIntercept"),
        ({"DecayCorrection": "WEIRD"}, "DecayCorrection"),
    ],
)
def test_suv_refusals_name_the_attribute(over, attribute):
    with pytest.raises(DualpetInputError, match=attribute):
        suv_factor([_pet_header(**over)], where="patient X, series 1.2.3")


# --- reading real (synthetic) series -------------------------------------------------


@pytest.fixture(scope="module")
def study(cohort_dir):
    return cohort_dir / "dicom" / "P001" / "fdg"


def test_nifti_world_equals_dicom_lps(study, tmp_path):
    """A voxel's world position from the NIfTI equals the DICOM LPS position with x, y negated."""
    convert_study(
        study,
        patient="P001",
        tracer="fdg",
        ct_out=tmp_path / "ct.nii.gz",
        pet_out=tmp_path / "pet.nii.gz",
        json_out=tmp_path / "pet.json",
    )
    img = nib.load(tmp_path / "pet.nii.gz")
    dss = [pydicom.dcmread(p, stop_before_pixels=True) for p in (study / "PT_3").glob("*.dcm")]
    dss.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    for k in (0, 17, len(dss) - 1):
        ds = dss[k]
        ipp = np.array(ds.ImagePositionPatient, float)
        iop = np.array(ds.ImageOrientationPatient, float)
        col, row = float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0])
        for i, j in ((0, 0), (5, 9), (80, 3)):  # i = column, j = row
            lps = ipp + i * col * iop[:3] + j * row * iop[3:]
            ras = apply_affine(img.affine, [i, j, k])
            assert np.allclose(ras, [-lps[0], -lps[1], lps[2]], atol=1e-3)
    assert img.header.get_xyzt_units()[0] == "mm"
    assert img.get_data_dtype() == np.float32


def test_file_names_and_order_do_not_matter(study, tmp_path):
    """Shuffled, renamed files in nested folders give the same volume (order by position)."""
    src = sorted((study / "PT_3").glob("*.dcm"))
    rng = np.random.default_rng(0)
    for n, p in enumerate(rng.permutation(src)):
        dst = tmp_path / f"sub{n % 3}" / f"x{rng.integers(1e9)}"
        dst.parent.mkdir(exist_ok=True)
        shutil.copy(p, dst)
    (tmp_path / "README.txt").write_text("not DICOM")
    a = load_series(next(iter(scan_folder(study / "PT_3").values())))
    b = load_series(next(iter(scan_folder(tmp_path).values())))
    assert np.array_equal(a.data, b.data) and np.allclose(a.affine, b.affine)


def test_matches_dicom2nifti(study, tmp_path):
    """Our stacking agrees with dicom2nifti (a core dependency) on CT and PET, in world space."""
    import dicom2nifti.convert_dicom as c2n

    for series in ("CT_2", "PT_3"):
        dss = [pydicom.dcmread(p) for p in (study / series).glob("*.dcm")]
        ref = c2n.dicom_array_to_nifti(dss, str(tmp_path / f"{series}.nii.gz"), reorient_nifti=True)["NII"]
        ours = load_series(next(iter(scan_folder(study / series).values())))
        ref_c = nib.as_closest_canonical(ref)
        ours_c = nib.as_closest_canonical(nib.Nifti1Image(ours.data, np.diag([-1, -1, 1, 1]) @ ours.affine))
        assert np.allclose(ref_c.affine, ours_c.affine, atol=1e-3)
        # per-slice slopes: dicom2nifti keeps them (float); float32 rounding only
        assert np.allclose(np.asarray(ref_c.dataobj, float), np.asarray(ours_c.dataobj), rtol=1e-5, atol=1e-3)


def test_varying_slopes_first_slice_slope_one(study, tmp_path):
    """Per-slice RescaleSlope applied even when the first slice's slope is exactly 1."""
    files = sorted((study / "PT_3").glob("*.dcm"))
    dss = [pydicom.dcmread(p) for p in files]
    dss.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    expected = []
    for k, ds in enumerate(dss):
        slope = 1.0 if k == 0 else 0.25 * (1 + k % 7)
        ds.RescaleSlope = f"{slope:g}"
        expected.append(ds.pixel_array.T * slope)
        ds.save_as(tmp_path / f"{k:04d}.dcm")
    vol = load_series(next(iter(scan_folder(tmp_path).values())))
    assert vol.data.dtype == np.float32
    assert np.allclose(vol.data, np.stack(expected, axis=2), rtol=1e-6)


@pytest.mark.parametrize(
    ("series", "slopes", "intercept"),
    [
        ("CT_2", (1, 1), -1024),  # a CT's usual whole numbers: the float32 path
        ("CT_2", (2, 3), -1000),  # whole slopes varying per slice: still float32
        ("CT_2", (1, 0.5), -1024.25),  # a fraction anywhere: float64 then rounded
        ("PT_3", (0.37, 1.9e-3), 0),
    ],
)
def test_rescale_is_float64_rounded_once_whatever_the_path(study, tmp_path, series, slopes, intercept):
    """Every voxel is ``stored * slope + intercept`` computed in float64 and rounded once
    to float32, whether load_series takes its exact float32 shortcut (whole stored values
    and a whole slope and intercept) or not; the volume is [i, j, k] in NIfTI's order."""
    dss = sorted(
        (pydicom.dcmread(p) for p in (study / series).glob("*.dcm")), key=lambda d: float(d.ImagePositionPatient[2])
    )
    expected = []
    for k, ds in enumerate(dss):
        ds.RescaleSlope, ds.RescaleIntercept = f"{slopes[k % 2]:g}", f"{intercept:g}"
        expected.append((ds.pixel_array.T.astype(np.float64) * slopes[k % 2] + intercept).astype(np.float32))
        ds.save_as(tmp_path / f"{k:04d}.dcm")
    vol = load_series(next(iter(scan_folder(tmp_path).values())))
    assert vol.data.dtype == np.float32 and vol.data.shape == expected[0].shape + (len(dss),)
    assert np.array_equal(vol.data, np.stack(expected, axis=2))  # to the bit: no tolerance needed


@pytest.mark.parametrize(("intercept", "dtype"), [(-1024, np.int16), (-1024.5, np.float32), (-40000, np.float32)])
def test_the_ct_is_stored_as_int16_exactly_when_that_loses_nothing(study, tmp_path, intercept, dtype):
    """Whole HU within int16's range are written as int16; a fraction, or a value beyond
    int16's range (here the lowest, -40000 + stored), keeps float32: the values read back
    are the rescaled ones either way."""
    shutil.copytree(study / "PT_3", tmp_path / "in" / "PT_3")
    for k, p in enumerate(sorted((study / "CT_2").glob("*.dcm"))):
        ds = pydicom.dcmread(p)
        ds.RescaleIntercept = f"{intercept:g}"
        (tmp_path / "in" / "CT_2").mkdir(parents=True, exist_ok=True)
        ds.save_as(tmp_path / "in" / "CT_2" / f"{k:04d}.dcm")
    out = {k: tmp_path / f"{k}.nii.gz" for k in ("ct", "pet")}
    convert_study(tmp_path / "in", patient="P001", tracer="fdg", ct_out=out["ct"], pet_out=out["pet"], json_out=None)
    img = nib.load(out["ct"])
    expected = load_series(next(s for s in scan_folder(tmp_path / "in").values() if s.kind == "ct_axial")).data
    assert img.get_data_dtype() == dtype
    assert np.array_equal(np.asarray(img.dataobj, np.float32), expected)


def test_missing_slice_names_the_gap(study, tmp_path):
    files = sorted((study / "PT_3").glob("*.dcm"), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    for p in files[:20] + files[21:]:
        shutil.copy(p, tmp_path / p.name)
    gone = float(pydicom.dcmread(files[20]).ImagePositionPatient[2])
    with pytest.raises(DualpetInputError, match=r"gap of 8\.00 mm.*1 slice\(s\) missing") as err:
        load_series(next(iter(scan_folder(tmp_path).values())))
    assert "ImagePositionPatient" in str(err.value)
    assert f"{gone - 4.0:.2f}" in str(err.value)  # the slice before the gap is named


def test_ambiguous_series_lists_candidates(study, tmp_path):
    shutil.copytree(study, tmp_path / "s")
    extra = tmp_path / "s" / "PT_copy"
    extra.mkdir()
    uid = "1.2.3.4.5.6"
    for p in (study / "PT_3").glob("*.dcm"):
        ds = pydicom.dcmread(p)
        ds.SeriesInstanceUID = uid
        ds.SeriesDescription = "PET copy"
        ds.save_as(extra / p.name)
    series = scan_folder(tmp_path / "s")
    with pytest.raises(DualpetInputError, match="2 candidate attenuation-corrected PET series.*pet_series") as err:
        select_series(series)
    assert "PET copy" in str(err.value) and uid not in str(err.value)  # named by number/description
    choice = select_series(series, pet_uid=uid)
    assert choice.pet.uid == uid and choice.ct.kind == "ct_axial"


def test_nac_and_localizer_are_not_chosen(study, tmp_path):
    shutil.copytree(study, tmp_path / "s")
    for name, kind in (("NAC", "pet_nac"), ("SCOUT", "localizer")):
        src = "PT_3" if kind == "pet_nac" else "CT_2"
        (tmp_path / "s" / name).mkdir()
        for p in sorted((study / src).glob("*.dcm"))[:3]:
            ds = pydicom.dcmread(p)
            ds.SeriesInstanceUID = f"1.2.3.{len(name)}"
            if kind == "pet_nac":
                ds.CorrectedImage = ["DECY", "NORM"]
            else:
                ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
            ds.save_as(tmp_path / "s" / name / p.name)
    series = scan_folder(tmp_path / "s")
    assert sorted(s.kind for s in series.values()) == ["ct_axial", "localizer", "pet_ac", "pet_nac"]
    choice = select_series(series)
    assert choice.pet.kind == "pet_ac" and choice.ct.kind == "ct_axial"


def test_cli_error_is_one_line(tmp_path, tool_env):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "dualpet", "suv", str(tmp_path / "empty"), "-o", str(tmp_path / "x.nii.gz")],
        capture_output=True,
        text=True,
        env=tool_env,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no usable PET series" in lines[0] and "no PT image series in the folder" in lines[0]
    assert "Traceback" not in proc.stderr


def test_suv_cli_writes_sidecar(study, tmp_path, tool_env):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dualpet",
            "suv",
            str(study),
            "-o",
            str(tmp_path / "s.nii.gz"),
            "--json",
            str(tmp_path / "s.json"),
        ],
        capture_output=True,
        text=True,
        env=tool_env,
    )
    assert proc.returncode == 0, proc.stderr
    side = pydicom.dcmread(next((study / "PT_3").glob("*.dcm")), stop_before_pixels=True)
    text = (tmp_path / "s.json").read_text()
    for ident in (str(side.PatientName), side.PatientID, side.PatientBirthDate, side.AccessionNumber):
        assert ident not in text
    assert side.StudyDate not in text  # no absolute dates either (only durations)
    sidecar = json.loads(text)
    assert sidecar["units"] == "SUVbw (g/mL)" and sidecar["factor"] > 0
    # the NIfTI origin is the lowest slice's ImagePositionPatient (LPS), in RAS
    lowest = min(
        (
            np.array(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient, float)
            for p in (study / "PT_3").glob("*.dcm")
        ),
        key=lambda v: v[2],
    )
    assert np.allclose(lps_affine(nib.load(tmp_path / "s.nii.gz").affine)[:3, 3], lowest, atol=1e-3)


def test_oblique_nonsquare_feet_first_geometry(study, tmp_path):
    """Rotated in-plane orientation, non-square pixels, feet-first numbering: every voxel's
    NIfTI world position equals its DICOM position (x, y negated), and dicom2nifti agrees."""
    import dicom2nifti.convert_dicom as c2n

    th = np.deg2rad(20.0)
    row_dir = np.array([np.cos(th), np.sin(th), 0.0])
    col_dir = np.array([-np.sin(th), np.cos(th), 0.0])
    row_sp, col_sp = 3.0, 4.5  # PixelSpacing = [between rows, between columns]
    files = sorted((study / "PT_3").glob("*.dcm"))[:12]
    for n, p in enumerate(files):
        ds = pydicom.dcmread(p)
        ds.ImageOrientationPatient = [*row_dir, *col_dir]
        ds.PixelSpacing = [row_sp, col_sp]
        ds.ImagePositionPatient = [10.0, -20.0, 500.0 - 4.0 * n]  # instance 1 at the top
        ds.InstanceNumber = n + 1
        ds.save_as(tmp_path / f"f{n}.dcm")
    vol = load_series(next(iter(scan_folder(tmp_path).values())))
    img = nib.Nifti1Image(vol.data, np.diag([-1, -1, 1, 1]) @ vol.affine)
    dss = sorted((pydicom.dcmread(p) for p in tmp_path.glob("*.dcm")), key=lambda d: float(d.ImagePositionPatient[2]))
    for k in (0, 5, 11):
        ipp = np.array(dss[k].ImagePositionPatient, float)
        for i, j in ((0, 0), (7, 3), (100, 50)):  # i = column index, j = row index
            lps = ipp + i * col_sp * row_dir + j * row_sp * col_dir
            assert np.allclose(apply_affine(img.affine, [i, j, k]), [-lps[0], -lps[1], lps[2]], atol=1e-4)
        assert np.array_equal(vol.data[:, :, k], (dss[k].pixel_array.T * float(dss[k].RescaleSlope)).astype(np.float32))
    ref = c2n.dicom_array_to_nifti(
        [pydicom.dcmread(p) for p in tmp_path.glob("*.dcm")], str(tmp_path / "r.nii.gz"), reorient_nifti=False
    )["NII"]
    M = np.linalg.inv(ref.affine) @ img.affine  # our voxel -> dicom2nifti voxel
    perm = np.rint(M[:3, :3])
    assert np.allclose(M[:3, :3], perm, atol=1e-4) and np.allclose(M[:3, 3], np.rint(M[:3, 3]), atol=1e-3)
    rng = np.random.default_rng(1)
    for ijk in rng.integers(0, vol.data.shape, size=(50, 3)):
        rijk = np.rint(M[:3, :3] @ ijk + M[:3, 3]).astype(int)
        assert np.isclose(vol.data[tuple(ijk)], np.asarray(ref.dataobj)[tuple(rijk)], rtol=1e-5, atol=1e-3)


def test_pet_ct_frame_mismatch_is_registered(study, tmp_path):
    """A CT in another frame of reference (moved by a known shift) is registered: the PET
    keeps its voxels and gets the affine that places it in the CT's frame."""
    shift = np.array([12.0, -8.0, 20.0])
    shutil.copytree(study, tmp_path / "s")
    for p in (tmp_path / "s" / "CT_2").glob("*.dcm"):
        ds = pydicom.dcmread(p)
        ds.FrameOfReferenceUID = "1.2.3.999"
        ds.ImagePositionPatient = [f"{v:.4f}" for v in np.array(ds.ImagePositionPatient, float) + shift]
        ds.save_as(p)
    side = convert_study(
        tmp_path / "s",
        patient="P001",
        tracer="fdg",
        ct_out=tmp_path / "ct.nii.gz",
        pet_out=tmp_path / "pet.nii.gz",
        json_out=tmp_path / "pet.json",
    )
    assert side["pet_ct_same_frame_of_reference"] is False
    reg = side["pet_to_ct_registration"]
    # 4 mm: one PET voxel (measured 1.5-3 mm on phantoms, mostly along z)
    assert np.linalg.norm(np.subtract(reg["translation_mm"], shift)) < 4.0 and reg["rotation_deg"] < 1.0
    original = load_series(next(s for s in scan_folder(study).values() if s.kind == "pet_ac")).affine
    placed = lps_affine(nib.load(tmp_path / "pet.nii.gz").affine)
    assert np.allclose(placed[:3, :3], original[:3, :3], atol=0.1)
    assert np.linalg.norm(placed[:3, 3] - original[:3, 3] - shift) < 4.0


def test_outputs_follow_umask(study, tmp_path):
    import os

    convert_study(
        study,
        patient="P001",
        tracer="fdg",
        ct_out=tmp_path / "ct.nii.gz",
        pet_out=tmp_path / "pet.nii.gz",
        json_out=tmp_path / "pet.json",
    )
    mask = os.umask(0)
    os.umask(mask)
    for name in ("ct.nii.gz", "pet.nii.gz", "pet.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask


def _copy_series(src, dst, **attrs):
    """Copy a series with changed attributes (callables get (ds, k) with k the file's index)."""
    dst.mkdir(parents=True, exist_ok=True)
    for k, p in enumerate(sorted(src.glob("*.dcm"))):
        ds = pydicom.dcmread(p)
        for key, value in attrs.items():
            setattr(ds, key, value(ds, k) if callable(value) else value)
        ds.save_as(dst / p.name)


def test_real_ge_slice_jitter_is_accepted_and_recorded(study, tmp_path):
    """A GE whole-body PET's gaps (261 x 3.27, 4 x 3.29, 1 x 3.19 mm), scaled to this 4 mm
    stack: converted, with the fitted spacing and the largest deviation in the sidecar."""
    files = sorted((study / "PT_3").glob("*.dcm"), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    gaps = np.full(len(files) - 1, 4.0)
    gaps[[10, 30, 50, 70]] = 4.0 * 3.29 / 3.27
    gaps[40] = 4.0 * 3.19 / 3.27
    z = np.concatenate([[0.0], np.cumsum(gaps)]) - 200.0
    (tmp_path / "s").mkdir()
    for k, p in enumerate(files):
        ds = pydicom.dcmread(p)
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], f"{z[k]:.3f}"]
        ds.save_as(tmp_path / "s" / p.name)
    pet, _ = choose_pet(scan_folder(tmp_path / "s"))
    side = convert_pet(pet, tmp_path / "pet.nii.gz", tmp_path / "pet.json", where="test")
    geo = side["pet_series"]
    assert geo["slice_gaps_mm"] == [pytest.approx(3.902, abs=1e-3), pytest.approx(4.0245, abs=1e-3)]
    assert geo["slice_spacing_mm"] == pytest.approx(
        (z[-1] - z[0]) / (len(z) - 1), abs=0.01
    )  # the robust (fitted) spacing
    fitted = lps_affine(nib.load(tmp_path / "pet.nii.gz").affine)
    world_z = apply_affine(fitted, np.stack([np.zeros(len(z)), np.zeros(len(z)), np.arange(len(z))], 1))[:, 2]
    assert np.abs(world_z - z).max() == pytest.approx(geo["slice_position_max_deviation_mm"], abs=1e-3)
    assert geo["slice_position_max_deviation_mm"] < 0.2  # every slice within 0.2 mm of its recorded position


def test_slice_position_drift_is_refused(study, tmp_path):
    """Gaps growing from 3.8 to 4.2 mm pass the per-gap tolerance but are not one grid."""
    files = sorted((study / "PT_3").glob("*.dcm"), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    z = np.concatenate([[0.0], np.cumsum(np.linspace(3.8, 4.2, len(files) - 1))])
    (tmp_path / "s").mkdir()
    for k, p in enumerate(files):
        ds = pydicom.dcmread(p)
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], f"{z[k]:.3f}"]
        ds.save_as(tmp_path / "s" / p.name)
    with pytest.raises(DualpetInputError, match="drift.*ImagePositionPatient"):
        load_series(next(iter(scan_folder(tmp_path / "s").values())))


def test_pet_sharing_the_cts_frame_is_preferred(study, tmp_path):
    """Two quantitative AC PETs, one in another frame of reference (e.g. an imported
    study): the one sharing the CT's frame is chosen, and why is said."""
    shutil.copytree(study, tmp_path / "s")
    _copy_series(
        study / "PT_3",
        tmp_path / "s" / "other",
        SeriesInstanceUID="1.2.3.77",
        SeriesNumber="7",
        FrameOfReferenceUID="1.2.3.78",
        SeriesDescription="PET imported",
    )
    choice = select_series(scan_folder(tmp_path / "s"))
    assert choice.pet.number == "3" and "frame of reference" in choice.pet_why


def test_series_named_by_number(study, tmp_path):
    shutil.copytree(study, tmp_path / "s")
    _copy_series(
        study / "PT_3",
        tmp_path / "s" / "copy",
        SeriesInstanceUID="1.2.3.77",
        SeriesNumber="7",
        SeriesDescription="PET copy",
    )
    series = scan_folder(tmp_path / "s")
    assert select_series(series, pet_uid="7").pet.uid == "1.2.3.77"
    assert select_series(series, pet_uid="3").pet.number == "3"
    with pytest.raises(DualpetInputError, match="pet_series 9 not found"):
        select_series(series, pet_uid="9")
    ct_uid = next(uid for uid, s in series.items() if s.modality == "CT")
    with pytest.raises(DualpetInputError, match="not a PET series"):
        select_series(series, pet_uid=ct_uid)
    with pytest.raises(DualpetInputError, match="pet_series 2 not found"):
        select_series(series, pet_uid="2")  # the CT's number: numbers are looked up among PET series


@pytest.mark.parametrize(
    "attrs, reason",
    [
        ({"SeriesType": ["DYNAMIC", "IMAGE"]}, "SeriesType DYNAMIC"),
        ({"Units": "CPS"}, "Units CPS are not quantitative"),
        ({"AttenuationCorrectionMethod": "NONE"}, "AttenuationCorrectionMethod NONE"),
        ({"SeriesDescription": "WB_NOAC"}, "SeriesDescription says not attenuation-corrected"),
        ({"SeriesDescription": "Fused PET-CT"}, "SeriesDescription says a derived picture"),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.130"}, "Enhanced PET objects are not supported"),
    ],
)
def test_pet_rejections_name_the_signal(study, tmp_path, attrs, reason):
    """Every signal that rules a PET series out is named; the real AC PET is still chosen."""
    shutil.copytree(study, tmp_path / "s")
    _copy_series(study / "PT_3", tmp_path / "s" / "x", SeriesInstanceUID="1.2.3.77", SeriesNumber="7", **attrs)
    series = scan_folder(tmp_path / "s")
    assert reason in series["1.2.3.77"].why_not()
    choice = select_series(series)
    assert choice.pet.number == "3"
    assert any(reason in s["not_used_because"] for s in choice.report()["other_image_series"])


def test_ct_for_attenuation_correction_is_preferred(study, tmp_path):
    """Two axial CTs of the PET's frame: the one covering the PET's range with the
    closest slice spacing (the CT used for attenuation correction) is chosen."""
    shutil.copytree(study, tmp_path / "s")
    files = sorted((study / "CT_2").glob("*.dcm"))
    half = tmp_path / "s" / "ct_half"
    half.mkdir()
    for p in files[: len(files) // 2]:  # a partial CT of the same frame (e.g. a diagnostic thorax)
        ds = pydicom.dcmread(p)
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = "1.2.3.88", "8", "CT thorax"
        ds.save_as(half / p.name)
    choice = select_series(scan_folder(tmp_path / "s"))
    assert choice.ct.number == "2" and "covering" in choice.ct_why


@pytest.mark.parametrize(
    "attrs",
    [
        {"CorrectedImage": "ATTN"},  # single-valued: one value, not its letters
        {"AttenuationCorrectionMethod": "CT, no truncation correction"},  # free text, not "NONE"
        {"SeriesDescription": "PET WB Pilot study MAC"},  # a trial's name, not a localizer
        {"ImageType": ["DERIVED", "PRIMARY"]},  # re-reconstructions are DERIVED but primary
    ],
)
def test_usable_pet_is_not_ruled_out_by_lookalike_signals(study, tmp_path, attrs):
    _copy_series(study / "PT_3", tmp_path / "s", **attrs)
    (series,) = scan_folder(tmp_path / "s").values()
    assert series.rejections == [], series.why_not()


def test_hyphenated_nac_description_is_recognised(study, tmp_path):
    for n, text in enumerate(("PET-NAC", "PET N-AC", "WB_NON-AC")):
        _copy_series(study / "PT_3", tmp_path / str(n), SeriesDescription=text)
        (series,) = scan_folder(tmp_path / str(n)).values()
        assert "SeriesDescription says not attenuation-corrected" in series.why_not(), text


def _gml(ds, k):
    """A workstation's SUV export: the Bq/mL values divided by the SUVbw factor, Units GML."""
    return "GML"


def test_a_derived_suv_series_is_used_when_it_is_the_only_pet(study, tmp_path):
    """Issue 23: research archives and workstations (MIM, PMOD) hold PET already converted
    to SUV, ImageType DERIVED/SECONDARY, Units GML. With no ORIGINAL PET series it is the
    PET, chosen with the reason; its SUVs are its values (rescaled), not refused."""
    shutil.copytree(study / "CT_2", tmp_path / "s" / "CT_2")
    _copy_series(
        study / "PT_3",
        tmp_path / "s" / "suv",
        ImageType=["DERIVED", "SECONDARY"],
        Units="GML",
        DecayCorrection="ADMIN",
        SeriesDescription="PET SUV (MIM)",
    )
    choice = select_series(scan_folder(tmp_path / "s"))
    assert choice.pet.description == "PET SUV (MIM)"
    assert "no ORIGINAL PT series qualifies" in choice.pet_why and "DERIVED/SECONDARY" in choice.pet_why
    side = convert_study(
        tmp_path / "s",
        patient="P001",
        tracer="fdg",
        ct_out=tmp_path / "ct.nii.gz",
        pet_out=tmp_path / "pet.nii.gz",
        json_out=tmp_path / "pet.json",
    )
    assert "no ORIGINAL PT series" in side["series_choice"]["pet"]["chosen_because"]
    ds = min(
        (pydicom.dcmread(p) for p in (tmp_path / "s" / "suv").glob("*.dcm")),
        key=lambda d: float(d.ImagePositionPatient[2]),
    )
    suv = np.asarray(nib.load(tmp_path / "pet.nii.gz").dataobj, np.float64)
    expected = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(getattr(ds, "RescaleIntercept", 0.0))
    # the lowest slice, columns i = DICOM columns, rows j = DICOM rows: SUV = stored value x slope (float32)
    assert np.allclose(suv[:, :, 0], expected.T, rtol=1e-6, atol=1e-6)


def test_an_original_pet_wins_over_a_derived_one(study, tmp_path):
    shutil.copytree(study, tmp_path / "s")
    _copy_series(
        study / "PT_3",
        tmp_path / "s" / "suv",
        SeriesInstanceUID="1.2.3.77",
        SeriesNumber="7",
        ImageType=["DERIVED", "SECONDARY"],
        Units="GML",
        SeriesDescription="PET SUV",
    )
    choice = select_series(scan_folder(tmp_path / "s"))
    assert choice.pet.number == "3" and "ORIGINAL" not in choice.pet_why


@pytest.mark.parametrize(
    "image_type, description",
    [
        (["DERIVED", "SECONDARY", "MIP"], "PET WB"),
        (["DERIVED", "SECONDARY"], "PET MIP"),
        (["DERIVED", "SECONDARY", "FUSED"], "PET WB"),
        (["DERIVED", "SECONDARY", "REFORMATTED"], "PET WB"),
    ],
)
def test_pictures_made_from_the_pet_are_never_chosen(study, tmp_path, image_type, description):
    """MIPs, fusions and reformats are refused even as the only PET; the message names what
    was found, says what is needed and how to name a series, and does not call a
    quantitative series 'not quantitative'."""
    shutil.copytree(study / "CT_2", tmp_path / "s" / "CT_2")
    _copy_series(study / "PT_3", tmp_path / "s" / "mip", ImageType=image_type, SeriesDescription=description)
    with pytest.raises(DualpetInputError) as err:
        select_series(scan_folder(tmp_path / "s"))
    text = str(err.value)
    assert "no usable PET series" in text and "pet_series" in text and "not quantitative" not in text
    assert f"'{description}'" in text


@pytest.mark.parametrize("value", ["0", "-1.5", "nan"])
def test_a_zero_or_invalid_rescale_slope_is_refused_not_read_as_one(study, tmp_path, value):
    """Issue 23 (campaign): RescaleSlope 0 was read as 1 (`or 1.0`), giving wrong SUVs
    silently. One bad slice is refused at inspection, naming the image and the attribute."""
    from dualpet.convert import inspect_study

    shutil.copytree(study, tmp_path / "s")
    files = sorted((tmp_path / "s" / "PT_3").glob("*.dcm"))
    ds = pydicom.dcmread(files[5])
    ds.RescaleSlope = value
    ds.save_as(files[5])
    verdict = inspect_study(tmp_path / "s", patient="P001", tracer="fdg", out_json=tmp_path / "i.json")
    assert not verdict["ok"]
    assert (
        "RescaleSlope (0028,1053) of image InstanceNumber" in verdict["error"]
        and "cannot be rescaled" in verdict["error"]
    )
    with pytest.raises(DualpetInputError, match="RescaleSlope"):
        convert_study(
            tmp_path / "s",
            patient="P001",
            tracer="fdg",
            ct_out=tmp_path / "ct.nii.gz",
            pet_out=tmp_path / "pet.nii.gz",
            json_out=tmp_path / "pet.json",
        )


def test_a_gantry_tilted_ct_is_resampled_onto_an_orthogonal_grid(study, tmp_path):
    """Issue 23 (campaign): a gantry-tilted CT (slices stepped along z, their normal tilted
    by 7.5 degrees) gave a sheared affine that SimpleITK reads rotated. It is resampled onto
    an orthogonal grid (as dcm2niix does) and every structure stays where it was: the HU at
    known world points of the tilted stack equal the resampled volume's there."""
    from dualpet.dicom import load_series, shear_deg
    from dualpet.geometry import world_to_voxel

    tilt = np.radians(7.5)
    shutil.copytree(study / "CT_2", tmp_path / "s" / "CT_2")
    shutil.copytree(study / "PT_3", tmp_path / "s" / "PT_3")
    for p in (tmp_path / "s" / "CT_2").glob("*.dcm"):
        ds = pydicom.dcmread(p)
        ds.ImageOrientationPatient = [1, 0, 0, 0, float(np.cos(tilt)), float(np.sin(tilt))]
        ds.save_as(p)
    ct = next(s for s in scan_folder(tmp_path / "s").values() if s.modality == "CT")
    vol = load_series(ct)
    assert vol.geometry["gantry_tilt_deg"] == pytest.approx(7.5, abs=0.05) and shear_deg(vol.affine) < 1e-6
    # the tilted stack's own voxels: slice k's pixel (i, j) lies at IPP_k + i*dx*row + j*dy*col
    dss = sorted(
        (pydicom.dcmread(p) for p in (tmp_path / "s" / "CT_2").glob("*.dcm")),
        key=lambda d: float(d.ImagePositionPatient[2]),
    )
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(200):
        k = int(rng.integers(2, len(dss) - 2))
        ds = dss[k]
        i, j = int(rng.integers(10, ds.Columns - 10)), int(rng.integers(10, ds.Rows - 10))
        dy, dx = (float(v) for v in ds.PixelSpacing)
        world = (
            np.array(ds.ImagePositionPatient, float)
            + i * dx * np.array([1, 0, 0])
            + j * dy * np.array([0, np.cos(tilt), np.sin(tilt)])
        )
        v = world_to_voxel(vol.affine, world)
        if np.any(v < 1) or np.any(v > np.array(vol.data.shape) - 2):
            continue
        truth = float(ds.pixel_array[j, i]) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        from scipy import ndimage

        got = float(ndimage.map_coordinates(vol.data, v[:, None], order=1)[0])
        neighbours = ds.pixel_array[j - 1 : j + 2, i - 1 : i + 2].astype(float) * float(ds.RescaleSlope) + float(
            ds.RescaleIntercept
        )
        # linear resampling twice (the grid, then this lookup): within the 3x3 neighbourhood's range
        assert neighbours.min() - 1.0 <= got <= neighbours.max() + 1.0, (truth, got)
        checked += 1
    assert checked > 100
