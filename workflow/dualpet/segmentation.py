"""Lesion detection on a PET's own voxels.

Method:

1. Threshold (configurable): ``fixed`` (SUV >= ``value``) or ``background`` (SUV >=
   ``factor`` x background SUVmean, default 2 x blood pool).
2. Candidates: the above-threshold voxels, split at their own maxima (markers are the
   regional maxima of the lightly smoothed image that stand out by at least ``h``,
   h-maxima; the split is a watershed of the inverted image). Pieces smaller than
   ``min_volume_ml`` are noise and dropped unreported.
3. A candidate is a lesion only if it stands out from where it lies (every rejection is
   reported with its reason in ``segmentation.json``):

   - *organ*: connected regions of SUV >= ``organ_fraction`` x threshold larger than
     ``max_volume_ml`` are organ-sized uptake (liver, kidneys, heart, bladder, spleen,
     marrow); a candidate larger than ``max_volume_ml`` or holding a quarter or more of
     such a region must stand out from its own median SUV (see *local contrast*);
   - *prominence*: the connected region at or above SUVmax / ``organ_contrast`` around
     its maximum must not exceed ``max_volume_ml`` (a lesion stands out from its
     surroundings by ``organ_contrast``; noise and texture of a hot organ do not);
   - *urine* (CT-guided): if 60 % or more of the hot core (SUV >= 70 % of the SUVmax,
     at least 2 mL) is water-dense on the CT (-20..20 HU), it is excreted tracer in the
     bladder, ureter or renal pelvis;
   - *local contrast*: SUVmax >= ``organ_contrast`` x the median SUV in a 6-16 mm shell
     around the candidate (inside an organ-sized region: the region's voxels only; for an
     organ-sized candidate at least its own median).

   A lesion inside an organ whose own uptake exceeds the threshold shares the organ's
   watershed basin; once it passes these tests its region is trimmed to the part above
   ``organ_contrast`` x the local background. An optional exclusion mask (for example
   TotalSegmentator organs) removes voxels before all of this.

Each remaining piece is a lesion's *region* (label value = lesion number); its VOI is
the isocontour inside that region (see :func:`dualpet.metrics.isocontour_voi`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from dualpet.anatomy import FAT_HU, ORGAN_CLASSES, WATER_HU
from dualpet.geometry import (
    apply_affine,
    nearest_on_grid,
    values_in_ball,
    voxel_spacing,
    voxel_volume_ml,
    world_to_voxel,
)

_STRUCTURE = np.ones((3, 3, 3), dtype=bool)
#: A candidate holding at least this share of an organ-sized uptake region is that organ.
ORGAN_SHARE = 0.25
#: Water density on CT (HU): urine in the bladder, ureters and renal pelvis.
URINE_HU = WATER_HU
#: The hot core the urine rule looks at: SUV at or above this fraction of the SUVmax.
URINE_CORE = 0.7
#: Smallest hot core (mL) the urine rule judges (smaller cores are mostly partial volume).
URINE_MIN_ML = 2.0
#: Share of the hot core that must be water-dense for the urine rule.
URINE_SHARE = 0.6
#: Uptake in fat: a candidate whose hot core (as for the urine rule) is fat-dense on CT
#: (FAT_HU) for at least this share is active brown fat (FDG, domain notes: neck,
#: supraclavicular, axillary, paravertebral); a tumour or a node is soft tissue on CT, and
#: a node smaller than the PET's resolution still holds the core's central voxels.
FAT_SHARE = 0.5
#: Lung and air on CT (HU below): fat is only fat away from them (see :func:`_fat_ct`).
LUNG_EDGE_HU = -400.0
#: The vertebral marrow is read as a reader reads it: a focus in the organ map's vertebrae
#: is a lesion only if it stands MARROW_CONTRAST times above the marrow of the neighbouring
#: vertebrae: the MARROW_PERCENTILE of the per-plane maxima of the column within
#: MARROW_REACH_MM (about three vertebrae each way), the candidate's own planes left out.
#: The bodies' marrow between cold discs is otherwise a row of foci (on generator revision
#: 9, 22 of the 48 false positives of the seed-99 demo cohort, both tracers). Those stood
#: 0.9-1.23 x that level (the level is itself a maximum, the top of the marrow's noise);
#: a small vertebral metastasis on Pentixafor's hot marrow 1.31 x.
MARROW_CONTRAST = 1.25
MARROW_REACH_MM, MARROW_PERCENTILE, MARROW_MIN_PLANES = 75.0, 75.0, 5
#: Bowel loops without gas are not all in the organ map (packed loops are no tubes on the
#: CT): with the group 'bowel', a candidate in the abdomen below the lungs, more than
#: BOWEL_CLEAR_MM from the aorta, the vertebrae and the kidneys (where nodes lie
#: along the vessels), whose extent is a segment (its longest axis at least BOWEL_ELONGATION
#: x its shortest, and BOWEL_SEGMENT_MM long: uptake that follows a loop) is bowel. On
#: generator revision 9 the lesions' extents were 1.0-1.6 : 1, the avid loops 2.0-4.0 : 1.
BOWEL_ELONGATION, BOWEL_SEGMENT_MM, BOWEL_CLEAR_MM = 2.0, 20.0, 20.0


#: Physiological uptake rejected with the organ map (:mod:`dualpet.anatomy`): group name ->
#: organs. A candidate is that group's uptake if half or more of its hot core (SUV >= 70 %
#: of its SUVmax) lies in those organs (grown by one PET voxel: the PET's blur).
PHYSIOLOGICAL = {
    "urinary": ("kidney_right", "kidney_left", "urinary_bladder"),
    "heart": ("heart",),
    "brain": ("brain",),
    "bowel": ("bowel",),
    "spleen": ("spleen",),
    "liver": ("liver",),
    "bloodpool": ("aorta",),
    "marrow": ("vertebrae",),
}
#: Groups rejected for a tracer the config does not list (``detection.physiological``):
#: excretion, brain, the blood in the aorta's lumen, bowel (readers call uptake following
#: bowel loops on the CT physiological for nearly every tracer) and the vertebral marrow
#: (read against the neighbouring vertebrae, see :func:`_vertebral_marrow`).
DEFAULT_PHYSIOLOGICAL = ("urinary", "brain", "bloodpool", "bowel", "marrow")
ORGAN_SHARE_OF_CORE = 0.5

#: Methods that threshold the image; ``local`` compares each spot with its own
#: surroundings and the image noise; the others take the lesions from the reader.
THRESHOLD_METHODS = ("background", "fixed", "percist")
LOCAL_METHOD = "local"
READER_METHODS = ("seeds", "masks")


def detection_threshold(method, background_suvmean, liver=None):
    """SUV threshold from the configured method.

    Parameters
    ----------
    method : dict
        ``{"method": "fixed", "value": 3.0}``, ``{"method": "background", "factor": 2.0}``
        or ``{"method": "percist"}`` (1.5 x liver SUVmean + 2 x liver SD, PERCIST 1.0).
    background_suvmean : float
        Background SUVmean of the study (blood pool by default).
    liver : dict, optional
        Liver VOI statistics (``suvmean``, ``suvsd``), needed by ``percist``.
    """
    kind = method.get("method", "background")
    if kind == "fixed":
        return float(method["value"])
    if kind == "background":
        return float(method.get("factor", 2.0)) * float(background_suvmean)
    if kind == "percist":
        if liver is None:
            raise ValueError("the percist threshold needs the liver VOI (SUVmean and SD)")
        return 1.5 * float(liver["suvmean"]) + 2.0 * float(liver["suvsd"])
    raise ValueError(
        f"unknown detection method {kind!r} (expected one of {(LOCAL_METHOD,) + THRESHOLD_METHODS + READER_METHODS})"
    )


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


def _number(lesions, shape):
    """Label image and stable numbering (cranio-caudal, then by x) of detected lesions."""
    lesions.sort(key=lambda d: (-d["peak_lps"][2], d["peak_lps"][0]))
    labels = np.zeros(shape, dtype=np.int32)
    for new, les in enumerate(lesions, start=1):
        region = les.pop("_region")
        if isinstance(region, tuple):
            sl, region = region
            labels[sl][region & (labels[sl] == 0)] = new
        else:
            labels[region & (labels == 0)] = new
        les["label"] = new
    return labels


def lesions_from_seeds(suv, affine, seeds_lps, *, radius_mm=10.0, fraction=0.5, where=""):
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
        ball = _ball(suv.shape, ijk, radius_mm, spacing)
        ball[tuple(np.clip(np.rint(ijk).astype(int), 0, np.array(suv.shape) - 1))] = True  # never empty
        peak = np.unravel_index(int(np.argmax(np.where(ball, suv, -np.inf))), suv.shape)
        if taken[peak]:  # a second click on a lesion already seeded
            owner = next(les for les in lesions if les["_region"][peak])
            owner.setdefault("merged_seeds", []).append(n)
            continue
        near = _ball(suv.shape, peak, radius_mm, spacing)
        near[peak] = True
        comps, _ = ndimage.label(near & (suv >= fraction * suv[peak]) & ~taken, structure=_STRUCTURE)
        region = comps == comps[peak]
        taken |= region
        lesions.append(_reader_lesion(suv, affine, region, "seed", seed=n, seed_lps=[float(v) for v in seed]))
    return lesions


def _ball(shape, centre_ijk, radius_mm, spacing):
    """Voxels whose centres lie within ``radius_mm`` of a (fractional) voxel position."""
    centre = np.asarray(centre_ijk, dtype=float)
    half = np.ceil(radius_mm / spacing).astype(int) + 1
    lo = np.maximum(np.floor(centre).astype(int) - half, 0)
    hi = np.minimum(np.ceil(centre).astype(int) + half + 1, shape)
    idx = np.indices(tuple(hi - lo), dtype=np.float32)
    d2 = sum(((idx[a] + lo[a] - centre[a]) * spacing[a]) ** 2 for a in range(3))
    out = np.zeros(shape, dtype=bool)
    out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = d2 <= radius_mm**2
    return out


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
        comps, n = ndimage.label(label_image != 0, structure=_STRUCTURE)
        regions = [(f"component {i}", comps == i) for i in range(1, n + 1)]
    else:
        regions = [(f"label {v}", label_image == v) for v in values if v in on_grid]
    return [_reader_lesion(suv, affine, r, "mask", mask_part=name) for name, r in regions], dropped


def detect_lesions(
    suv,
    affine,
    threshold,
    *,
    min_volume_ml=0.1,
    max_volume_ml=60.0,
    organ_fraction=0.6,
    organ_contrast=1.5,
    split_h=None,
    exclusion=None,
    shell_mm=(6.0, 16.0),
    hu=None,
    end_planes_mm=12.0,
    organ_map=None,
    physiological=(),
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
        Organ-sized regions are found at ``organ_fraction`` x threshold; a lesion stands
        out from its surroundings by ``organ_contrast`` (see the module docstring).
    split_h : float, optional
        Minimum prominence (SUV) of a maximum to seed its own lesion (default 25 % of the
        threshold).
    exclusion : ndarray of bool, optional
        Voxels that can never be lesions (physiological uptake masks).
    shell_mm : (float, float)
        Inner and outer distance (mm) of the local-background shell.
    hu : ndarray, optional
        CT numbers on the PET grid (:func:`ct_on_pet_grid`) for the urine rule.
    end_planes_mm : float
        A candidate lying entirely within this distance of either end of the PET's axial
        field of view is noise: the end planes have the scanner's lowest sensitivity.
    organ_map : ndarray of uint8, optional
        The study's organ map on the PET grid (TotalSegmentator v2 numbers).
    physiological : sequence of str
        Groups of :data:`PHYSIOLOGICAL` whose uptake is rejected with the organ map.

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
    markers, _ = ndimage.label(_h_maxima_in(mask, smooth, h), structure=_STRUCTURE)
    pieces = watershed(-smooth, markers, mask=mask, connectivity=3)

    spacing = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)
    n_end = int(np.ceil(end_planes_mm / spacing[2] - 1e-9)) if end_planes_mm > 0 else 0
    plane_noise = plane_noise_profile(suv)
    masks = physiological_masks(organ_map, physiological) if organ_map is not None else {}
    column = marrow_profile(suv, masks["marrow"][1]) if "marrow" in masks else None
    loops = bowel_zone(organ_map, affine) if "bowel" in masks else None
    lesions, rejected = [], []
    for lab, sl in enumerate(ndimage.find_objects(pieces), start=1):
        if sl is None:
            continue
        region = pieces[sl] == lab
        vals = np.where(region, suv[sl], -np.inf)
        local_peak = np.unravel_index(int(np.argmax(vals)), region.shape)
        peak = tuple(int(p + s.start) for p, s in zip(local_peak, sl))
        cand = {"suvmax": float(suv[peak]), "peak_ijk": list(peak), "peak_lps": apply_affine(affine, peak).tolist()}
        volume = float(region.sum() * vox_ml)
        cand["volume_ml_at_threshold"] = volume
        if volume < min_volume_ml:  # noise-sized pieces are dropped without a report
            continue
        organ = int(organ_comps[peak])
        in_organ = organ in organ_median
        local = _local_background(suv, pieces, lab, sl, spacing, shell_mm, organ_comps if in_organ else None, organ)
        # An organ-sized piece (or most of an organ-sized region): its bulk is the tissue
        # the candidate has to stand out from.
        organ_like = volume > max_volume_ml or (in_organ and volume >= ORGAN_SHARE * org_sizes[organ])
        if organ_like:
            local = max(local, float(np.median(suv[sl][region])))
        cand["local_background_suv"] = local
        end = bool(n_end and (sl[2].stop <= n_end or sl[2].start >= suv.shape[2] - n_end))
        reason = _shared_rejection(
            suv,
            sl,
            region,
            peak,
            cand["suvmax"],
            end_planes=end,
            end_planes_mm=end_planes_mm,
            n_end=n_end,
            masks=masks,
            contrast=organ_contrast,
            max_volume_ml=max_volume_ml,
            spacing=spacing,
            vox_ml=vox_ml,
            hu=hu,
            marrow=None if column is None else (cand["suvmax"], column),
            bowel=loops,
        )
        if (
            reason is None
            and cand["suvmax"] < (contrast := 1.0 + (organ_contrast - 1.0) * max(1.0, plane_noise[peak[2]])) * local
        ):
            where = "an organ-sized uptake region" if organ_like or in_organ else "its surroundings"
            noisier = (
                f" (its plane {plane_noise[peak[2]]:.1f}x noisier than the volume's middle)"
                if contrast > organ_contrast
                else ""
            )
            reason = f"physiological or noise: SUVmax below {contrast:.2f}x the local background {local:.2f} of {where}{noisier}"
        elif reason is None and organ_like:
            # A lesion inside an organ whose own uptake exceeds the threshold shares the
            # organ's watershed basin: keep only its part above the contrast level.
            region = _trim_to_contrast(suv[sl], region, local_peak, organ_contrast * local)
            volume = float(region.sum() * vox_ml)
            cand["volume_ml_trimmed"] = volume
            if volume > max_volume_ml:
                reason = f"larger than max_volume_ml={max_volume_ml} also above {organ_contrast}x its local background"
        if reason:
            rejected.append({**cand, "reason": reason})
        else:
            lesions.append({**cand, "_region": (sl, region)})
    labels = _number(lesions, suv.shape)
    info = {
        "threshold_suv": float(threshold),
        "min_volume_ml": min_volume_ml,
        "max_volume_ml": max_volume_ml,
        "organ_fraction": organ_fraction,
        "organ_contrast": organ_contrast,
        "end_planes_mm": end_planes_mm,
        "split_h_suv": h,
        "lesions": lesions,
        "organs": organs,
        "rejected": rejected,
    }
    return labels, info


#: Planes whose noise is estimated: voxels above this fraction of the median SUV of the
#: positive voxels (the body), in planes holding at least MIN_PLANE_VOXELS of them.
NOISE_BODY_FRACTION, MIN_PLANE_VOXELS = 0.5, 50


def plane_noise_profile(suv):
    """Noise of each axial plane relative to the volume's middle, from the image itself.

    PET noise grows towards the ends of the axial field of view (falling sensitivity) and
    with activity (as its square root). Per plane, the robust SD (1.4826 x MAD) of the
    high-pass residual (image minus a 1-voxel Gaussian smoothing), divided by the square
    root of the smoothed activity, inside the body; divided by the median of the central
    half of the planes. Planes too empty to estimate get 1.
    """
    suv = suv.astype(np.float32)
    smooth = ndimage.gaussian_filter(suv, 1.0)
    positive = suv[suv > 0]
    if positive.size == 0:
        return np.ones(suv.shape[2])
    body = smooth > NOISE_BODY_FRACTION * float(np.median(positive))
    z = (suv - smooth) / np.sqrt(np.maximum(smooth, 1e-3))
    sd = np.full(suv.shape[2], np.nan)
    for k in range(suv.shape[2]):
        vals = z[:, :, k][body[:, :, k]]
        if vals.size >= MIN_PLANE_VOXELS:
            sd[k] = 1.4826 * np.median(np.abs(vals - np.median(vals)))
    n = suv.shape[2]
    central = sd[n // 4 : n - n // 4]
    ref = np.nanmedian(central) if np.isfinite(central).any() else np.nan
    if not np.isfinite(ref) or ref <= 0:
        return np.ones(n)
    return np.where(np.isfinite(sd), sd / ref, 1.0)


def _h_maxima_in(mask, values, h):
    """h-maxima of ``values`` inside ``mask``, computed per connected component of the mask
    on its bounding box (the same result as on the whole image with zeros outside the
    mask, where components cannot interact; far cheaper, as most voxels lie outside)."""
    comps, _ = ndimage.label(mask, structure=_STRUCTURE)
    out = np.zeros(mask.shape, dtype=bool)
    for lab, sl in enumerate(ndimage.find_objects(comps), start=1):
        if sl is None:
            continue
        box = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(sl, mask.shape))
        own = comps[box] == lab
        out[box] |= h_maxima(np.where(own, values[box], 0.0), h).astype(bool) & own
    return out


def _local_background(suv, pieces, lab, sl, spacing, shell_mm, organ_comps=None, organ=0):
    """Median SUV in a shell ``shell_mm`` (inner, outer distance in mm) around a candidate:
    the tissue it has to stand out from. For a candidate inside an organ-sized uptake
    region only the region's voxels count (the organ, not the fat around it)."""
    inner, outer = shell_mm
    pad = np.ceil(outer / spacing).astype(int) + 1
    box = tuple(slice(max(s.start - p, 0), min(s.stop + p, n)) for s, p, n in zip(sl, pad, suv.shape))
    own = pieces[box] == lab
    dist = ndimage.distance_transform_edt(~own, sampling=spacing)
    shell = (dist > inner) & (dist <= outer)
    if organ_comps is not None and (shell & (organ_comps[box] == organ)).any():
        shell &= organ_comps[box] == organ
    vals = suv[box][shell]
    return float(np.median(vals)) if vals.size else 0.0


def _part_of_larger_uptake(suv, peak, level, max_volume_ml, spacing, vox_ml):
    """Whether the connected region at or above ``level`` around ``peak`` exceeds
    ``max_volume_ml``: the hot spot does not stand out from an organ-sized structure.
    Flood fill in a box around the peak; reaching the box edge counts as larger. The fill
    uses face connectivity: the bulk of an organ above the level is one solid region, while
    the noise of a tissue whose mean lies below the level (marrow around a bone
    metastasis) has its above-level voxels too sparse to percolate through face contacts."""
    half = np.ceil((3.0 * max_volume_ml * 1000.0 / (4.0 * np.pi)) ** (1 / 3) * 2.0 / spacing).astype(int)
    box = tuple(slice(max(p - h, 0), min(p + h + 1, n)) for p, h, n in zip(peak, half, suv.shape))
    comps, _ = ndimage.label(suv[box] >= level)
    region = comps == comps[tuple(p - b.start for p, b in zip(peak, box))]
    if region.sum() * vox_ml > max_volume_ml:
        return True
    edges = [(b.start > 0, b.stop < n) for b, n in zip(box, suv.shape)]
    for axis, (lo, hi) in enumerate(edges):
        if (lo and region.take(0, axis=axis).any()) or (hi and region.take(-1, axis=axis).any()):
            return True
    return False


def physiological_masks(organ_map, groups):
    """Per group of ``groups``: (its organs in the organ map on the PET grid grown by one
    voxel, the PET's blur; the organs themselves). The urinary group also holds each
    kidney's per-slice convex hull: the renal sinus with the pelvis (excreted tracer) lies
    in the kidney's hilum, which an organ map of the parenchyma leaves out."""
    from skimage.morphology import convex_hull_image

    out = {}
    for group in groups:
        mask = np.isin(organ_map, [v for name in PHYSIOLOGICAL[group] for v in ORGAN_CLASSES[name]])
        if group == "urinary":
            for name in ("kidney_right", "kidney_left"):
                kidney = np.isin(organ_map, ORGAN_CLASSES[name])
                for k in np.flatnonzero(kidney.any(axis=(0, 1))):
                    if kidney[:, :, k].sum() >= 3:
                        mask[:, :, k] |= convex_hull_image(kidney[:, :, k])
        out[group] = (ndimage.binary_dilation(mask, structure=_STRUCTURE), mask)
    return out


#: Uptake near an organ is that organ's only where it looks like it: a candidate whose hot
#: core lies mostly outside the organ proper (less than FOCAL_INNER_SHARE in it: in the
#: blur band at its border), that is smaller than the organ there and stands FOCAL_OVER_ORGAN
#: times above the organ's own level (the FOCAL_LEVEL_PERCENTILE of its SUV within
#: FOCAL_REACH_MM, the candidate left out) is a focus beside the organ (a hilar tumour at
#: the heart, a node at the aorta, an adrenal lesion at the kidney): a lesion candidate.
FOCAL_INNER_SHARE = 0.5
FOCAL_OVER_ORGAN = 2.0
FOCAL_LEVEL_PERCENTILE = 75.0
FOCAL_REACH_MM = 40.0


def _physiological_organ(suv, sl, region, suvmax, masks, spacing):
    """The first group of ``masks`` (group -> (grown, organ) masks on the PET grid) holding
    ORGAN_SHARE_OF_CORE or more of a candidate's hot core (``region`` in the box ``sl``,
    its voxels at or above URINE_CORE x SUVmax), unless the core is a focus beside the organ
    (FOCAL_INNER_SHARE, FOCAL_OVER_ORGAN): (group, None) or (None, note on the focus kept
    beside an organ) or (None, None)."""
    core = region & (suv[sl] >= URINE_CORE * suvmax)
    if not core.any():
        return None, None
    note = None
    for group, (grown, organ) in masks.items():
        if group == "marrow" or grown[sl][core].mean() < ORGAN_SHARE_OF_CORE:  # marrow: by level
            continue
        if organ[sl][core].mean() >= FOCAL_INNER_SHARE:
            return group, None
        # the organ's own level around the candidate (the candidate and its blur left out)
        reach = np.maximum(np.rint(FOCAL_REACH_MM / np.asarray(spacing)).astype(int), 1)
        big = tuple(slice(max(s.start - r, 0), s.stop + r) for s, r in zip(sl, reach))
        own = organ[big].copy()
        inner = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(sl, big))
        cut = np.zeros(own.shape, bool)
        cut[inner] = ndimage.binary_dilation(region, structure=_STRUCTURE, iterations=2)
        own &= ~cut
        if own.sum() <= core.sum():  # no more organ than the candidate: it fills the organ
            return group, None
        level = float(np.percentile(suv[big][own], FOCAL_LEVEL_PERCENTILE))
        if suvmax < FOCAL_OVER_ORGAN * level:
            return group, None
        note = (
            f"kept beside the organ map's {', '.join(PHYSIOLOGICAL[group])}: a focus at its border "
            f"(SUVmax {suvmax:.1f}, {suvmax / max(level, 1e-6):.1f} x the organ's level {level:.2f})"
        )
    return None, note


def marrow_profile(image, vertebrae):
    """Per PET plane, the highest value of ``image`` in ``vertebrae`` (the organ map's
    column on the PET grid): the marrow of the vertebral bodies; NaN on planes without."""
    prof = np.where(vertebrae, image, -np.inf).max(axis=(0, 1)).astype(float)
    prof[~np.isfinite(prof)] = np.nan
    return prof


def _vertebral_marrow(sl, region, core, top, grown, profile, spacing):
    """Why a candidate is vertebral marrow, or None: ORGAN_SHARE_OF_CORE or more of its hot
    ``core`` lies in the column (``grown``: grown by the PET's blur) and ``top`` (its peak,
    in the image ``profile`` was taken from) is below MARROW_CONTRAST x the marrow of the
    neighbouring vertebrae (MARROW_PERCENTILE of ``profile`` within MARROW_REACH_MM of the
    core, the candidate's own planes left out)."""
    if grown[sl][core].mean() < ORGAN_SHARE_OF_CORE:
        return None
    k = np.arange(len(profile))
    own = np.flatnonzero(region.any(axis=(0, 1))) + sl[2].start
    centre = float(np.mean(np.flatnonzero(core.any(axis=(0, 1))) + sl[2].start))
    near = (np.abs(k - centre) * spacing[2] <= MARROW_REACH_MM) & ~np.isin(k, own) & np.isfinite(profile)
    if near.sum() < MARROW_MIN_PLANES:
        return None
    level = float(np.percentile(profile[near], MARROW_PERCENTILE))
    if top >= MARROW_CONTRAST * level:
        return None
    return (
        f"physiological: vertebral marrow (its peak {top:.2f} is below {MARROW_CONTRAST:g} x the marrow of the "
        f"neighbouring vertebrae, {level:.2f})"
    )


def bowel_zone(organ_map, affine):
    """Where an elongated candidate is bowel (see BOWEL_ELONGATION): the planes below the
    organ map's lungs (all planes without lungs in view), clear of the aorta, vertebrae
    and kidneys by BOWEL_CLEAR_MM and outside the solid organs, on the PET grid."""
    spacing = voxel_spacing(affine)
    lungs = np.isin(organ_map, ORGAN_CLASSES["lung_left"] + ORGAN_CLASSES["lung_right"])
    zone = np.ones(organ_map.shape, dtype=bool)
    if lungs.any():
        planes = np.flatnonzero(lungs.any(axis=(0, 1)))
        z = apply_affine(affine, np.c_[np.zeros((organ_map.shape[2], 2)), np.arange(organ_map.shape[2])])[:, 2]
        zone[:, :, z >= z[planes].min()] = False
    near = np.isin(
        organ_map, [v for n in ("aorta", "vertebrae", "kidney_left", "kidney_right") for v in ORGAN_CLASSES[n]]
    )
    if near.any():
        zone &= ndimage.distance_transform_edt(~near, sampling=spacing) > BOWEL_CLEAR_MM
    zone &= ~np.isin(organ_map, [v for n in ("liver", "spleen", "urinary_bladder") for v in ORGAN_CLASSES[n]])
    return zone


def _bowel_segment(sl, region, zone, spacing):
    """Why a candidate is a bowel segment (see BOWEL_ELONGATION), or None."""
    if zone is None or region.sum() < 4 or zone[sl][region].mean() < 0.5:
        return None
    pts = np.argwhere(region) * np.asarray(spacing)
    w = np.clip(np.linalg.eigvalsh(np.cov(pts.T)), 1e-6, None)
    ratio, length = float(np.sqrt(w[-1] / w[0])), float(4.0 * np.sqrt(w[-1]))
    if ratio < BOWEL_ELONGATION or length < BOWEL_SEGMENT_MM:
        return None
    return (
        f"physiological: bowel uptake (a segment {length:.0f} mm long, {ratio:.1f} : 1, in the abdomen below "
        f"the lungs and {BOWEL_CLEAR_MM:g} mm or more from the aorta, spine and kidneys)"
    )


def _shared_rejection(
    suv,
    sl,
    region,
    peak,
    suvmax,
    *,
    end_planes,
    end_planes_mm,
    n_end,
    masks,
    contrast,
    max_volume_ml,
    spacing,
    vox_ml,
    hu,
    marrow=None,
    bowel=None,
):
    """The rules every automatic method applies to a candidate (``sl``: its box,
    ``region``: its voxels in the box): the reason it is not a lesion, or None.
    ``marrow``: (the candidate's peak, the column's :func:`marrow_profile`), both in the
    image the method compares (the smoothed PET for ``local``), with the group 'marrow';
    ``bowel``: :func:`bowel_zone`, with the group 'bowel'."""
    if end_planes:
        return (
            f"noise: lies only in the PET's first or last {n_end} planes ({end_planes_mm:g} mm of the "
            "axial field of view, where sensitivity is lowest)"
        )
    if masks and (group := _physiological_organ(suv, sl, region, suvmax, masks, spacing)[0]):
        return (
            f"physiological: {group} uptake ({100 * ORGAN_SHARE_OF_CORE:.0f} % or more of the hot core lies in "
            f"the organ map's {', '.join(PHYSIOLOGICAL[group])}, and fills it)"
        )
    core = region & (suv[sl] >= URINE_CORE * suvmax)
    if marrow is not None and "marrow" in masks and core.any():
        why = _vertebral_marrow(sl, region, core, marrow[0], masks["marrow"][0], marrow[1], spacing)
        if why:
            return why
    if why := _bowel_segment(sl, region, bowel, spacing):
        return why
    if _part_of_larger_uptake(suv, peak, suvmax / contrast, max_volume_ml, spacing, vox_ml):
        return (
            f"physiological: part of an uptake region larger than max_volume_ml={max_volume_ml} "
            f"above 1/{contrast} of its SUVmax"
        )
    water = (hu[sl] >= URINE_HU[0]) & (hu[sl] <= URINE_HU[1]) if hu is not None else None
    if water is not None and (urine := _share_of_core(water, core, URINE_SHARE, URINE_MIN_ML / vox_ml)):
        return (
            f"physiological: urinary activity ({100 * urine:.0f} % of the hot core is water-dense on CT, "
            f"{URINE_HU[0]:g}..{URINE_HU[1]:g} HU)"
        )
    if hu is not None and (fat := _share_of_core(_fat_ct(hu, sl), core, FAT_SHARE, 1)):
        return (
            f"physiological: uptake in fat, brown fat ({100 * fat:.0f} % of the hot core is fat on CT, "
            f"{FAT_HU[0]:g}..{FAT_HU[1]:g} HU; a tumour or node is soft tissue)"
        )
    return None


def _fat_ct(hu, sl):
    """Where the CT in the box ``sl`` is fat (FAT_HU) more than one PET voxel from lung or
    air (LUNG_EDGE_HU): a lung nodule's partial-volume edge passes through fat's range."""
    box = hu[sl]
    air = ndimage.binary_dilation(box < LUNG_EDGE_HU, structure=_STRUCTURE)
    return (box >= FAT_HU[0]) & (box <= FAT_HU[1]) & ~air


def _share_of_core(dense, core, share, min_voxels):
    """Share of a candidate's hot ``core`` (its voxels at or above URINE_CORE x its SUVmax)
    that is ``dense`` (a CT class, box-local bool), if at least ``share`` and the core holds
    ``min_voxels``, else None. The core is kept well inside the hot region, where the CT is
    not a partial-volume mixture of the lesion and the tissue around it."""
    if core.sum() < max(min_voxels, 1):
        return None
    got = float(np.mean(dense[core]))
    return got if got >= share else None


def ct_on_pet_grid(hu, ct_affine, shape, pet_affine, average=False):
    """CT numbers at the PET voxel centres (nearest CT voxel through world coordinates;
    -1000 HU outside the CT), so CT rules can be applied voxel by voxel on the PET grid.
    With ``average``, each is the mean of the CT voxels a PET voxel covers (a box of the
    PET voxel's size around the nearest one): the tissue mixture the PET voxel sees, with
    the CT's noise averaged out."""
    hu = np.asarray(hu, dtype=np.float32)
    if average:
        size = np.maximum(np.rint(voxel_spacing(pet_affine) / voxel_spacing(ct_affine)).astype(int), 1)
        if (size > 1).any():
            hu = ndimage.uniform_filter(hu, size, mode="nearest")
    return nearest_on_grid(hu, ct_affine, shape, pet_affine, fill=-1000.0)


def _trim_to_contrast(values, region, peak, level):
    """The part of ``region`` at or above ``level`` that is connected to ``peak``."""
    comps, _ = ndimage.label(region & (values >= level), structure=_STRUCTURE)
    return comps == comps[peak] if comps[peak] else region & False


def read_label_image(path, what="mask"):
    """A NIfTI label image as (int32 array, voxel->LPS affine); a clear error if unusable."""
    import nibabel as nib

    from dualpet.errors import DualpetInputError, redact_paths
    from dualpet.geometry import lps_affine

    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise DualpetInputError(f"{what} (studies sheet): not a readable NIfTI image ({redact_paths(exc)})") from exc
    if data.ndim != 3:
        raise DualpetInputError(f"{what} (studies sheet): expected a 3-D label image, got shape {data.shape}")
    return np.rint(data).astype(np.int32), lps_affine(img.affine)


def labels_on_grid(path, shape, affine_lps, what="mask"):
    """A NIfTI label image (any grid) resampled onto a grid by nearest neighbour through
    world coordinates: int32 array of ``shape``, 0 outside the label image."""
    return nearest_on_grid(*read_label_image(path, what), shape, affine_lps)


def mask_on_grid(mask_path, labels, shape, affine_lps):
    """Boolean mask of the selected ``labels`` (None or empty: every non-zero label) of a
    NIfTI label image on a grid (see :func:`labels_on_grid`)."""
    data = labels_on_grid(mask_path, shape, affine_lps, "exclusion mask")
    return np.isin(data, list(labels)) if labels else data != 0


def per_tracer(value, tracer):
    """A setting given as one number or per tracer (``{tracer: number}``; a tracer not
    listed gets ``default`` if given, else 0.1)."""
    if isinstance(value, dict):
        return float(value.get(tracer, value.get("default", 0.1)))
    return float(value)


def _exclusion(exclusion_mask, detection, tracer, shape, pet_affine):
    """The sheet's exclusion mask on the PET grid (or None) and its record."""
    if not exclusion_mask:
        return None, {"provided": False}
    chosen = (detection.get("exclusion_labels") or {}).get(tracer) or None
    exclusion = mask_on_grid(exclusion_mask, chosen, shape, pet_affine)
    return exclusion, {"provided": True, "labels": chosen or "all non-zero", "voxels": int(exclusion.sum())}


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
    background_mask=None,
    background_png=None,
    lesion_mask=None,
    seeds=None,
    anatomy=None,
    review=None,
    pet_dicom=None,
):
    """Background VOI + lesion detection for one study (files in, files out).

    Parameters
    ----------
    detection : dict
        ``method`` ('local', 'background', 'fixed', 'percist', 'seeds' or 'masks'), ``factor`` /
        ``value``, ``min_volume_ml`` (a number or per tracer), ``max_volume_ml``,
        ``organ_fraction``, ``organ_contrast``, ``contrast_to_noise``, ``smooth_fwhm_mm``,
        ``seed_radius_mm``, ``exclusion_labels``.
    background : dict, optional
        ``method`` ('bloodpool' or 'liver'; see :mod:`dualpet.background`); its
        ``offset_mm`` is the anatomy stage's (the aorta search of the organ map).
    background_at : (x, y, z), optional
        VOI centre (this study's LPS mm) given in the studies sheet: no search.
    background_mask : path, optional
        NIfTI mask of the background region (any grid; non-zero voxels) from the sheet.
    background_png : path, optional
        QC picture of the background VOI.
    exclusion_mask : path, optional
        NIfTI label image of physiological uptake; ``detection["exclusion_labels"][tracer]``
        selects its labels (default: every non-zero label).
    lesion_mask : path, optional
        NIfTI label image of the reader's lesions (method 'masks').
    seeds : list of (x, y, z), optional
        The reader's lesion seeds in this study's LPS mm (method 'seeds').
    anatomy : path, optional
        The study's organ label map on its CT grid (``anatomy.nii.gz``): background
        regions and physiological uptake come from it (default: made from the CT by
        :func:`dualpet.anatomy.segment_ct`).
    review : list of dict, optional
        The reader's decisions on this study (``decision``, ``x``, ``y``, ``z`` in its LPS
        mm, ``reader``, ``note``), applied after detection (:mod:`dualpet.review`).
    """
    import nibabel as nib

    from dualpet.background import BackgroundNotFound, background_from_anatomy, measure_at, measure_mask, no_background
    from dualpet.errors import DualpetInputError
    from dualpet.geometry import lps_affine
    from dualpet.interchange import write_segmentation
    from dualpet.nifti import nifti_image, save_nifti

    where = f"patient {patient}, {tracer}"
    ct = nib.load(str(ct_path))
    pet = nib.load(str(pet_path))
    suv = np.asarray(pet.dataobj, dtype=np.float32)
    hu_ct = np.asarray(ct.dataobj, dtype=np.float32)
    ct_affine, pet_affine = lps_affine(ct.affine), lps_affine(pet.affine)
    if anatomy is None:  # library use: the organ map from the CT's classical rules
        from dualpet.anatomy import segment_ct

        organ_ct = segment_ct(hu_ct, ct_affine)[0]
    else:
        organ_ct, organ_affine = read_label_image(anatomy, "organ map")
        if organ_ct.shape != hu_ct.shape or not np.allclose(organ_affine, ct_affine, atol=1e-3):
            raise DualpetInputError(f"{where}: the organ map does not lie on the study's CT grid")
    method = (background or {}).get("method", "bloodpool")
    bg_voi = None
    if background_mask:
        bg_voi = labels_on_grid(background_mask, suv.shape, pet_affine, "background mask") != 0
        bg = measure_mask(suv, pet_affine, bg_voi, where=f"{where}: background mask (studies sheet)")
    elif background_at is not None:
        bg = measure_at(suv, pet_affine, background_at, method)
    else:
        try:
            bg = background_from_anatomy(organ_ct, ct_affine, hu_ct, suv, pet_affine, method, where=where)
        except BackgroundNotFound as exc:  # a cropped image, no aorta or liver in view: TBR only is lost
            if detection.get("method", LOCAL_METHOD) == "background":
                raise DualpetInputError(
                    f"{exc}; detection method 'background' needs one (its threshold is a multiple of the background)"
                ) from None
            bg = no_background(exc.reason)
    if background_png:
        from dualpet.qc import background_figure

        background_figure(
            hu_ct,
            ct_affine,
            suv,
            pet_affine,
            bg,
            background_png,
            mask=bg_voi,
            title=f"patient {patient}, {tracer}: background VOI",
        )
    kind = detection.get("method", LOCAL_METHOD)
    if kind == "masks":
        if not lesion_mask:
            raise DualpetInputError(
                f"{where}: detection method 'masks' needs this study's lesion_mask in the studies sheet"
            )
        from dualpet.dicomseg import is_dicom_object, rtstruct_labels, seg_labels

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
    elif kind == "seeds":
        lesions = lesions_from_seeds(
            suv, pet_affine, seeds or [], radius_mm=float(detection.get("seed_radius_mm", 10.0)), where=where
        )
        info = {"threshold_suv": None, "seeds": len(seeds or [])}
    else:  # automatic detection: the CT, the organ map and the exclusion mask on the PET grid
        hu = ct_on_pet_grid(hu_ct, ct_affine, suv.shape, pet_affine)
        organ_map = nearest_on_grid(organ_ct.astype(np.uint8), ct_affine, suv.shape, pet_affine)
        groups = (detection.get("physiological") or {}).get(tracer, DEFAULT_PHYSIOLOGICAL)
        exclusion, excluded = _exclusion(exclusion_mask, detection, tracer, suv.shape, pet_affine)
        min_volume_ml = per_tracer(detection.get("min_volume_ml", 0.1), tracer)
        liver_voi = None
        if kind == LOCAL_METHOD:
            from dualpet.background import _liver_centres

            fwhm = float(detection.get("smooth_fwhm_mm", LOCAL_SMOOTH_FWHM_MM))
            smooth = ndimage.gaussian_filter(suv, smoothing_sigma(pet_affine, fwhm))
            noise = noise_model(smooth, pet_affine, _liver_centres(organ_ct, ct_affine)[0] or (), where=where)
            labels, info = detect_local(
                suv,
                pet_affine,
                noise,
                contrast=float(detection.get("organ_contrast", 1.5)),
                cnr=float(detection.get("contrast_to_noise", 5.0)),
                smooth_fwhm_mm=fwhm,
                smooth=smooth,
                min_volume_ml=min_volume_ml,
                max_volume_ml=float(detection.get("max_volume_ml", 60.0)),
                end_planes_mm=float(detection.get("end_planes_mm", 12.0)),
                exclusion=exclusion,
                hu=hu,
                hu_mean=ct_on_pet_grid(hu_ct, ct_affine, suv.shape, pet_affine, average=True),
                organ_map=organ_map,
                physiological=groups,
            )
        else:
            if kind == "percist":
                given_liver = bg["source"].startswith("liver") or (background_mask and method == "liver")
                liver_voi = (
                    bg
                    if given_liver
                    else background_from_anatomy(
                        organ_ct, ct_affine, hu_ct, suv, pet_affine, "liver", fallback=False, where=where
                    )
                )
            threshold = detection_threshold(detection, bg["suvmean"], liver_voi)
            keys = ("max_volume_ml", "organ_fraction", "organ_contrast", "end_planes_mm")
            labels, info = detect_lesions(
                suv,
                pet_affine,
                threshold,
                exclusion=exclusion,
                hu=hu,
                organ_map=organ_map,
                physiological=groups,
                min_volume_ml=min_volume_ml,
                **{k: detection[k] for k in keys if k in detection},
            )
        info["physiological"] = {"groups": list(groups), "organ_map": "anatomy.nii.gz"}
        info["exclusion_mask"] = excluded
        if liver_voi is not None:
            info["percist_liver"] = liver_voi
    if kind in READER_METHODS:
        for les in lesions:
            les["origin"] = f"reader-{les['source']}"
        labels = _number(lesions, suv.shape)
        info["lesions"] = lesions
    for les in info["lesions"]:
        les.setdefault("origin", "automatic")
    if review:
        from dualpet.review import apply_decisions

        labels, info["lesions"], info["rejected"], info["review"] = apply_decisions(
            suv,
            pet_affine,
            labels,
            info["lesions"],
            info.setdefault("rejected", []),
            review,
            seed_radius_mm=float(detection.get("seed_radius_mm", 10.0)),
            where=where,
        )
    save_nifti(labels_out, nifti_image(labels, pet_affine))
    write_segmentation(json_out, patient, tracer, bg, detection, info)
    return bg, info


# --- local-contrast detection (method 'local') -------------------------------------------

#: Smoothing before peak finding (Gaussian FWHM, mm): a matched filter for lesions of about
#: the scanner's resolution, which lowers voxel noise more than it lowers their peaks.
LOCAL_SMOOTH_FWHM_MM = 5.0
#: A maximum seeds its own candidate if it stands this many noise SDs above the saddle to
#: any higher maximum (h-maxima of the variance-stabilised image): noise bumps on a large
#: lesion's plateau stay one lesion, neighbouring lesions with a real dip between them two.
LOCAL_SPLIT_NOISE = 2.0
#: The lesion's extent: voxels of its basin connected to its peak at or above this fraction
#: of the way from the ring's level up to the (smoothed) peak.
LOCAL_EXTENT_FRACTION = 0.5
#: The shells (mm from the peak) of the first estimate of the surroundings, and the box
#: (mm, half side) within which a candidate's extent is grown; reaching its edge is
#: organ-sized.
LOCAL_FIRST_RINGS_MM, LOCAL_BOX_MM = ((10.0, 20.0), (20.0, 30.0), (30.0, 40.0)), 40.0
#: The noise model never goes below the noise at this fraction of the homogeneous
#: region's level (air, lung and fat have almost no counts but still have noise).
NOISE_FLOOR_FRACTION = 0.15
#: CT tissue classes (HU of the CT averaged over each PET voxel) that decide which of the
#: ring's voxels a candidate is compared with (see :func:`_ring_level`), the fewest host
#: voxels that count, and the ring's percentile taken as the surroundings' level (above
#: the median: the ring's border voxels mix the tissue with its neighbours).
CT_CLASSES_HU = (-400.0, -30.0, 150.0)  # lung and air | fat | soft tissue | bone (and enhanced blood)
RING_HOST_MIN = 10
RING_PERCENTILE = 75.0
#: In bone the CT class holds marrow (uptake) and cortex (almost none), mixed by the PET's
#: blur: the marrow's level is the upper part of the ring's bone voxels. A lesion in bone
#: is read against the 90th percentile (in thin bones, arms and ribs, the 75th lay below
#: the marrow, and marrow noise peaks passed: 8 of the 23 Pentixafor false positives of
#: the seed-99 demo cohort; with it 17 in all, no lesion lost).
BONE_CLASS, RING_PERCENTILE_BONE = 3, 90.0
#: A host too thin to have an inside one PET voxel from its border (a muscle band, a
#: bowel wall) is read at this percentile of its ring: its ring voxels are partly its
#: neighbours (fat) under the blur, and the lower ones would make any noise peak on it
#: stand out (most of the remaining false positives in muscle and fat).
RING_PERCENTILE_THIN = 90.0
#: Near misses (candidates reaching this share of the criteria) are reported, at most
#: MAX_NEAR_MISSES of them, highest contrast-to-noise first.
NEAR_MISS_SHARE, MAX_NEAR_MISSES = 0.75, 40


def below(value, limit, digits=1):
    """``value`` (below ``limit``) printed with the fewest decimals, from ``digits`` up to
    4, that print it below the limit: a refused 4.96 reads 4.96, not 5.0, against 'needs 5'."""
    for d in range(digits, 5):
        text = f"{value:.{d}f}"
        if float(text) < limit:
            return text
    return f"{value:.6g}"


def smoothing_sigma(affine, fwhm_mm=LOCAL_SMOOTH_FWHM_MM):
    """Per-axis Gaussian sigma (voxels) of a ``fwhm_mm`` smoothing on this grid."""
    return fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0))) / voxel_spacing(affine)


def _robust_sd(vals):
    return 1.4826 * float(np.median(np.abs(vals - np.median(vals))))


def noise_model(smooth, affine, centres=(), radius_mm=15.0, where=""):
    """The study's noise on the smoothed image: SD = ``a`` x sqrt(SUV) (counting statistics),
    with ``a`` measured in a homogeneous region.

    With ``centres`` (the liver background sphere's candidates: normal parenchyma), ``a``
    is the median over the spheres of their robust SD (1.4826 x MAD) of the smoothed SUV
    over the square root of their median: one 30 mm sphere holds only some 20 independent
    noise samples (the noise is correlated over several voxels) and misses the truth by up to
    30 %, the median of several does far less, and a lesion in one sphere does not count.
    Without, the body is tiled in cubes of about 2 cm and ``a`` is the median of the
    quarter of the tiles with the lowest normalised spread (the homogeneous ones).
    Returns ``{"a", "level", "plane", "source"}`` (``level``: the region's median SUV).
    """
    found = []
    for c in centres:
        vals = values_in_ball(smooth, affine, c, radius_mm)
        med = float(np.median(vals)) if vals.size else 0.0
        if vals.size >= 20 and med > 0:
            plane = int(np.clip(np.rint(world_to_voxel(affine, np.asarray(c, float))[2]), 0, smooth.shape[2] - 1))
            found.append((_robust_sd(vals) / np.sqrt(med), med, plane))
    if found:
        found.sort()
        a, level, plane = found[len(found) // 2]
        return {
            "a": float(a),
            "level": float(level),
            "plane": int(plane),
            "source": f"liver: median of {len(found)} sphere{'s' if len(found) > 1 else ''} of {radius_mm:g} mm radius",
        }
    from dualpet.errors import DualpetInputError

    positive = smooth[smooth > 0]
    if positive.size == 0:
        raise DualpetInputError(f"{where}: the PET holds no activity; no noise to estimate")
    body = smooth > NOISE_BODY_FRACTION * float(np.median(positive))
    step = np.maximum(np.rint(20.0 / voxel_spacing(affine)).astype(int), 3)
    n = np.asarray(smooth.shape) // step

    def tiles(volume):  # (tile, voxels of the tile), tiles in C order, the k index last
        crop = volume[: n[0] * step[0], : n[1] * step[1], : n[2] * step[2]]
        t = crop.reshape(n[0], step[0], n[1], step[1], n[2], step[2]).transpose(0, 2, 4, 1, 3, 5)
        return t.reshape(int(np.prod(n)), -1)

    inside = tiles(body).all(axis=1)
    if not inside.any():
        raise DualpetInputError(f"{where}: no region of the PET's body is large enough to estimate its noise from")
    vals = tiles(smooth)[inside]
    med = np.median(vals, axis=1)
    spread = 1.4826 * np.median(np.abs(vals - med[:, None]), axis=1) / np.sqrt(med)
    planes = (np.flatnonzero(inside) % n[2]) * step[2] + step[2] // 2
    order = np.lexsort((planes, med, spread))  # as sorting (spread, level, plane) tuples
    quarter = order[: max(1, len(order) // 4)]
    pick = quarter[len(quarter) // 2]
    return {
        "a": float(spread[pick]),
        "level": float(med[pick]),
        "plane": int(planes[pick]),
        "source": f"the most homogeneous quarter of {len(order)} 2 cm tiles of the body",
    }


def _ct_class(hu):
    """CT tissue class per PET voxel (0 lung and air, 1 fat, 2 soft tissue, 3 bone or
    enhanced blood: a bone lesion is read against marrow, a rib against the rib) from
    the CT averaged over each PET voxel (:func:`ct_on_pet_grid` with ``average``)."""
    return np.digitize(hu, CT_CLASSES_HU).astype(np.int8)


def _ring_level(values, own, spacing, ring_mm, exclude, ct_class=None):
    """The surroundings' level: RING_PERCENTILE of ``values`` in a shell ``ring_mm`` (inner,
    outer) around ``own`` (box-local bool), leaving out ``exclude`` (other candidates'
    extents) where enough voxels remain.

    With CT classes, the shell's voxels of the tissue the candidate grows in (its *host*:
    the connected part of its own CT class that holds it) are used when there are at least
    RING_HOST_MIN of them, and of those the ones one PET voxel inside the host's border if
    there are enough (the marrow inside a bone's cortex, an organ's inside, where the PET
    does not mix the host with its neighbours). A node in fat has no host beyond itself and
    is read against the fat; a noise peak on marrow, a rib, a bowel loop or a thin muscle is
    read against the rest of that structure, however little of the shell it fills."""
    dist = ndimage.distance_transform_edt(~own, sampling=spacing)
    ring = (dist > ring_mm[0]) & (dist <= ring_mm[1])
    if (ring & ~exclude).sum() >= 10:
        ring &= ~exclude
    percentile = RING_PERCENTILE
    if ct_class is not None:
        mine = ct_class[own]
        own_class = int(np.bincount(mine.ravel(), minlength=len(CT_CLASSES_HU) + 1).argmax())
        if own_class == BONE_CLASS:
            percentile = RING_PERCENTILE_BONE
        same = ct_class == own_class
        comps, _ = ndimage.label(same, structure=_STRUCTURE)
        held = comps[own & same]
        host = ring & (comps == np.bincount(held).argmax()) if held.size else ring & False
        core = host & ndimage.binary_erosion(same, _STRUCTURE)
        if core.sum() >= RING_HOST_MIN:
            ring = core
        elif host.sum() >= RING_HOST_MIN:
            ring = host
            percentile = max(percentile, RING_PERCENTILE_THIN)
    vals = values[ring]
    return float(np.percentile(vals, percentile)) if vals.size else 0.0


#: A candidate whose structure (its voxels above its half level, across basins) encloses,
#: slice by slice, a cold inside of at least this volume (mL) is the rim of a tumour with a
#: necrotic core: its surroundings lie outside the whole tumour. (The PET's blur fills a
#: 16 mm core to a third of the rim's level: such a core encloses about 1 mL below its half level.)
NECROTIC_CORE_ML = 0.5


def _rim_level(values, peak, level, spacing, shell_mm, exclude, ct_class, top):
    """The surroundings' level of a candidate on the rim of a tumour with a necrotic core:
    its structure (voxels connected to the peak at or above ``level``, across watershed
    basins) filled slice by slice, when that adds NECROTIC_CORE_ML or more; the ring is
    then taken around the whole tumour (the rest of the rim is the candidate itself, not
    its surroundings). Else ``top`` (nothing stands out)."""
    joined, _ = _extent(values, np.ones(values.shape, bool), peak, level)
    filled = np.zeros_like(joined)
    for k in np.flatnonzero(joined.any(axis=(0, 1))):
        filled[:, :, k] = ndimage.binary_fill_holes(joined[:, :, k])
    if (filled & ~joined).sum() * float(np.prod(spacing)) / 1000.0 < NECROTIC_CORE_ML:
        return top
    return _ring_level(values, filled, spacing, shell_mm, exclude, ct_class)


def _extent(values, basin, peak, level):
    """Voxels of ``basin`` connected to ``peak`` at or above ``level`` (box-local), and
    whether they reach the box's edge."""
    comps, _ = ndimage.label(basin & (values >= level), structure=_STRUCTURE)
    if not comps[peak]:  # the level lies above the peak: the candidate is just its peak
        region = np.zeros(values.shape, dtype=bool)
        region[peak] = True
        return region, False
    region = comps == comps[peak]
    edge = any(region.take(0, axis=a).any() or region.take(-1, axis=a).any() for a in range(3))
    return region, edge


def _resize(region, box, target):
    """``region`` (bool on ``box``) cut to the ``target`` box (both tuples of slices)."""
    out = np.zeros(tuple(t.stop - t.start for t in target), dtype=bool)
    src = tuple(slice(max(t.start, b.start), min(t.stop, b.stop)) for t, b in zip(target, box))
    if all(x.stop > x.start for x in src):
        out[tuple(slice(x.start - t.start, x.stop - t.start) for x, t in zip(src, target))] = region[
            tuple(slice(x.start - b.start, x.stop - b.start) for x, b in zip(src, box))
        ]
    return out


def _in_end_planes(region, z0, n_end, n_planes):
    """Whether a region (box-local, its box starting at plane ``z0``) lies entirely within
    the first or the last ``n_end`` planes of the field of view."""
    zs = np.flatnonzero(region.any(axis=(0, 1))) + z0
    return bool(zs.max() < n_end or zs.min() >= n_planes - n_end)


def detect_local(
    suv,
    affine,
    noise,
    *,
    contrast=1.5,
    cnr=5.0,
    min_volume_ml=0.1,
    max_volume_ml=60.0,
    shell_mm=(6.0, 16.0),
    smooth_fwhm_mm=LOCAL_SMOOTH_FWHM_MM,
    exclusion=None,
    hu=None,
    hu_mean=None,
    end_planes_mm=12.0,
    organ_map=None,
    physiological=(),
    smooth=None,
):
    """Lesions that stand out from their own surroundings by more than the image noise.

    1. The PET is smoothed (``smooth_fwhm_mm``) and variance-stabilised with the study's
       noise model (``noise``: :func:`noise_model`, SD = a x sqrt(SUV), times the axial
       profile of :func:`plane_noise_profile`), so that one unit is one noise SD everywhere.
    2. Candidates are its maxima standing LOCAL_SPLIT_NOISE SDs above the saddle to any
       higher one (h-maxima); each owns its watershed basin. A candidate whose basin joins
       a higher lesion's above its own half level (see 3) is part of that lesion: one
       tumour with several peaks, or a rim around a necrotic core, is one lesion.
    3. A candidate's *extent* is its basin's voxels connected to the peak above half way from
       its ring's level to its peak; its *ring* is the shell ``shell_mm`` around the extent
       (other candidates' extents left out; on the CT, the ring's voxels of the candidate's
       own tissue class when there are enough of them).
    4. It is a lesion if its smoothed peak is at least ``contrast`` x the ring's level (its
       75th percentile, 90th in bone), exceeds it by at least ``cnr`` noise SDs at that level, its extent holds at least
       ``min_volume_ml`` and is not organ-sized (``max_volume_ml``, or reaching
       LOCAL_BOX_MM from the peak), and it passes the rules shared with the threshold
       methods: end planes, physiological uptake in the organ map, part of a larger uptake
       region, urine density on CT.

    ``smooth``: the PET already smoothed with ``smooth_fwhm_mm`` (as for the noise model),
    if at hand. Returns ``(labels, info)`` as :func:`detect_lesions`.
    """
    vox_ml = voxel_volume_ml(affine)
    spacing = voxel_spacing(affine)
    suv = suv.astype(np.float32)
    if smooth is None:
        smooth = ndimage.gaussian_filter(suv, smoothing_sigma(affine, smooth_fwhm_mm))
    profile = plane_noise_profile(suv)
    profile = profile / max(float(profile[noise["plane"]]), 1e-6)
    floor = NOISE_FLOOR_FRACTION * noise["level"]
    a = max(float(noise["a"]), 1e-6)

    def sd_at(level, plane):
        return a * np.sqrt(max(level, floor)) * float(profile[plane])

    body = smooth > floor
    if exclusion is not None:
        body &= ~exclusion.astype(bool)
    stabilised = (2.0 / a) * np.sqrt(np.maximum(smooth, floor)) / profile.astype(np.float32)[None, None, :]
    markers, _ = ndimage.label(_h_maxima_in(body, stabilised, LOCAL_SPLIT_NOISE), structure=_STRUCTURE)
    basins = watershed(-stabilised, markers, mask=body, connectivity=3)
    ct_class = _ct_class(hu_mean) if hu_mean is not None else None
    masks = physiological_masks(organ_map, physiological) if organ_map is not None else {}
    column = marrow_profile(smooth, masks["marrow"][1]) if "marrow" in masks else None
    loops = bowel_zone(organ_map, affine) if "bowel" in masks else None

    objects = ndimage.find_objects(basins)
    order = []
    for lab, sl in enumerate(objects, start=1):
        if sl is None:
            continue
        vals = np.where(basins[sl] == lab, smooth[sl], -np.inf)
        q = np.unravel_index(int(np.argmax(vals)), vals.shape)
        order.append((-float(vals[q]), lab, tuple(int(c + s.start) for c, s in zip(q, sl))))
    order.sort()

    half = np.ceil(LOCAL_BOX_MM / spacing).astype(int)
    n_end = int(np.ceil(end_planes_mm / spacing[2] - 1e-9)) if end_planes_mm > 0 else 0
    owner = np.zeros(suv.shape, dtype=np.int32)  # 1 + index into decided of each decided extent
    decided = []  # the lesions (with their _region) and rejected candidates, in order
    lesions, rejected, near = [], [], []
    lesion_basins = set()  # watershed basins of the lesions (and of the shoulders merged into them)
    for neg_top, lab, p in order:
        top = -neg_top
        box = tuple(slice(max(c - h, 0), min(c + h + 1, n)) for c, h, n in zip(p, half, suv.shape))
        sm, basin, others = smooth[box], basins[box] == lab, owner[box] > 0
        cls = ct_class[box] if ct_class is not None else None
        q = tuple(c - b.start for c, b in zip(p, box))
        # first estimate of the surroundings: the lowest of shells 10-20, 20-30 and 30-40 mm
        # from the peak (a large lesion's plateau fills the nearer ones), tissue classes aside;
        # the extent stays in the candidate's basin, so a lower tissue further out does not
        # let it spread through the organ it lies in
        region = np.zeros(sm.shape, dtype=bool)
        region[q] = True
        ring_bg = min(_ring_level(sm, region, spacing, ring, others) for ring in LOCAL_FIRST_RINGS_MM)
        if top <= ring_bg:
            continue
        for _ in range(2):
            region, edge = _extent(sm, basin, q, ring_bg + LOCAL_EXTENT_FRACTION * (top - ring_bg))
            first_bg, ring_bg = ring_bg, _ring_level(sm, region, spacing, shell_mm, others, cls)
            if ring_bg * contrast > top:  # its ring is nearly as hot: unless it is a necrotic tumour's rim
                ring_bg = min(
                    ring_bg,
                    _rim_level(
                        sm, q, first_bg + LOCAL_EXTENT_FRACTION * (top - first_bg), spacing, shell_mm, others, cls, top
                    ),
                )
            if ring_bg >= top:  # its own tissue is as hot as its peak: nothing stands out
                break
        if ring_bg >= top:
            continue
        level = ring_bg + LOCAL_EXTENT_FRACTION * (top - ring_bg)
        region, edge = _extent(sm, basin, q, level)
        touching = owner[box][ndimage.binary_dilation(region, _STRUCTURE) & others]
        if not touching.size:
            # one tumour with several peaks (lobulated, or a rim around a necrotic core): its
            # basin joins a higher lesion's above its own half level (two lesions close
            # together have a dip to their surroundings between them)
            own_or_lesion = basin | np.isin(basins[box], list(lesion_basins))
            joined, _ = _extent(sm, own_or_lesion, q, level)
            touching = np.array([o for o in np.unique(owner[box][joined & others]) if "_region" in decided[o - 1]], int)
        if touching.size:  # a shoulder of a higher candidate above its own half level: part of it
            first = decided[int(touching.min()) - 1]
            owner[box][region] = int(touching.min())
            if "_region" in first:  # a lesion: its region grows by the shoulder
                first["_region"][1][...] |= _resize(region, box, first["_region"][0])
                lesion_basins.add(lab)
            continue
        sd = sd_at(ring_bg, p[2])
        ratio = top / ring_bg if ring_bg > 0 else float("inf")
        score = (top - ring_bg) / sd
        raw = np.where(region, suv[box], -np.inf)
        local_peak = np.unravel_index(int(np.argmax(raw)), raw.shape)
        peak = tuple(int(c + b.start) for c, b in zip(local_peak, box))
        volume = float(region.sum() * vox_ml)
        info = {
            "suvmax": float(suv[peak]),
            "peak_ijk": list(peak),
            "peak_lps": apply_affine(affine, peak).tolist(),
            "volume_ml_at_threshold": volume,
            "local_background_suv": ring_bg,
            "smoothed_peak_suv": top,
            "contrast": float(ratio),
            "contrast_to_noise": float(score),
        }
        if score < cnr or ratio < contrast:
            if score >= NEAR_MISS_SHARE * cnr and ratio >= 1.0 + NEAR_MISS_SHARE * (contrast - 1.0):
                why = (
                    f"{below(score, cnr)} noise SDs above its surroundings (needs {cnr:g})"
                    if score < cnr
                    else f"{below(ratio, contrast)} x its surroundings (needs {contrast:g})"
                )
                near.append({**info, "reason": f"too faint: {why}"})
            continue
        if edge or volume > max_volume_ml:
            reason = (
                f"physiological: organ-sized uptake (its extent is larger than max_volume_ml={max_volume_ml} "
                f"or reaches {LOCAL_BOX_MM:g} mm from its peak)"
            )
        elif volume < min_volume_ml:
            reason = f"noise: smaller than min_volume_ml={min_volume_ml}"
        else:
            end = bool(n_end and _in_end_planes(region, box[2].start, n_end, suv.shape[2]))
            reason = _shared_rejection(
                suv,
                box,
                region,
                peak,
                info["suvmax"],
                end_planes=end,
                end_planes_mm=end_planes_mm,
                n_end=n_end,
                masks=masks,
                contrast=contrast,
                max_volume_ml=max_volume_ml,
                spacing=spacing,
                vox_ml=vox_ml,
                hu=hu,
                marrow=None if column is None else (top, column),
                bowel=loops,
            )
        decided.append({**info, "reason": reason} if reason else {**info, "_region": (box, region)})
        owner[box][region] = len(decided)
        if not reason:
            lesion_basins.add(lab)
        (rejected if reason else lesions).append(decided[-1])
    near.sort(key=lambda d: -d["contrast_to_noise"])
    labels = _number(lesions, suv.shape)
    info = {
        "method": "local",
        "threshold_suv": None,
        "contrast": contrast,
        "cnr": cnr,
        "noise": {**noise, "smooth_fwhm_mm": smooth_fwhm_mm, "floor_suv": floor},
        "min_volume_ml": min_volume_ml,
        "max_volume_ml": max_volume_ml,
        "end_planes_mm": end_planes_mm,
        "candidates": len(order),
        "lesions": lesions,
        "rejected": rejected + near[:MAX_NEAR_MISSES],
    }
    return labels, info
