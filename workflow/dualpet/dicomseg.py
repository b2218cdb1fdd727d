"""Lesion VOIs as DICOM-SEG (highdicom), out and in; RTSTRUCT in.

Out: :func:`export_seg` writes a study's final VOIs (``voi.nii.gz``, label k = lesion Lk)
as a DICOM Segmentation that references the original PET series and its instances, so a
reader opens it over the PET in OHIF, 3D Slicer or a PACS. Segment *n* is labelled with
its lesion ID (``L07``); segment numbers run 1..N as DICOM requires, so a lesion outside
this study's field of view has no segment and the mapping is read from the labels.

The SEG carries the study, series and instance UIDs of the PET (a viewer needs them to
put it over the PET) but none of the patient's identifying attributes: name and ID are
the sheet's pseudonym, birth date and other patient attributes are emptied. It is the
one output that names the original UIDs; keep it with the original DICOM.

In: :func:`read_reader_labels` reads a ``lesion_mask`` given as a DICOM-SEG (one segment
per lesion) or an RTSTRUCT (one ROI per lesion, its contours filled slice by slice) and
returns a label image on the PET grid.
"""

from __future__ import annotations

import hashlib

import numpy as np

from dualpet.errors import DualpetInputError, redact_paths
from dualpet.geometry import apply_affine, dicom_affine_lps, nearest_on_grid
from dualpet.interchange import lesion_id, read_voi, voi_label

#: What the segments are: SNOMED CT category "Morphologically abnormal structure", type
#: "Lesion"; the algorithm family (DICOM CID 7162) "Neighborhood analysis" (local contrast).
#: Attributes the SEG would otherwise copy from the PET that identify the patient or the
#: visit (emptied; name and ID become the sheet's pseudonym).
#: Every person name (VR PN) but PatientName is emptied too, wherever it occurs (DICOM
#: PS3.15's basic profile: physicians, operators, responsible persons).
PATIENT_ATTRIBUTES = (
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientWeight",
    "PatientSize",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientAddress",
    "IssuerOfPatientID",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyID",
    "InstitutionName",
    "InstitutionAddress",
    "OperatorsName",
    "PerformingPhysicianName",
    "StudyDescription",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "RequestingPhysician",
    "StationName",
    "InstitutionalDepartmentName",
    "DeviceSerialNumber",
    "PatientComments",
    "AdditionalPatientHistory",
    "MedicalRecordLocator",
    "EthnicGroup",
    "Occupation",
    "PatientTelephoneNumbers",
    "MilitaryRank",
    "BranchOfService",
    "CountryOfResidence",
    "RegionOfResidence",
    "PatientReligiousPreference",
    "ResponsiblePerson",
    "PatientMotherBirthName",
    "AdmittingDiagnosesDescription",
    "RequestedProcedureDescription",
    "PerformedProcedureStepDescription",
    "ScheduledProcedureStepDescription",
    "ProtocolName",
    "PerformedProcedureStepID",
    "RequestedProcedureID",
    "DeviceUID",
    "InstitutionCodeSequence",
    "PersonIdentificationCodeSequence",
    "ReferencedPatientSequence",
)
#: The SEG's own equipment (its Type 1 serial number stays, the source's ones go).
OWN_DEVICE_SERIAL_NUMBER = "0"
#: Dates and times copied or stamped (the study's dates are identifying; a stamp of now
#: would make every rerun a different file).
DATE_ATTRIBUTES = (
    "StudyDate",
    "StudyTime",
    "SeriesDate",
    "SeriesTime",
    "AcquisitionDate",
    "AcquisitionTime",
    "InstanceCreationDate",
    "InstanceCreationTime",
    "AcquisitionDateTime",
)
CONTENT_DATE_TIME = ("19000101", "000000")


def _frame_affine(ds):
    """Voxel (column, row, 0) -> LPS of one DICOM image."""
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    return dicom_affine_lps(iop, ds.PixelSpacing, np.asarray(ds.ImagePositionPatient, float), normal)


def frames_from_labels(labels, affine, datasets):
    """The label image sampled on each DICOM image's pixel grid: (frames, rows, columns)."""
    out = np.zeros((len(datasets), int(datasets[0].Rows), int(datasets[0].Columns)), dtype=labels.dtype)
    for n, ds in enumerate(datasets):
        plane = nearest_on_grid(labels, affine, (int(ds.Columns), int(ds.Rows), 1), _frame_affine(ds))
        out[n] = plane[:, :, 0].T
    return out


def export_seg(voi_path, dicom_dir, out, *, patient, tracer, pet_series=None, software_version=""):
    """Write ``out`` (DICOM-SEG) from a study's ``voi.nii.gz`` over its original PET series.

    Returns ``{"segments": [...lesion IDs], "frames": n}``. A study without lesions gets a
    SEG with one empty segment labelled ``no lesions`` (DICOM needs one segment).
    """
    from dualpet.dicom import read_headers, select_in_folder

    where = f"patient {patient}, {tracer}"
    labels, affine = read_voi(voi_path)
    choice = select_in_folder(dicom_dir, where, pet_series)
    datasets, _, _ = read_headers(choice.pet, label=where)
    frames = frames_from_labels(labels, affine, datasets)
    present = [int(v) for v in np.unique(labels) if v > 0]
    seg_of = {lab: n for n, lab in enumerate(present, start=1)}
    pixel = np.zeros(frames.shape, dtype=np.uint16)
    for lab, n in seg_of.items():
        pixel[frames == lab] = n
    entropy = _uid_entropy(datasets, tracer, pixel, seg_of)
    width = max(2, len(str(max(present, default=0))))  # as lesions.tsv numbers them
    descriptions = _segment_descriptions(seg_of, width, tracer, entropy, software_version)
    seg = _segmentation(datasets, pixel, descriptions, entropy, tracer, software_version, bool(seg_of), where)
    _pseudonymise(seg, patient)
    _settle(seg, entropy)
    from dualpet.io import atomic_path

    with atomic_path(out) as tmp:
        seg.save_as(tmp)
    return {"segments": [lesion_id(lab, width) for lab in seg_of], "frames": int(len(datasets))}


def _uid_entropy(datasets, tracer, pixel, seg_of):
    """What the SEG's UIDs are generated from."""
    # UIDs from what the SEG holds (the PET series, the tracer, the VOIs): the same VOIs
    # give the same file, so a rerun with nothing changed changes nothing
    digest = hashlib.sha256(pixel.tobytes() + repr(sorted(seg_of.items())).encode()).hexdigest()
    return [str(datasets[0].SeriesInstanceUID), tracer, "dualpet lesions_seg", digest]


def _segment_descriptions(seg_of, width, tracer, entropy, software_version):
    """One segment description per lesion (``seg_of``: label -> segment number), or ``no lesions``."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    algorithm = hd.AlgorithmIdentificationSequence(
        name="dualpet", version=software_version or "0", family=codes.cid7162.NeighborhoodAnalysis
    )

    def description(number, label, **tracking):
        return hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
            algorithm_identification=algorithm,
            **tracking,
        )

    return [
        description(
            n,
            lesion_id(lab, width),
            tracking_id=f"{tracer} lesion {lesion_id(lab, width)}",
            tracking_uid=generate_uid(entropy_srcs=[*entropy, lesion_id(lab, width)]),
        )
        for lab, n in seg_of.items()
    ] or [description(1, "no lesions")]


def _segmentation(datasets, pixel, descriptions, entropy, tracer, software_version, omit_empty_frames, where):
    """The highdicom Segmentation over the PET series; what highdicom refuses, named."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    try:
        return hd.seg.Segmentation(
            source_images=datasets,
            pixel_array=pixel,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=generate_uid(entropy_srcs=entropy + ["series"]),
            series_number=9901,
            sop_instance_uid=generate_uid(entropy_srcs=entropy + ["instance"]),
            instance_number=1,
            manufacturer="dualpet",
            manufacturer_model_name="dualpet lesion VOIs",
            software_versions=software_version or "0",
            device_serial_number=OWN_DEVICE_SERIAL_NUMBER,
            content_label="LESIONS",
            content_description=f"dualpet final lesion VOIs ({tracer}), label Lk = lesions.tsv",
            omit_empty_frames=omit_empty_frames,
        )
    except Exception as exc:  # highdicom validates the source images; name what it refused
        raise DualpetInputError(
            f"{where}: cannot build the DICOM-SEG over the PET series ({redact_paths(exc)})"
        ) from exc


def _pseudonymise(ds, patient):
    """Name and ID = the pseudonym; PATIENT_ATTRIBUTES and the study's dates emptied
    wherever they occur (also inside sequences, e.g. the contributing equipment highdicom
    copies from the PET); the required content date and time are a fixed placeholder
    (no study date, and the same VOIs give the same file)."""

    def blank(dataset, elem):
        if elem.keyword in PATIENT_ATTRIBUTES or elem.keyword in DATE_ATTRIBUTES or elem.VR == "PN":
            elem.value = [] if elem.VR == "SQ" else ""

    ds.walk(blank)
    ds.PatientName = patient
    ds.PatientID = patient
    ds.DeviceSerialNumber = OWN_DEVICE_SERIAL_NUMBER
    ds.ContentDate, ds.ContentTime = CONTENT_DATE_TIME


def _settle(ds, entropy):
    """The values highdicom makes anew on each call (dimension organisation UID, the
    contribution stamp) set from what the SEG holds."""
    from pydicom.uid import generate_uid

    uid = generate_uid(entropy_srcs=[*entropy, "dimension organisation"])

    def fix(dataset, elem):
        if elem.keyword == "DimensionOrganizationUID":
            elem.value = uid
        elif elem.keyword == "ContributionDateTime":
            elem.value = CONTENT_DATE_TIME[0] + CONTENT_DATE_TIME[1]

    ds.walk(fix)


def seg_labels(path, shape, affine, what="lesion mask"):
    """A DICOM-SEG's segments as a label image on a grid (label = segment number, or the
    lesion number of an ``Lk`` segment label), and the label -> segment label mapping.
    highdicom stacks the frames into one volume with its affine (LPS); where segments
    overlap, the higher segment number wins (highdicom's rule)."""
    import highdicom as hd

    try:
        seg = hd.seg.segread(str(path))
        numbers = list(seg.get_segment_numbers())
        volume = seg.get_volume(combine_segments=True, skip_overlap_checks=True)
    except Exception as exc:
        raise DualpetInputError(
            f"{what} (studies sheet): not a readable DICOM-SEG volume ({redact_paths(exc)})"
        ) from exc
    names, lesion_of = {}, np.zeros(max(numbers) + 1, dtype=np.int32)
    for n in numbers:
        text = str(seg.get_segment_description(n).segment_label)
        lesion_of[n] = voi_label(text) if text[:1] == "L" and text[1:].isdigit() else n
        names[int(lesion_of[n])] = text
    on_grid = nearest_on_grid(np.asarray(volume.array).astype(np.int32), volume.affine, shape, affine)
    return lesion_of[on_grid], names


def rtstruct_labels(path, shape, affine, what="lesion mask"):
    """An RTSTRUCT's ROIs as a label image on a grid: ROI k (in file order) = label k,
    each closed planar contour filled on the grid plane nearest to it."""
    import pydicom
    from skimage.draw import polygon

    try:
        ds = pydicom.dcmread(str(path))
        rois = list(ds.ROIContourSequence)
        names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    except Exception as exc:
        raise DualpetInputError(f"{what} (studies sheet): not a readable RTSTRUCT ({redact_paths(exc)})") from exc
    inv = np.linalg.inv(affine)
    out = np.zeros(shape, dtype=np.int32)
    mapping = {}
    for k, roi in enumerate(rois, start=1):
        mapping[k] = names.get(int(roi.ReferencedROINumber), f"ROI {k}")
        for contour in getattr(roi, "ContourSequence", []):
            pts = np.asarray(contour.ContourData, float).reshape(-1, 3)
            vox = apply_affine(inv, pts)
            plane = int(np.rint(vox[:, 2].mean()))
            if not 0 <= plane < shape[2] or len(pts) < 3:
                continue
            rr, cc = polygon(vox[:, 0], vox[:, 1], shape[:2])
            sel = out[rr, cc, plane] == 0
            out[rr[sel], cc[sel], plane] = k
    return out, mapping


def check_reader_object(path, kind, dicom_dir, pet_series=None, *, where="", patient=""):
    """Refuse a reader's DICOM-SEG or RTSTRUCT that is not of this study's PET: another
    frame of reference (the other tracer's study, another scan) or another PatientID (when
    both carry one; dualpet's own SEGs carry the sheet's pseudonym ``patient``). Attributes
    are named, never their values."""
    import pydicom

    from dualpet.dicom import header_text, select_in_folder

    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    pet = select_in_folder(dicom_dir, where, pet_series).pet
    first = pet.headers[0]
    if kind == "SEG":
        frames = {header_text(ds, "FrameOfReferenceUID")}
    else:
        frames = {header_text(item, "FrameOfReferenceUID") for item in ds.get("ReferencedFrameOfReferenceSequence", [])}
    frames.discard("")
    mine = header_text(first, "FrameOfReferenceUID")
    if frames and mine and mine not in frames:
        raise DualpetInputError(
            f"{where}: lesion mask (studies sheet, {kind}): its FrameOfReferenceUID (0020,0052) is not "
            "this study's PET's: drawn on another study (the other tracer's?) or another patient"
        )
    a, b = header_text(ds, "PatientID").strip(), header_text(first, "PatientID").strip()
    if a and b and a != b and a != patient:
        raise DualpetInputError(
            f"{where}: lesion mask (studies sheet, {kind}): its PatientID (0010,0020) is not this "
            "study's PET's: another patient's mask"
        )


def is_dicom_object(path):
    """'SEG', 'RTSTRUCT' or None (anything else, e.g. NIfTI)."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception:
        return None
    return {"SEG": "SEG", "RTSTRUCT": "RTSTRUCT"}.get(str(ds.get("Modality", "")))
