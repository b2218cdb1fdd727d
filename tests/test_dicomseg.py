"""DICOM-SEG out and in (highdicom), RTSTRUCT in, on a generated study."""

from __future__ import annotations

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from dualpet.convert import convert_study
from dualpet.detection.study import segment_study
from dualpet.dicomseg import export_seg, frames_from_labels, rtstruct_labels, seg_labels
from dualpet.geometry import apply_affine, lps_affine
from dualpet.interchange import read_voi, write_voi
from dualpet.io import read_json


@pytest.fixture(scope="module")
def study(cohort_dir, truth, tmp_path_factory):
    """P001's FDG study converted, and a voi.nii.gz with three true lesions as L01, L02 and
    L04 (a lesion number missing from a study, as when it lies outside its field of view)."""
    tmp = tmp_path_factory.mktemp("seg")
    pid, tracer = "P001", "fdg"
    convert_study(
        cohort_dir / "dicom" / pid / tracer,
        patient=pid,
        tracer=tracer,
        ct_out=tmp / "ct.nii.gz",
        pet_out=tmp / "pet.nii.gz",
        json_out=tmp / "pet.json",
    )
    pet = nib.load(tmp / "pet.nii.gz")
    affine = lps_affine(pet.affine)
    world = apply_affine(affine, np.argwhere(np.ones(pet.shape, bool))).reshape(*pet.shape, 3)
    lesions = truth[pid]["lesions"][:3]
    voi = np.zeros(pet.shape, np.int32)
    for number, les in zip((1, 2, 4), lesions):
        voi[(np.linalg.norm(world - les["center_lps"][tracer], axis=-1) <= max(les["radius_mm"], 6.0)) & (voi == 0)] = (
            number
        )
    write_voi(tmp / "voi.nii.gz", voi, affine)
    return {
        "dir": tmp,
        "dicom": cohort_dir / "dicom" / pid / tracer,
        "voi": voi,
        "affine": affine,
        "pid": pid,
        "tracer": tracer,
        "shape": pet.shape,
    }


def _pet_datasets(folder):
    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        if str(ds.get("Modality", "")) == "PT":
            out.append(ds)
    return out


def test_exported_seg_reads_back_references_the_pet_and_matches_the_vois(study, truth):
    out = study["dir"] / "lesions_seg.dcm"
    info = export_seg(study["dir"] / "voi.nii.gz", study["dicom"], out, patient=study["pid"], tracer=study["tracer"])
    assert info["segments"] == ["L01", "L02", "L04"]
    seg = hd.seg.segread(str(out))
    pet = _pet_datasets(study["dicom"])
    # it references the original PET series and instances (a viewer lays it over them)
    assert seg.StudyInstanceUID == pet[0].StudyInstanceUID
    ref_series = seg.ReferencedSeriesSequence[0]
    assert ref_series.SeriesInstanceUID == pet[0].SeriesInstanceUID
    referenced = {item.ReferencedSOPInstanceUID for item in ref_series.ReferencedInstanceSequence}
    assert referenced == {ds.SOPInstanceUID for ds in pet}
    # no identifying patient data: the sheet's pseudonym only
    ident = truth[study["pid"]]["identifiers"]
    assert str(seg.PatientName) == study["pid"] and seg.PatientID == study["pid"]
    assert not seg.get("StudyDate") and seg.ContentDate == "19000101"
    # the same VOIs give the same file (a rerun with nothing changed changes nothing)
    export_seg(
        study["dir"] / "voi.nii.gz",
        study["dicom"],
        study["dir"] / "again.dcm",
        patient=study["pid"],
        tracer=study["tracer"],
    )
    assert (study["dir"] / "again.dcm").read_bytes() == out.read_bytes()
    raw = out.read_bytes()
    values = [v for v in ident.values() for v in (v if isinstance(v, list) else [v])]
    assert values and not [v for v in values if str(v).encode() in raw]
    # segments coincide voxel for voxel with voi.nii.gz: per source image, through highdicom
    labels = {n: int(seg.get_segment_description(n).segment_label.lstrip("L")) for n in seg.get_segment_numbers()}
    assert sorted(labels.values()) == [1, 2, 4]
    expected = frames_from_labels(study["voi"], study["affine"], pet)
    uids = [ds.SOPInstanceUID for ds in pet]
    got = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=sorted(labels), ignore_spatial_locations=True
    )
    for n, lab in labels.items():
        assert np.array_equal(got[..., n - 1].astype(bool), expected == lab), f"segment {n} (L{lab:02d})"
    # and on the PET grid itself, as a reader's lesion mask
    back, names = seg_labels(out, study["shape"], study["affine"])
    assert np.array_equal(back, study["voi"]) and names == {1: "L01", 2: "L02", 4: "L04"}


def test_seg_and_rtstruct_as_the_readers_lesion_mask(study):
    """method 'masks' takes a DICOM-SEG (segment = lesion) as the NIfTI: the same lesions;
    an RTSTRUCT of the lesions' contours gives the same lesions within a voxel's rim."""
    d = study["dir"]
    export_seg(d / "voi.nii.gz", study["dicom"], d / "mask_seg.dcm", patient=study["pid"], tracer=study["tracer"])
    got = {}
    for name, path in {"nifti": d / "voi.nii.gz", "seg": d / "mask_seg.dcm"}.items():
        segment_study(
            d / "ct.nii.gz",
            d / "pet.nii.gz",
            d / f"{name}_labels.nii.gz",
            d / f"{name}.json",
            detection={"method": "masks"},
            patient=study["pid"],
            tracer=study["tracer"],
            lesion_mask=path,
        )
        got[name] = read_json(d / f"{name}.json")["detection"]["lesions"]
    assert [les["suvmax"] for les in got["seg"]] == [les["suvmax"] for les in got["nifti"]]
    assert sorted(les["mask_name"] for les in got["seg"]) == ["L01", "L02", "L04"]
    # RTSTRUCT: contours of each lesion's VOI, traced on each plane (pixel corners)
    rt = _rtstruct_from(study["voi"], study["affine"], _pet_datasets(study["dicom"])[0])
    rt.save_as(d / "rt.dcm", enforce_file_format=True)
    labels, names = rtstruct_labels(d / "rt.dcm", study["shape"], study["affine"])
    assert sorted(names.values()) == ["L01", "L02", "L04"]
    for k, lab in enumerate((1, 2, 4), start=1):
        a, b = labels == k, study["voi"] == lab
        # the polygon of voxel centres fills the region less part of its rim: 60 % or more
        assert (a & b).sum() >= 0.6 * b.sum() and (a & ~b).sum() == 0


def _rtstruct_from(voi, affine, ref):
    """A minimal RTSTRUCT: per label, per plane, the outline of its voxel centres."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    from skimage.measure import find_contours

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = ds.file_meta.MediaStorageSOPClassUID, generate_uid(), "RTSTRUCT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = ref.StudyInstanceUID, generate_uid()
    ds.StructureSetROISequence, ds.ROIContourSequence = Sequence(), Sequence()
    for k, lab in enumerate((1, 2, 4), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName = k, f"L{lab:02d}"
        ds.StructureSetROISequence.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber = k
        rc.ContourSequence = Sequence()
        for z in np.flatnonzero((voi == lab).any(axis=(0, 1))):
            for c in find_contours((voi[:, :, z] == lab).astype(float), 0.5):
                pts = apply_affine(affine, np.column_stack([c, np.full(len(c), z)]))
                item = Dataset()
                item.ContourGeometricType, item.NumberOfContourPoints = "CLOSED_PLANAR", len(pts)
                item.ContourData = [f"{v:.3f}" for v in pts.ravel()]
                rc.ContourSequence.append(item)
        ds.ROIContourSequence.append(rc)
    return ds


def test_voi_labels_round_trip(tmp_path):
    labels = np.zeros((5, 6, 7), np.int32)
    labels[1:3, 2:4, 3] = 12
    write_voi(tmp_path / "v.nii.gz", labels, np.diag([2.0, 3.0, 4.0, 1.0]))
    back, aff = read_voi(tmp_path / "v.nii.gz")
    assert np.array_equal(back, labels) and np.allclose(aff, np.diag([2.0, 3.0, 4.0, 1.0]))


def test_one_roi_is_one_lesion_and_its_contour_is_the_voi(study, tmp_path):
    """Issue 23: an RTSTRUCT ROI (or SEG segment) in two parts is one lesion, and with
    method 'masks' every metric is measured in the contour as drawn: SUVmean is the mean
    SUV of the PET voxels inside it, MTV its volume (voi_source reader_contour). With
    voi.reader_masks 'isocontour' the VOI is the isocontour inside the contour."""
    import SimpleITK as sitk

    from dualpet.matching import build_lesions
    from dualpet.metrics import lesion_crop_metrics

    d = study["dir"]
    two_parts = np.where(np.isin(study["voi"], (1, 2)), 1, 0)  # one ROI drawn around two tumours
    rt = _rtstruct_from(two_parts, study["affine"], _pet_datasets(study["dicom"])[0])
    rt.save_as(tmp_path / "rt.dcm", enforce_file_format=True)
    segment_study(
        d / "ct.nii.gz",
        d / "pet.nii.gz",
        tmp_path / "labels.nii.gz",
        tmp_path / "s.json",
        detection={"method": "masks"},
        patient=study["pid"],
        tracer=study["tracer"],
        lesion_mask=tmp_path / "rt.dcm",
    )
    lesions = read_json(tmp_path / "s.json")["detection"]["lesions"]
    assert len(lesions) == 1 and lesions[0]["mask_name"] == "L01"
    labels = np.asarray(nib.load(tmp_path / "labels.nii.gz").dataobj).astype(np.int32)
    suv = np.asarray(nib.load(d / "pet.nii.gz").dataobj, np.float32)
    contour = labels == 1
    vox_ml = abs(np.linalg.det(study["affine"][:3, :3])) / 1000.0
    st = {"suv": suv, "affine": study["affine"], "labels": labels, "background": 1.5, "reader_masks": True}
    for mode in ("contour", "isocontour"):
        out = tmp_path / mode
        index = build_lesions(
            study["pid"],
            ("fdg", "pentixafor"),
            {"fdg": st, "pentixafor": st},
            sitk.Euler3DTransform(),
            out / "index.tsv",
            out / "crops",
            reader_masks=mode,
        )
        assert len(index) == 1
        m = lesion_crop_metrics(out / "crops" / "L01.npz", ("fdg", "pentixafor"))["fdg"]
        if mode == "contour":
            assert index.fdg_voi_source[0] == "reader_contour" and m["voi_source"] == "reader_contour"
            assert m["suvmean"] == pytest.approx(float(suv[contour].mean()), rel=1e-6)  # float32 sums
            assert m["mtv_ml"] == pytest.approx(contour.sum() * vox_ml, rel=1e-9)
            assert m["suvmax"] == pytest.approx(float(suv[contour].max()))
        else:
            assert index.fdg_voi_source[0] == "isocontour"
            assert m["voi_ml"] < contour.sum() * vox_ml and m["suvmax"] == pytest.approx(float(suv[contour].max()))


def test_the_seg_carries_no_identifying_text_of_the_source_pet(study, tmp_path):
    """Issue 23 (campaign): lesions_seg.dcm kept StudyDescription, PhysiciansOfRecord and,
    in the ContributingEquipmentSequence highdicom copies from the PET, StationName,
    InstitutionalDepartmentName and DeviceSerialNumber. None of them reaches the SEG."""
    import shutil

    src = tmp_path / "dicom"
    shutil.copytree(study["dicom"], src)
    planted = {
        "StudyDescription": "PET ONKO Dr Wagner Station 3",
        "PhysiciansOfRecord": "Wagner^Helga",
        "StationName": "PETCT-OST-7",
        "InstitutionalDepartmentName": "Nuklearmedizin Haus B",
        "DeviceSerialNumber": "SN884213",
        "RequestingPhysician": "Huber^Anton",
        "PatientComments": "allergy to contrast, room 41",
    }
    for p in src.rglob("*.dcm"):
        ds = pydicom.dcmread(p)
        for key, value in planted.items():
            setattr(ds, key, value)
        ds.save_as(p)
    out = tmp_path / "seg.dcm"
    export_seg(study["dir"] / "voi.nii.gz", src, out, patient=study["pid"], tracer=study["tracer"])
    raw = out.read_bytes()
    assert not [v for v in planted.values() if v.encode() in raw]
    assert not [
        part for v in planted.values() for part in v.replace("^", " ").split() if len(part) > 4 and part.encode() in raw
    ]
    seg = pydicom.dcmread(out)
    assert seg.DeviceSerialNumber == "0" and str(seg.PatientName) == study["pid"]
    hd.seg.segread(str(out))  # still a valid SEG


def test_a_readers_dicom_mask_must_be_of_this_studys_pet(study, cohort_dir, tmp_path):
    """Issue 23 (campaign): another patient's SEG put its lesions on this patient's PET
    without a word, another study's SEG gave lesions plus labels outside, an empty mask
    gave 0 lesions and an included patient. Each is now refused, naming the attribute."""
    from dualpet.errors import DualpetInputError
    from dualpet.interchange import write_voi

    d = study["dir"]
    export_seg(d / "voi.nii.gz", study["dicom"], tmp_path / "mine.dcm", patient=study["pid"], tracer=study["tracer"])

    def segment(mask, dicom=study["dicom"]):
        return segment_study(
            d / "ct.nii.gz",
            d / "pet.nii.gz",
            tmp_path / "l.nii.gz",
            tmp_path / "s.json",
            detection={"method": "masks"},
            patient=study["pid"],
            tracer=study["tracer"],
            lesion_mask=mask,
            pet_dicom=(dicom, None),
        )

    _, info = segment(tmp_path / "mine.dcm")
    assert len(info["lesions"]) == 3  # its own SEG: accepted
    # the other tracer's study of the same patient: another frame of reference
    other = cohort_dir / "dicom" / study["pid"] / "pentixafor"
    with pytest.raises(DualpetInputError, match=r"FrameOfReferenceUID \(0020,0052\) is not this study's PET's"):
        segment(tmp_path / "mine.dcm", dicom=other)
    # same frame of reference, another patient's ID
    seg = pydicom.dcmread(tmp_path / "mine.dcm")
    seg.PatientID = "SOMEONE-ELSE"
    seg.save_as(tmp_path / "theirs.dcm")
    with pytest.raises(DualpetInputError, match=r"PatientID \(0010,0020\) is not this study's PET's") as err:
        segment(tmp_path / "theirs.dcm")
    assert "SOMEONE-ELSE" not in str(err.value)
    # an empty mask
    write_voi(tmp_path / "empty.nii.gz", np.zeros(study["shape"], np.int32), study["affine"])
    with pytest.raises(DualpetInputError, match="reach no voxel of this study's PET"):
        segment(tmp_path / "empty.nii.gz")
