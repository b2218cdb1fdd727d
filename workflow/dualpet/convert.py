"""Study folder -> ``ct.nii.gz``, ``pet_suv.nii.gz`` and the ``pet.json`` sidecar."""

from __future__ import annotations

import numpy as np

from dualpet import consistency
from dualpet.dicom import load_series, read_headers, select_in_folder
from dualpet.errors import DualpetInputError
from dualpet.geometry import voxel_spacing
from dualpet.io import write_json
from dualpet.nifti import nifti_image, save_nifti
from dualpet.suv import suv_factors


def _series_summary(series, volume):
    return {
        "series_number": series.number,
        "series_description": series.description,
        "slices": int(volume.data.shape[2]),
        "shape": [int(n) for n in volume.data.shape],
        "voxel_size_mm": [round(float(v), 4) for v in voxel_spacing(volume.affine)],
        **{k: v for k, v in volume.geometry.items() if k != "slices"},
    }


def convert_pet(series, out, json_out=None, *, where, extra=None, register_to=None):
    """Convert one PET series to SUVbw NIfTI (float32) and write its sidecar.

    ``register_to`` (a CT :class:`~dualpet.dicom.Volume` of another frame of reference):
    the PET is registered rigidly onto it and written with its affine placed in the CT's
    frame; its voxels are not resampled. The sidecar's ``pet_to_ct_registration`` says so.
    """
    volume = load_series(series, label=where)
    factors, suv = suv_factors(volume.datasets, where=f"{where}, {series.label}")
    data = volume.data  # float32, rescaled per slice; scaled in place to save memory
    data *= factors.astype(np.float32)[None, None, :]
    affine, registration = volume.affine, None
    if register_to is not None:
        from dualpet.registration import register_pet_to_ct

        M, qc = register_pet_to_ct(data, affine, register_to.data, register_to.affine)
        affine = M @ affine
        registration = {"reason": "PET and CT have different FrameOfReferenceUID", **qc}
    save_nifti(out, nifti_image(data, affine))
    sidecar = {
        "units": "SUVbw (g/mL)",
        **suv,
        "rescale": "per-slice RescaleSlope applied",
        "rescale_slope_range": [float(volume.slopes.min()), float(volume.slopes.max())],
        "pet_series": _series_summary(series, volume),
        "pet_to_ct_registration": registration,
        **(extra or {}),
    }
    if json_out:
        write_json(json_out, sidecar)
    return sidecar


def _with_skipped(exc, choice):
    """The error, with the folder's entries that were not read (why slices may be missing)."""
    note = choice.series.skipped_note() if choice is not None else ""
    return DualpetInputError(f"{exc}{note}") if note else exc


def convert_study(
    dicom_dir, *, patient, tracer, ct_out, pet_out, json_out, pet_series=None, ct_series=None, choice=None
):
    """Convert a PET/CT study folder (one row of the studies sheet). ``choice``: the
    folder's series as :func:`inspect_study` read and chose them (the folder is then not
    read again)."""
    where = f"patient {patient}, {tracer}"
    if choice is None:
        choice = select_in_folder(dicom_dir, where, pet_series, ct_series)
    try:
        return _convert(choice, where, patient, tracer, ct_out, pet_out, json_out)
    except DualpetInputError as exc:
        raise _with_skipped(exc, choice) from exc


def _convert(choice, where, patient, tracer, ct_out, pet_out, json_out):
    ct_volume = load_series(choice.ct, label=where)
    hu = ct_volume.data
    ct_data = hu
    if hu.min() >= -32768 and hu.max() <= 32767:  # (False for a NaN)
        whole = hu.astype(np.int16)  # equal to hu where hu is a whole number in range
        ct_data = whole if np.array_equal(whole, hu) else hu
    save_nifti(ct_out, nifti_image(ct_data, ct_volume.affine))
    pet, ct = choice.pet, choice.ct
    shared = bool(pet.frame_of_reference) and pet.frame_of_reference == ct.frame_of_reference
    cover = (
        consistency.coverage(consistency.z_extent(pet.headers), consistency.z_extent(ct_volume.datasets))
        if shared
        else None
    )
    return convert_pet(
        pet,
        pet_out,
        json_out,
        where=where,
        register_to=None if shared else ct_volume,
        extra={
            "patient": patient,
            "tracer": tracer,
            "ct_series": _series_summary(ct, ct_volume),
            "pet_ct_same_frame_of_reference": shared,
            "ct_coverage": cover,
            "series_choice": choice.report(),
        },
    )


def inspect_study(
    dicom_dir,
    *,
    patient,
    tracer,
    out_json,
    pet_series=None,
    ct_series=None,
    fingerprint=None,
    other_study=None,
    max_uncovered_fraction=consistency.MAX_UNCOVERED_FRACTION,
    keep_choice=False,
):
    """Check from the headers that a study can be converted; write the verdict.

    Runs the series choice, the slice-geometry checks of both series, the SUV rules and
    the consistency checks of :mod:`dualpet.consistency` (one patient, one study, the CT
    covering the PET, complete and decodable pixel data; ``other_study``: (folder,
    tracer) of the patient's other study, to compare PatientID and sex). Pixel data is read
    for one image per series. A refusal is recorded (``ok: false`` and the one-line error
    naming the series and attribute) rather than raised, so that the workflow can exclude
    the patient from the cohort and say why. Returns the verdict; with ``keep_choice``,
    (verdict, the series read and chosen, for :func:`convert_study`; None when refused).
    """
    where = f"patient {patient}, {tracer}"
    verdict = {"patient": patient, "tracer": tracer, "folder_fingerprint": fingerprint or None}
    choice = None
    try:
        choice = select_in_folder(dicom_dir, where, pet_series, ct_series)
        pet, ct = choice.pet, choice.ct
        pet_headers, _, pet_geometry = read_headers(pet, label=where)
        ct_headers, _, ct_geometry = read_headers(ct, label=where)
        consistency.one_acquisition(pet_headers, f"{where}, {pet.label}")
        _, suv = suv_factors(pet_headers, where=f"{where}, {pet.label}")
        consistency.same_study(pet_headers[0], ct_headers[0], where)
        if other_study:
            consistency.same_patient(pet_headers[0], other_study[0], tracer, other_study[1], where)
        shared = bool(pet.frame_of_reference) and pet.frame_of_reference == ct.frame_of_reference
        coverage = consistency.ct_covers_pet(pet_headers, ct_headers, where, max_uncovered_fraction) if shared else None
        consistency.pixel_data_readable(pet, pet_headers, where)
        consistency.pixel_data_readable(ct, ct_headers, where)
        verdict.update(
            ok=True,
            pet_series={"series_number": pet.number, "series_description": pet.description, **pet_geometry},
            ct_series={"series_number": ct.number, "series_description": ct.description, **ct_geometry},
            pet_ct_same_frame_of_reference=shared,
            ct_coverage=coverage,
            series_choice=choice.report(),
            suv_rules={k: v for k, v in suv.items() if k.endswith("_source") or k in ("units_in", "decay_correction")},
        )
    except DualpetInputError as exc:
        message = str(_with_skipped(exc, choice))
        verdict.update(ok=False, error=message if message.startswith(where) else f"{where}: {message}")
        choice = None
    write_json(out_json, verdict)
    return (verdict, choice) if keep_choice else verdict
