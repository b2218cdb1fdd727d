"""The reader's lesions (detection methods ``seeds`` and ``masks``): seeds clicked near a
lesion's maximum, or contours drawn in a viewer (a NIfTI label image, a DICOM-SEG or an
RTSTRUCT), each one lesion."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dualpet.detection.regions import STRUCTURE, ball
from dualpet.geometry import apply_affine, nearest_on_grid, voxel_volume_ml
from dualpet.settings import default


def _reader_lesion(suv, affine, region, source, **extra):
    peak = np.unravel_index(int(np.argmax(np.where(region, suv, -np.inf))), suv.shape)
    return {
        "suvmax": float(suv[peak]),
        "peak_ijk": [int(v) for v in peak],
        "peak_lps": apply_affine(affine, peak).tolist(),
        "volume_ml_at_threshold": float(region.sum() * voxel_volume_ml(affine)),
        "source": source,
        **extra,
        "_region": region,
    }


def lesions_from_seeds(
    suv, affine, seeds_lps, *, radius_mm=default("detection.seed_radius_mm"), fraction=0.5, where=""
):
    """Reader-supplied seeds (LPS mm) -> lesion regions.

    Each seed becomes one lesion: its hottest voxel within ``radius_mm`` (readers click
    near, not exactly on, the maximum), and as region the voxels at or above ``fraction``
    x that maximum, connected to it, within ``radius_mm`` of it and not already part of
    an earlier seed's lesion. A seed whose maximum lies in an earlier seed's lesion is
    the same lesion clicked twice: it is merged (listed in that lesion's ``merged_seeds``).
    """
    from dualpet.errors import DualpetInputError

    spacing = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)
    inv = np.linalg.inv(np.asarray(affine, dtype=float))
    lesions, taken = [], np.zeros(suv.shape, dtype=bool)
    for n, seed in enumerate(seeds_lps, start=1):
        ijk = apply_affine(inv, seed)
        if np.any(ijk < -0.5) or np.any(ijk > np.array(suv.shape) - 0.5):
            raise DualpetInputError(f"{where}: seed {n} at {list(seed)} (LPS mm) lies outside the PET")
        around = ball(suv.shape, ijk, radius_mm, spacing)
        around[tuple(np.clip(np.rint(ijk).astype(int), 0, np.array(suv.shape) - 1))] = True  # never empty
        peak = np.unravel_index(int(np.argmax(np.where(around, suv, -np.inf))), suv.shape)
        if taken[peak]:  # a second click on a lesion already seeded
            owner = next(les for les in lesions if les["_region"][peak])
            owner.setdefault("merged_seeds", []).append(n)
            continue
        near = ball(suv.shape, peak, radius_mm, spacing)
        near[peak] = True
        comps, _ = ndimage.label(near & (suv >= fraction * suv[peak]) & ~taken, structure=STRUCTURE)
        region = comps == comps[peak]
        taken |= region
        lesions.append(_reader_lesion(suv, affine, region, "seed", seed=n, seed_lps=[float(v) for v in seed]))
    return lesions


def lesions_from_mask(suv, affine, label_image, file_labels=None, *, split_binary=True):
    """Reader-supplied lesion masks on the PET grid -> (lesion regions, dropped labels).

    Every non-zero label value of the file (``file_labels``; default: those on the grid)
    is one lesion, whatever its connected components (a DICOM-SEG segment, an RTSTRUCT
    ROI). A NIfTI file with a single label value is a binary mask of all lesions
    (``split_binary``): split into its connected components. Labels that do not reach any
    PET voxel (outside the field of view, or smaller than a voxel) are returned as dropped.
    """
    on_grid = [int(v) for v in np.unique(label_image) if v != 0]
    values = sorted(int(v) for v in file_labels) if file_labels is not None else on_grid
    dropped = [v for v in values if v not in on_grid]
    if len(values) == 1 and split_binary:
        comps, n = ndimage.label(label_image != 0, structure=STRUCTURE)
        regions = [(f"component {i}", comps == i) for i in range(1, n + 1)]
    else:
        regions = [(f"label {v}", label_image == v) for v in values if v in on_grid]
    return [_reader_lesion(suv, affine, r, "mask", mask_part=name) for name, r in regions], dropped


def lesions_from_reader_mask(lesion_mask, suv, pet_affine, *, pet_dicom=None, where="", patient=""):
    """The lesions of the studies sheet's ``lesion_mask`` on this study's PET grid, and the
    record of where they came from (``info`` of ``segmentation.json``). A DICOM object (a
    DICOM-SEG: segment = lesion; an RTSTRUCT: ROI = lesion) must be of this study's PET
    (``pet_dicom``: its folder and PET series); a NIfTI file is a label image. A mask that
    reaches no PET voxel is refused (drawn on another study?)."""
    from dualpet.dicomseg import is_dicom_object, rtstruct_labels, seg_labels
    from dualpet.errors import DualpetInputError
    from dualpet.nifti import read_label_image

    kind_of_mask = is_dicom_object(lesion_mask)
    if kind_of_mask:  # a DICOM-SEG (segment = lesion) or RTSTRUCT (ROI = lesion) from a viewer
        if pet_dicom:
            from dualpet.dicomseg import check_reader_object

            check_reader_object(lesion_mask, kind_of_mask, *pet_dicom, where=where, patient=patient)
        read = seg_labels if kind_of_mask == "SEG" else rtstruct_labels
        regions, names = read(lesion_mask, suv.shape, pet_affine)
        file_labels = sorted(names)
    else:
        data, data_affine = read_label_image(lesion_mask, "lesion mask")
        regions = nearest_on_grid(data, data_affine, suv.shape, pet_affine)
        file_labels, names = [int(v) for v in np.unique(data) if v != 0], {}
    lesions, dropped = lesions_from_mask(suv, pet_affine, regions, file_labels, split_binary=not kind_of_mask)
    if not lesions:  # a mask with nothing on this PET: not "no lesions", a mask of something else
        what = f"its {len(file_labels)} segment(s) or label(s)" if file_labels else "it holds no lesion"
        raise DualpetInputError(
            f"{where}: lesion mask (studies sheet, {kind_of_mask or 'NIfTI'}): {what} reach no voxel "
            "of this study's PET (an empty mask, or one drawn on another study?)"
        )
    for les in lesions:  # the viewer's own name of each segment or ROI
        value = int(les["mask_part"].split()[-1]) if les["mask_part"].startswith("label ") else None
        if value in names:
            les["mask_name"] = names[value]
    info = {
        "threshold_suv": None,
        "lesion_mask": f"studies sheet column lesion_mask ({kind_of_mask or 'NIfTI'})",
        "labels_outside_pet": dropped,
    }
    return lesions, info
