"""Inspection refuses what would otherwise be measured wrongly or fail later: another
patient's series, a CT not covering the PET, studies of different patients, truncated or
undecodable pixel data. Messages name attributes, never their values."""

from __future__ import annotations

import shutil

import pydicom
import pytest
from pydicom.encaps import encapsulate

from dualpet.convert import inspect_study


@pytest.fixture()
def studies(cohort_dir, tmp_path):
    """Copies of patient P001's two studies and patient P002's reference study."""
    for pid, tracer in (("P001", "fdg"), ("P001", "pentixafor"), ("P002", "fdg")):
        shutil.copytree(cohort_dir / "dicom" / pid / tracer, tmp_path / pid / tracer)
    return tmp_path


def _inspect(folder, tmp_path, other=None, tracer="fdg"):
    return inspect_study(folder, patient="P001", tracer=tracer, out_json=tmp_path / "inspect.json", other_study=other)


def _edit(folder, **attrs):
    for p in folder.glob("*.dcm"):
        ds = pydicom.dcmread(p)
        for key, value in attrs.items():
            setattr(ds, key, value(ds) if callable(value) else value)
        ds.save_as(p)


def test_a_clean_study_passes_with_coverage_recorded(studies, tmp_path):
    verdict = _inspect(studies / "P001" / "fdg", tmp_path, other=(studies / "P001" / "pentixafor", "pentixafor"))
    assert verdict["ok"], verdict
    # the generator's grids share a 390 mm field of view: 98 PET slices of 4 mm reach 1 mm further
    assert max(verdict["ct_coverage"]["uncovered_mm"]) <= 1.0


def test_another_patients_pet_in_the_folder_is_refused(studies, tmp_path):
    folder = studies / "P001" / "fdg"
    shutil.rmtree(folder / "PT_3")
    shutil.copytree(studies / "P002" / "fdg" / "PT_3", folder / "PT_3")
    verdict = _inspect(folder, tmp_path)
    assert not verdict["ok"] and "different PatientID (0010,0020)" in verdict["error"]
    pid = pydicom.dcmread(next((folder / "PT_3").glob("*.dcm"))).PatientID
    assert pid not in (tmp_path / "inspect.json").read_text()  # named by attribute, not by value


def test_pet_and_ct_of_different_studies_or_days_are_refused(studies, tmp_path):
    folder = studies / "P001" / "fdg"
    _edit(folder / "PT_3", StudyInstanceUID="1.2.3.4", FrameOfReferenceUID="1.2.3.5")
    assert "share neither StudyInstanceUID" in _inspect(folder, tmp_path)["error"]
    _edit(
        folder / "PT_3",
        StudyInstanceUID=lambda ds: pydicom.dcmread(next((folder / "CT_2").glob("*.dcm"))).StudyInstanceUID,
        AcquisitionDate="20000101",
    )
    verdict = _inspect(folder, tmp_path)
    assert not verdict["ok"] and "days apart" in verdict["error"]


def test_ct_covering_half_the_pet_is_refused(studies, tmp_path):
    ct = studies / "P001" / "fdg" / "CT_2"
    files = sorted(ct.glob("*.dcm"), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    for p in files[: len(files) // 2]:
        p.unlink()
    verdict = _inspect(studies / "P001" / "fdg", tmp_path)
    assert not verdict["ok"] and "the CT covers z =" in verdict["error"] and "ImagePositionPatient" in verdict["error"]


def test_studies_of_different_patients_are_refused_unless_told(studies, tmp_path):
    _edit(studies / "P002" / "fdg" / "PT_3", PatientSex=lambda ds: "M" if ds.PatientSex == "F" else "F")
    verdict = _inspect(studies / "P001" / "fdg", tmp_path, other=(studies / "P002" / "fdg", "pentixafor"))
    assert not verdict["ok"] and "the fdg and pentixafor studies carry different PatientID" in verdict["error"]
    assert "check_patient_identity" in verdict["error"]  # says how to allow separately de-identified studies
    assert _inspect(studies / "P001" / "fdg", tmp_path, other=None)["ok"]
    assert _inspect(studies / "P001" / "fdg", tmp_path, other=(tmp_path / "missing", "pentixafor"))["ok"]


def test_truncated_image_is_refused_at_inspection(studies, tmp_path):
    path = sorted((studies / "P001" / "fdg" / "CT_2").glob("*.dcm"))[7]
    number = pydicom.dcmread(path).InstanceNumber
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 5000])  # cut inside PixelData
    verdict = _inspect(studies / "P001" / "fdg", tmp_path)
    assert not verdict["ok"] and f"image InstanceNumber {number} is truncated" in verdict["error"]
    assert path.name not in verdict["error"]


def test_undecodable_pixel_data_is_refused_at_inspection(studies, tmp_path):
    for p in (studies / "P001" / "fdg" / "PT_3").glob("*.dcm"):
        ds = pydicom.dcmread(p)
        ds.PixelData = encapsulate([ds.PixelData])  # claims JPEG 2000; the bytes are not a codestream
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"
        ds.save_as(p)
    verdict = _inspect(studies / "P001" / "fdg", tmp_path)
    assert not verdict["ok"] and "cannot be decoded" in verdict["error"] and "TransferSyntaxUID" in verdict["error"]


def test_a_ct_leaving_part_of_the_pet_uncovered_is_tolerated_up_to_the_limit(studies, tmp_path):
    """Issue 23: held-out studies left 11-27 mm of a 350 mm PET uncovered. Up to the
    configured share (default 15 % of the PET's length) the study passes with the uncovered
    millimetres recorded; beyond it the refusal names the limit and its config key."""
    ct = studies / "P001" / "fdg" / "CT_2"
    files = sorted(ct.glob("*.dcm"), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    step = abs(
        float(pydicom.dcmread(files[1]).ImagePositionPatient[2])
        - float(pydicom.dcmread(files[0]).ImagePositionPatient[2])
    )
    length = len(files) * step
    n = int(0.08 * length / step)  # about 8 % of the length at the low end
    for p in files[:n]:
        p.unlink()
    verdict = _inspect(studies / "P001" / "fdg", tmp_path)
    assert verdict["ok"], verdict
    low, high = verdict["ct_coverage"]["uncovered_mm"]
    assert low == pytest.approx(n * step, abs=step) and high <= 1.0  # (the PET reaches 1 mm beyond the CT)
    tight = inspect_study(
        studies / "P001" / "fdg",
        patient="P001",
        tracer="fdg",
        out_json=tmp_path / "i.json",
        max_uncovered_fraction=0.05,
    )
    assert not tight["ok"] and "the limit is 5 %, config inspection.max_uncovered_fraction" in tight["error"]


def test_a_symlinked_series_folder_is_named_as_not_read(studies, tmp_path):
    """Issue 23 (campaign): a series folder that is a symbolic link was not read (links to
    folders are not followed) and the refusal said only 'no PT image series'. It now says
    what was not read, without naming it (folder names can identify patients)."""
    folder = studies / "P001" / "fdg"
    (tmp_path / "elsewhere").mkdir()
    (folder / "PT_3").rename(tmp_path / "elsewhere" / "PT_3")
    (folder / "PT_3").symlink_to(tmp_path / "elsewhere" / "PT_3", target_is_directory=True)
    verdict = _inspect(folder, tmp_path)
    assert (
        not verdict["ok"] and "not read in the folder: a symbolic link to a folder (not followed)" in verdict["error"]
    )
    assert "PT_3" not in verdict["error"] and "elsewhere" not in verdict["error"]


def test_an_unreadable_file_is_named_as_not_read(studies, tmp_path):
    """A slice that cannot be read (here: replaced by a dangling link) shows up as a gap in
    the stack; the refusal says a file of the folder could not be examined."""
    pet = studies / "P001" / "fdg" / "PT_3"
    files = sorted(pet.glob("*.dcm"), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    files[10].unlink()
    files[10].symlink_to(tmp_path / "nowhere.dcm")
    verdict = _inspect(studies / "P001" / "fdg", tmp_path)
    assert not verdict["ok"] and "slice(s) missing" in verdict["error"]
    assert "a file that cannot be examined" in verdict["error"]


def test_pet_slices_of_two_acquisitions_in_one_series_are_named_as_such(studies, tmp_path):
    """Issue 23 (campaign): slices of a second scan (a week later, its own injection) mixed
    into the PET series were refused for a misleading reason ('PET and CT acquired 7 days
    apart'). The refusal now says the series mixes acquisitions and names the attribute."""
    import datetime as dt

    pet = studies / "P001" / "fdg" / "PT_3"
    files = sorted(pet.glob("*.dcm"), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    for p in files[::2]:
        ds = pydicom.dcmread(p)
        later = (dt.datetime.strptime(ds.AcquisitionDate, "%Y%m%d") + dt.timedelta(days=7)).strftime("%Y%m%d")
        ds.AcquisitionDate = later
        ds.save_as(p)
    verdict = _inspect(studies / "P001" / "fdg", tmp_path)
    assert not verdict["ok"] and "series mixes images of more than one acquisition" in verdict["error"]
    assert "AcquisitionDate (0008,0022) spans 7 days" in verdict["error"] and "days apart" not in verdict["error"]
    for p in files[::2]:
        ds = pydicom.dcmread(p)
        ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose = "1.5e8"
        ds.save_as(p)
    verdict = _inspect(studies / "P001" / "fdg", tmp_path)
    assert "RadionuclideTotalDose (0018,1074) differs between its images" in verdict["error"]


def test_the_conversion_step_checks_then_converts_from_one_reading_of_the_folder(studies, tmp_path, monkeypatch):
    """Issue 27 ('reading DICOM once per study'): the workflow's conversion step runs the
    header check, writes its verdict, and converts from the headers it read; a study the
    check refuses keeps its verdict and its images are placeholders naming the header check."""
    import json

    import nibabel as nib

    import dualpet.dicom as dicom
    from dualpet.cli import main
    from dualpet.failures import read_failures, reason

    scans = []
    real_scan = dicom.scan_folder
    monkeypatch.setattr(dicom, "scan_folder", lambda folder: scans.append(folder) or real_scan(folder))
    folder = studies / "P001" / "fdg"

    def run(out):
        out.mkdir()
        files = [out / n for n in ("inspect.json", "ct.nii.gz", "pet_suv.nii.gz", "pet.json")]
        args = ["convert", str(folder), "--patient", "P001", "--tracer", "fdg", "--isolate-failures"]
        for flag, path in zip(("--inspect", "--ct", "--pet", "--json"), files):
            args += [flag, str(path)]
        assert main(args) == 0
        return files

    verdict, ct, pet, side = run(tmp_path / "ok")
    assert len(scans) == 1, scans  # the study's folder scanned once, by the header check
    assert json.loads(verdict.read_text())["ok"] and read_failures(ct) is None
    assert len(nib.load(ct).shape) == len(nib.load(pet).shape) == 3 and nib.load(pet).shape[2] > 1
    assert json.loads(side.read_text())["factor"] > 0

    _edit(folder / "PT_3", Units="CPS")
    verdict, ct, pet, side = run(tmp_path / "refused")
    refused = json.loads(verdict.read_text())
    assert not refused["ok"] and "Units" in refused["error"]
    recs = read_failures(ct)
    assert recs == read_failures(pet) == read_failures(side) and recs[0]["step"] == "inspect"
    assert reason(recs[0]).startswith("patient P001, fdg: header check failed:") and "Units" in reason(recs[0])
