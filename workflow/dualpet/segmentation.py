"""Lesion detection on a PET's own voxels.

Method:

1. Threshold (configurable): ``fixed`` (SUV >= ``value``) or ``background`` (SUV >=
   ``factor`` x background SUVmean, default 2 x blood pool).
2. Physiological uptake: connected components (26-connectivity) of SUV >=
   ``organ_fraction`` x threshold that are larger than ``max_volume_ml`` are organ-sized
   uptake regions (liver, kidneys, heart, bladder, spleen, marrow). A candidate whose
   maximum lies in such a region is a lesion only if its SUVmax is at least
   ``organ_contrast`` x the region's median SUV (a metastasis stands out from its organ,
   noise and organ texture do not). An optional exclusion mask removes more. Known
   limitation: a lesion inside an organ whose own uptake exceeds the detection threshold
   shares the organ's above-threshold region and is rejected with it as oversized;
   CT-guided organ masks are the planned remedy.
3. Touching lesions are split at their own maxima: markers are the regional maxima of
   the lightly smoothed image that stand out by at least ``h`` (h-maxima), the split is
   a watershed of the inverted image over the above-threshold voxels.
4. Pieces smaller than ``min_volume_ml`` or larger than ``max_volume_ml`` are dropped.

Each remaining piece is a lesion's *region* (label value = lesion number); its VOI is
the isocontour inside that region (see :func:`dualpet.metrics.isocontour_voi`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from dualpet.geometry import apply_affine, voxel_volume_ml

_STRUCTURE = np.ones((3, 3, 3), dtype=bool)


def detection_threshold(method, background_suvmean):
    """SUV threshold from the configured method.

    Parameters
    ----------
    method : dict
        ``{"method": "fixed", "value": 3.0}`` or ``{"method": "background", "factor": 2.0}``.
    background_suvmean : float
        Background SUVmean of the study (blood pool by default).
    """
    kind = method.get("method", "background")
    if kind == "fixed":
        return float(method["value"])
    if kind == "background":
        return float(method.get("factor", 2.0)) * float(background_suvmean)
    raise ValueError(f"unknown detection method {kind!r} (expected 'fixed' or 'background')")


def detect_lesions(
    suv,
    affine,
    threshold,
    *,
    min_volume_ml=0.2,
    max_volume_ml=60.0,
    organ_fraction=0.6,
    organ_contrast=1.5,
    split_h=None,
    exclusion=None,
):
    """Detect lesions in a PET volume.

    Parameters
    ----------
    suv : ndarray (I, J, K)
        SUVbw on the PET's own grid.
    affine : ndarray (4, 4)
        Voxel -> LPS (mm).
    threshold : float
        Detection threshold (SUVbw).
    min_volume_ml, max_volume_ml : float
        Lesion size limits at the detection threshold (mL).
    organ_fraction, organ_contrast : float
        Organ-sized regions are found at ``organ_fraction`` x threshold; a candidate in
        one must reach ``organ_contrast`` x its median SUV.
    split_h : float, optional
        Minimum prominence (SUV) of a maximum to seed its own lesion (default 25 % of the
        threshold).
    exclusion : ndarray of bool, optional
        Voxels that can never be lesions (physiological uptake masks).

    Returns
    -------
    labels : ndarray of int32
        0 = background, n = region of lesion n (1-based, ordered cranio-caudally).
    info : dict
        ``lesions`` (label, suvmax, peak voxel and LPS position, volume at threshold),
        ``organs`` (organ-sized regions: volume, median SUV, centroid), ``rejected``
        (candidates and why) and the parameters used.
    """
    vox_ml = voxel_volume_ml(affine)
    organ_comps, n_org = ndimage.label(suv >= organ_fraction * threshold, structure=_STRUCTURE)
    org_sizes = np.bincount(organ_comps.ravel(), minlength=n_org + 1) * vox_ml
    organ_ids = [int(i) for i in np.flatnonzero(org_sizes > max_volume_ml) if i > 0]
    organ_median = {}
    organs = []
    for i in organ_ids:
        sel = organ_comps == i
        organ_median[i] = float(np.median(suv[sel]))
        organs.append(
            {
                "volume_ml": float(org_sizes[i]),
                "suv_median": organ_median[i],
                "suvmax": float(suv[sel].max()),
                "centroid_lps": apply_affine(affine, ndimage.center_of_mass(sel)).tolist(),
            }
        )

    mask = suv >= threshold
    if exclusion is not None:
        mask &= ~exclusion.astype(bool)
    h = 0.25 * threshold if split_h is None else float(split_h)
    smooth = ndimage.gaussian_filter(suv.astype(np.float32), 0.7)
    markers, _ = ndimage.label(h_maxima(np.where(mask, smooth, 0.0), h) & mask, structure=_STRUCTURE)
    pieces = watershed(-smooth, markers, mask=mask, connectivity=3)

    lesions, rejected = [], []
    for lab, sl in enumerate(ndimage.find_objects(pieces), start=1):
        if sl is None:
            continue
        region = pieces[sl] == lab
        vals = np.where(region, suv[sl], -np.inf)
        local_peak = np.unravel_index(int(np.argmax(vals)), region.shape)
        peak = tuple(int(p + s.start) for p, s in zip(local_peak, sl))
        cand = {"suvmax": float(suv[peak]), "peak_ijk": list(peak), "peak_lps": apply_affine(affine, peak).tolist()}
        organ = int(organ_comps[peak])
        reason = None
        if organ in organ_median and cand["suvmax"] < organ_contrast * organ_median[organ]:
            reason = (
                f"physiological: inside an organ-sized uptake region (median SUV {organ_median[organ]:.2f}) "
                f"without {organ_contrast}x contrast"
            )
        volume = float(region.sum() * vox_ml)
        cand["volume_ml_at_threshold"] = volume
        if reason is None and volume > max_volume_ml:
            reason = f"larger than max_volume_ml={max_volume_ml}"
        if reason:
            rejected.append({**cand, "reason": reason})
        elif volume >= min_volume_ml:  # smaller pieces are noise, not reported individually
            lesions.append({**cand, "_region": (sl, region)})
    # Stable numbering: cranio-caudal, then by x.
    lesions.sort(key=lambda d: (-d["peak_lps"][2], d["peak_lps"][0]))
    labels = np.zeros(suv.shape, dtype=np.int32)
    for new, les in enumerate(lesions, start=1):
        sl, region = les.pop("_region")
        labels[sl][region] = new
        les["label"] = new
    info = {
        "threshold_suv": float(threshold),
        "min_volume_ml": min_volume_ml,
        "max_volume_ml": max_volume_ml,
        "organ_fraction": organ_fraction,
        "organ_contrast": organ_contrast,
        "split_h_suv": h,
        "lesions": lesions,
        "organs": organs,
        "rejected": rejected,
    }
    return labels, info


def mask_on_grid(mask_path, labels, shape, affine_lps):
    """A NIfTI label image resampled onto a grid by nearest neighbour through world coordinates.

    Parameters
    ----------
    mask_path : path of a NIfTI label image (any grid, RAS affine as NIfTI stores it).
    labels : sequence of int or None
        Label values selected; None or empty: every non-zero label.
    shape, affine_lps : the target grid and its voxel->LPS affine.

    Returns
    -------
    ndarray of bool (``shape``)
    """
    import nibabel as nib

    from dualpet.geometry import lps_affine

    img = nib.load(str(mask_path))
    data = np.asarray(img.dataobj)
    if data.ndim != 3:
        raise ValueError(f"exclusion mask {mask_path}: expected a 3-D label image, got shape {data.shape}")
    selected = np.isin(data, list(labels)) if labels else data != 0
    to_mask = np.linalg.inv(lps_affine(img.affine)) @ np.asarray(affine_lps, dtype=float)  # voxel -> mask voxel
    out = np.zeros(shape, dtype=bool)
    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    for k in range(shape[2]):
        ijk = np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, k)], axis=1)
        m = np.rint(apply_affine(to_mask, ijk)).astype(int)
        ok = np.all((m >= 0) & (m < data.shape), axis=1)
        hit = np.zeros(len(m), dtype=bool)
        hit[ok] = selected[tuple(m[ok].T)]
        out[:, :, k] = hit.reshape(ii.shape)
    return out


def segment_study(
    ct_path,
    pet_path,
    labels_out,
    json_out,
    *,
    detection,
    background=None,
    patient="",
    tracer="",
    exclusion_mask=None,
    background_at=None,
    background_png=None,
):
    """Background VOI + lesion detection for one study (files in, files out).

    Parameters
    ----------
    detection : dict
        ``method`` ('background' or 'fixed'), ``factor`` / ``value``, ``min_volume_ml``,
        ``max_volume_ml``, ``organ_fraction``, ``organ_contrast``.
    background : dict, optional
        ``method`` ('bloodpool' or 'liver') and ``offset_mm`` for the blood-pool search
        (see :mod:`dualpet.background`).
    background_at : (x, y, z), optional
        VOI centre (this study's LPS mm) given in the studies sheet: no search.
    background_png : path, optional
        QC picture of the background VOI.
    exclusion_mask : path, optional
        NIfTI label image of physiological uptake; ``detection["exclusion_labels"][tracer]``
        selects its labels (default: every non-zero label).
    """
    import nibabel as nib

    from dualpet.background import blood_pool, liver, measure_at
    from dualpet.geometry import lps_affine
    from dualpet.io import write_json
    from dualpet.nifti import nifti_image, save_nifti

    where = f"patient {patient}, {tracer}"
    ct = nib.load(str(ct_path))
    pet = nib.load(str(pet_path))
    suv = np.asarray(pet.dataobj, dtype=np.float32)
    pet_affine = lps_affine(pet.affine)
    bg_opts = dict(background or {})
    method = bg_opts.pop("method", "bloodpool")
    if background_at is not None:
        bg = measure_at(suv, pet_affine, background_at, method)
    elif method == "liver":
        bg = liver(np.asarray(ct.dataobj), lps_affine(ct.affine), suv, pet_affine, where=where)
    else:
        bg = blood_pool(np.asarray(ct.dataobj), lps_affine(ct.affine), suv, pet_affine, where=where, **bg_opts)
    if background_png:
        from dualpet.qc import background_figure

        background_figure(np.asarray(ct.dataobj), lps_affine(ct.affine), suv, pet_affine, bg, background_png,
                          title=f"patient {patient}, {tracer}: background VOI")  # fmt: skip
    threshold = detection_threshold(detection, bg["suvmean"])
    keys = ("min_volume_ml", "max_volume_ml", "organ_fraction", "organ_contrast")
    exclusion, excluded = None, {"provided": False}
    if exclusion_mask:
        chosen = (detection.get("exclusion_labels") or {}).get(tracer) or None
        exclusion = mask_on_grid(exclusion_mask, chosen, suv.shape, pet_affine)
        excluded = {"provided": True, "labels": chosen or "all non-zero", "voxels": int(exclusion.sum())}
    labels, info = detect_lesions(
        suv, pet_affine, threshold, exclusion=exclusion, **{k: detection[k] for k in keys if k in detection}
    )
    info["exclusion_mask"] = excluded
    save_nifti(labels_out, nifti_image(labels, pet_affine))
    write_json(json_out, {"patient": patient, "tracer": tracer, "background": bg, "detection": {"method": dict(detection), **info}})
    return bg, info
