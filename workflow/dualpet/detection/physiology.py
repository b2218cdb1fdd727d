"""The rules every automatic detection method applies to a candidate: the reason it is
not a lesion (:func:`rejection_reason`), or none.

- the PET's end planes (lowest sensitivity: noise);
- physiological uptake in the organ map (:data:`PHYSIOLOGICAL` groups, per tracer from
  ``detection.physiological``), unless a focus at an organ's border stands well above it;
- vertebral marrow read against the neighbouring vertebrae;
- bowel segments the organ map misses;
- part of an organ-sized uptake region;
- urine (water-dense) or fat (brown fat) on the CT under the hot core.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dualpet.anatomy import FAT_HU, WATER_HU, organ_voxels
from dualpet.detection.regions import STRUCTURE
from dualpet.geometry import apply_affine, box_around, voxel_spacing

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


def part_of_larger_uptake(suv, peak, level, max_volume_ml, spacing, vox_ml):
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
        mask = organ_voxels(organ_map, *PHYSIOLOGICAL[group])
        if group == "urinary":
            for name in ("kidney_right", "kidney_left"):
                kidney = organ_voxels(organ_map, name)
                for k in np.flatnonzero(kidney.any(axis=(0, 1))):
                    if kidney[:, :, k].sum() >= 3:
                        mask[:, :, k] |= convex_hull_image(kidney[:, :, k])
        out[group] = (_grown(mask), mask)
    return out


def _grown(mask):
    """``mask`` dilated by STRUCTURE (one voxel), computed in the mask's box one voxel
    wider: the dilation reaches no farther."""
    grown = np.zeros_like(mask)
    if mask.any():
        box = box_around(mask, 1)
        grown[box] = ndimage.binary_dilation(mask[box], structure=STRUCTURE)
    return grown


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
        cut[inner] = ndimage.binary_dilation(region, structure=STRUCTURE, iterations=2)
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
    lungs = organ_voxels(organ_map, "lung_left", "lung_right")
    zone = np.ones(organ_map.shape, dtype=bool)
    if lungs.any():
        planes = np.flatnonzero(lungs.any(axis=(0, 1)))
        z = apply_affine(affine, np.c_[np.zeros((organ_map.shape[2], 2)), np.arange(organ_map.shape[2])])[:, 2]
        zone[:, :, z >= z[planes].min()] = False
    near = organ_voxels(organ_map, "aorta", "vertebrae", "kidney_left", "kidney_right")
    if near.any():
        # the distance to them, in their box widened by BOWEL_CLEAR_MM: every voxel beyond is farther
        box = box_around(near, int(np.ceil(BOWEL_CLEAR_MM / spacing.min())) + 1)
        zone[box] &= ndimage.distance_transform_edt(~near[box], sampling=spacing) > BOWEL_CLEAR_MM
    zone &= ~organ_voxels(organ_map, "liver", "spleen", "urinary_bladder")
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


def rejection_reason(
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
    if part_of_larger_uptake(suv, peak, suvmax / contrast, max_volume_ml, spacing, vox_ml):
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
    air = ndimage.binary_dilation(box < LUNG_EDGE_HU, structure=STRUCTURE)
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
