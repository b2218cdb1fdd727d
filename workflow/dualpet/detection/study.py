"""One study's detection, files in and files out (the workflow's ``segment`` step): its
background VOI, the lesions of the configured method, the reader's review decisions,
``lesions.nii.gz`` (label k = lesion k) and ``segmentation.json``."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dualpet.detection import LOCAL_METHOD, READER_METHODS
from dualpet.geometry import ct_on_pet_grid, nearest_on_grid
from dualpet.settings import complete, default


def segment_study(
    ct_path,
    pet_path,
    labels_out,
    json_out,
    *,
    detection=None,
    background=None,
    patient="",
    tracer="",
    exclusion_mask=None,
    background_at=None,
    background_mask=None,
    background_png=None,
    lesion_mask=None,
    seeds=None,
    anatomy=None,
    review=None,
    pet_dicom=None,
):
    """Background VOI + lesion detection for one study (files in, files out).

    ``detection`` and ``background`` are the config's sections; a setting left out takes its
    default (:mod:`dualpet.settings`), so a study run alone is detected as the workflow
    detects it. From the studies sheet: ``background_at`` (a VOI centre, this study's LPS
    mm) or ``background_mask`` (NIfTI, any grid) replace the background search;
    ``exclusion_mask`` (NIfTI labels; ``detection["exclusion_labels"][tracer]`` selects
    them, default every non-zero one) is never a lesion; ``lesion_mask`` (NIfTI labels,
    DICOM-SEG or RTSTRUCT) and ``seeds`` (LPS mm) are the reader's lesions of the methods
    'masks' and 'seeds'. ``anatomy``: the study's organ map on its CT grid (default: made
    from the CT by :func:`dualpet.anatomy.segment_ct`). ``review``: the reader's decisions
    (:mod:`dualpet.review`), applied after detection. ``pet_dicom``: the study's folder and
    PET series, which a DICOM lesion mask must belong to. ``background_png``: the
    background VOI's QC picture.
    """
    from dualpet.interchange import write_segmentation
    from dualpet.nifti import nifti_image, save_nifti

    detection, background = complete("detection", detection), complete("background", background)
    where = f"patient {patient}, {tracer}"
    study = _Study(ct_path, pet_path, anatomy, where)
    bg = _background(study, background, detection, background_mask, background_at, background_png)
    if detection["method"] in READER_METHODS:
        labels, info = _reader_detection(detection["method"], study, detection, lesion_mask, seeds, pet_dicom, patient)
    else:
        from_mask = bool(background_mask) and background["method"] == "liver"
        labels, info = _automatic_detection(study, detection, tracer, exclusion_mask, bg, from_mask)
    for les in info["lesions"]:
        les.setdefault("origin", "automatic")
    if review:
        labels = _review(study, labels, info, review, detection)
    save_nifti(labels_out, nifti_image(labels, study.pet_affine))
    write_segmentation(json_out, patient, tracer, bg, detection, info)
    return bg, info


def _background(study, background, detection, mask, at, png):
    """The study's background VOI (:func:`dualpet.background.study_background`) and its QC
    picture."""
    from dualpet.background import study_background, voi_shape

    bg, voi = study_background(
        study.organ_ct,
        study.ct_affine,
        study.hu_ct,
        study.suv,
        study.pet_affine,
        background["method"],
        mask=mask,
        at=at,
        needed=detection["method"] == "background",
        where=study.where,
    )
    if png:
        from dualpet.qc import background_figure

        title = f"{study.where}: background VOI"
        background_figure(
            study.hu_ct,
            study.ct_affine,
            study.suv,
            study.pet_affine,
            bg,
            png,
            shape=voi_shape(bg),
            mask=voi,
            title=title,
        )
    return bg


def _review(study, labels, info, review, detection):
    """The reader's decisions applied (:func:`dualpet.review.apply_decisions`): the label
    image renumbered; ``info`` gets the lesions, rejected candidates and decision records."""
    from dualpet.review import apply_decisions

    labels, info["lesions"], info["rejected"], info["review"] = apply_decisions(
        study.suv,
        study.pet_affine,
        labels,
        info["lesions"],
        info.setdefault("rejected", []),
        review,
        seed_radius_mm=float(detection["seed_radius_mm"]),
        where=study.where,
    )
    return labels


class _Study:
    """A study's CT and PET (on their own grids, LPS affines) and its organ map on the CT grid."""

    def __init__(self, ct_path, pet_path, anatomy, where):
        from dualpet.errors import DualpetInputError
        from dualpet.geometry import lps_affine
        from dualpet.nifti import as_stored, load_nifti, read_label_image

        self.where = where
        ct, pet = load_nifti(ct_path), load_nifti(pet_path)
        self.suv = np.asarray(pet.dataobj, dtype=np.float32)
        self.hu_ct = as_stored(ct)
        self.ct_affine, self.pet_affine = lps_affine(ct.affine), lps_affine(pet.affine)
        if anatomy is None:  # library use: the organ map from the CT's classical rules
            from dualpet.anatomy import segment_ct

            self.organ_ct = segment_ct(self.hu_ct, self.ct_affine)[0]
        else:
            self.organ_ct, organ_affine = read_label_image(anatomy, "organ map", dtype=np.uint8)
            if self.organ_ct.shape != self.hu_ct.shape or not np.allclose(organ_affine, self.ct_affine, atol=1e-3):
                raise DualpetInputError(f"{where}: the organ map does not lie on the study's CT grid")

    def on_pet_grid(self, what):
        """The CT (``hu``), the CT averaged over each PET voxel (``hu_mean``) or the organ map
        (``organs``) on the PET grid."""
        shape, ct_affine, pet_affine = self.suv.shape, self.ct_affine, self.pet_affine
        if what == "organs":
            return nearest_on_grid(self.organ_ct.astype(np.uint8), ct_affine, shape, pet_affine)
        return ct_on_pet_grid(self.hu_ct, ct_affine, shape, pet_affine, average=what == "hu_mean")


def _reader_detection(kind, study, detection, lesion_mask, seeds, pet_dicom, patient):
    """The reader's lesions (methods 'masks' and 'seeds'), numbered: (labels, info)."""
    from dualpet.detection.reader import lesions_from_reader_mask, lesions_from_seeds
    from dualpet.detection.regions import number_lesions
    from dualpet.errors import DualpetInputError

    if kind == "masks":
        if not lesion_mask:
            raise DualpetInputError(
                f"{study.where}: detection method 'masks' needs this study's lesion_mask in the studies sheet"
            )
        lesions, info = lesions_from_reader_mask(
            lesion_mask, study.suv, study.pet_affine, pet_dicom=pet_dicom, where=study.where, patient=patient
        )
    else:
        radius = float(detection["seed_radius_mm"])
        lesions = lesions_from_seeds(study.suv, study.pet_affine, seeds or [], radius_mm=radius, where=study.where)
        info = {"threshold_suv": None, "seeds": len(seeds or [])}
    for les in lesions:
        les["origin"] = f"reader-{les['source']}"
    labels = number_lesions(lesions, study.suv.shape)
    info["lesions"] = lesions
    return labels, info


def _automatic_detection(study, detection, tracer, exclusion_mask, bg, liver_mask):
    """Detection by the local or a threshold method, with the CT, the organ map and the
    exclusion mask on the PET grid: (labels, info). ``liver_mask``: the background came
    from a liver mask in the sheet (PERCIST's liver VOI)."""
    from dualpet.detection.physiology import DEFAULT_PHYSIOLOGICAL

    groups = (detection["physiological"] or {}).get(tracer, DEFAULT_PHYSIOLOGICAL)
    exclusion, excluded = _exclusion(exclusion_mask, detection, tracer, study.suv.shape, study.pet_affine)
    common = {
        "min_volume_ml": per_tracer(detection["min_volume_ml"], tracer),
        "exclusion": exclusion,
        "hu": study.on_pet_grid("hu"),
        "organ_map": study.on_pet_grid("organs"),
        "physiological": groups,
    }
    liver_voi = None
    if detection["method"] == LOCAL_METHOD:
        labels, info = _local(study, detection, common)
    else:
        from dualpet.detection.threshold import detect_lesions, detection_threshold

        if detection["method"] == "percist":
            liver_voi = _percist_liver(study, bg, liver_mask)
        threshold = detection_threshold(detection, bg["suvmean"], liver_voi)
        labels, info = detect_lesions(
            study.suv,
            study.pet_affine,
            threshold,
            max_volume_ml=detection["max_volume_ml"],
            end_planes_mm=detection["end_planes_mm"],
            organ_fraction=detection["organ_fraction"],
            organ_contrast=detection["organ_contrast"],
            **common,
        )
    info["physiological"] = {"groups": list(groups), "organ_map": "anatomy.nii.gz"}
    info["exclusion_mask"] = excluded
    if liver_voi is not None:
        info["percist_liver"] = liver_voi
    return labels, info


def _local(study, detection, common):
    """Method 'local': the noise model from the liver (else the body's most homogeneous
    tiles), then :func:`dualpet.detection.local.detect_local`."""
    from dualpet.background import liver_centres
    from dualpet.detection.local import detect_local
    from dualpet.detection.noise import noise_model, smoothing_sigma

    fwhm = float(detection["smooth_fwhm_mm"])
    smooth = ndimage.gaussian_filter(study.suv, smoothing_sigma(study.pet_affine, fwhm))
    centres = liver_centres(study.organ_ct, study.ct_affine)[0] or ()
    noise = noise_model(smooth, study.pet_affine, centres, where=study.where)
    return detect_local(
        study.suv,
        study.pet_affine,
        noise,
        contrast=float(detection["organ_contrast"]),
        cnr=float(detection["contrast_to_noise"]),
        max_volume_ml=float(detection["max_volume_ml"]),
        end_planes_mm=float(detection["end_planes_mm"]),
        smooth_fwhm_mm=fwhm,
        smooth=smooth,
        hu_mean=study.on_pet_grid("hu_mean"),
        **common,
    )


def _percist_liver(study, bg, liver_mask):
    """PERCIST's liver VOI: the background's when it is the liver's, else the liver sphere."""
    from dualpet.background import background_from_anatomy

    if bg["source"].startswith("liver") or liver_mask:
        return bg
    return background_from_anatomy(
        study.organ_ct,
        study.ct_affine,
        study.hu_ct,
        study.suv,
        study.pet_affine,
        "liver",
        fallback=False,
        where=study.where,
    )


def per_tracer(value, tracer):
    """A setting given as one number or per tracer (``{tracer: number}``; a tracer not
    listed gets the mapping's ``default`` if it has one, else the setting's default).

    >>> per_tracer(0.5, "fdg"), per_tracer({"fdg": 0.2, "default": 0.3}, "ga68")
    (0.5, 0.3)
    """
    if isinstance(value, dict):
        return float(value.get(tracer, value.get("default", default("detection.min_volume_ml"))))
    return float(value)


def _exclusion(exclusion_mask, detection, tracer, shape, pet_affine):
    """The sheet's exclusion mask on the PET grid (or None) and its record."""
    from dualpet.nifti import mask_on_grid

    if not exclusion_mask:
        return None, {"provided": False}
    chosen = (detection["exclusion_labels"] or {}).get(tracer) or None
    exclusion = mask_on_grid(exclusion_mask, chosen, shape, pet_affine)
    return exclusion, {"provided": True, "labels": chosen or "all non-zero", "voxels": int(exclusion.sum())}
