"""Threshold detection (methods ``background``, ``fixed``, ``percist``).

1. Threshold: ``fixed`` (SUV >= ``value``), ``background`` (SUV >= ``factor`` x the
   background SUVmean, default 2 x blood pool) or ``percist``.
2. Candidates: the above-threshold voxels, split at their own maxima (markers are the
   regional maxima of the lightly smoothed image that stand out by at least ``h``,
   h-maxima; the split is a watershed of the inverted image). Pieces smaller than
   ``min_volume_ml`` are noise and dropped unreported.
3. A candidate is a lesion only if it stands out from where it lies (every rejection is
   reported with its reason):

   - *organ*: connected regions of SUV >= ``organ_fraction`` x threshold larger than
     ``max_volume_ml`` are organ-sized uptake (liver, kidneys, heart, bladder, spleen,
     marrow); a candidate larger than ``max_volume_ml`` or holding ORGAN_SHARE or more of
     such a region must stand out from its own median SUV (see *local contrast*);
   - the rules shared with the other automatic methods
     (:func:`dualpet.detection.physiology.rejection_reason`);
   - *local contrast*: SUVmax >= ``organ_contrast`` x the median SUV in a 6-16 mm shell
     around the candidate (inside an organ-sized region: the region's voxels only; for an
     organ-sized candidate at least its own median), the factor growing with the noise
     of the candidate's plane.

   A lesion inside an organ whose own uptake exceeds the threshold shares the organ's
   watershed basin; once it passes these tests its region is trimmed to the part above
   ``organ_contrast`` x the local background. An optional exclusion mask removes voxels
   before all of this.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from dualpet.detection import METHODS
from dualpet.detection.noise import plane_noise_profile
from dualpet.detection.physiology import bowel_zone, marrow_profile, physiological_masks, rejection_reason
from dualpet.detection.regions import STRUCTURE, h_maxima_in, number_lesions, trim_to_contrast
from dualpet.geometry import apply_affine, voxel_volume_ml
from dualpet.settings import default

#: A candidate holding at least this share of an organ-sized uptake region is that organ.
ORGAN_SHARE = 0.25
#: Inner and outer distance (mm) of the shell a candidate's local background is read in.
SHELL_MM = (6.0, 16.0)


def detection_threshold(method, background_suvmean, liver=None):
    """SUV threshold from the configured method.

    Parameters
    ----------
    method : dict
        The detection settings: ``method`` ``fixed`` (SUV >= ``value``), ``background``
        (``factor`` x the background SUVmean) or ``percist`` (1.5 x liver SUVmean + 2 x
        liver SD, PERCIST 1.0).
    background_suvmean : float
        Background SUVmean of the study (blood pool by default).
    liver : dict, optional
        Liver VOI statistics (``suvmean``, ``suvsd``), needed by ``percist``.
    """
    kind = method["method"]
    if kind == "fixed":
        return float(method["value"])
    if kind == "background":
        return float(method["factor"]) * float(background_suvmean)
    if kind == "percist":
        if liver is None:
            raise ValueError("the percist threshold needs the liver VOI (SUVmean and SD)")
        return 1.5 * float(liver["suvmean"]) + 2.0 * float(liver["suvsd"])
    raise ValueError(f"unknown detection method {kind!r} (expected one of {METHODS})")


def detect_lesions(
    suv,
    affine,
    threshold,
    *,
    min_volume_ml=default("detection.min_volume_ml"),
    max_volume_ml=default("detection.max_volume_ml"),
    organ_fraction=default("detection.organ_fraction"),
    organ_contrast=default("detection.organ_contrast"),
    split_h=None,
    exclusion=None,
    shell_mm=SHELL_MM,
    hu=None,
    end_planes_mm=default("detection.end_planes_mm"),
    organ_map=None,
    physiological=(),
):
    """Detect lesions in a PET volume (``suv``, SUVbw on its own grid; ``affine``: voxel ->
    LPS mm) at ``threshold`` (SUVbw), as the module docstring describes. The size limits are
    in mL at the threshold; ``split_h``: the prominence (SUV) a maximum needs to seed its own
    lesion (default a quarter of the threshold); ``exclusion``: voxels never lesions;
    ``shell_mm``: the local background's shell; ``hu``, ``organ_map``: the CT numbers and
    the organ map on the PET grid, for the rules ``physiological`` (groups of
    :data:`~dualpet.detection.physiology.PHYSIOLOGICAL`) names.

    Returns ``labels`` (int32: 0 background, n the region of lesion n, numbered
    cranio-caudally) and ``info``: ``lesions`` (label, SUVmax, peak voxel and LPS position,
    volume), ``organs`` (organ-sized regions), ``rejected`` (candidates and why) and the
    parameters used.
    """
    organs = _OrganRegions(suv, affine, organ_fraction * threshold, max_volume_ml)
    mask = suv >= threshold
    if exclusion is not None:
        mask &= ~exclusion.astype(bool)
    h = 0.25 * threshold if split_h is None else float(split_h)
    smooth = ndimage.gaussian_filter(suv.astype(np.float32), 0.7)
    markers, _ = ndimage.label(h_maxima_in(mask, smooth, h), structure=STRUCTURE)
    pieces = watershed(-smooth, markers, mask=mask, connectivity=3)
    rules = SharedRules(suv, affine, organ_map, physiological, end_planes_mm, organ_contrast, max_volume_ml, hu)
    lesions, rejected = [], []
    for lab, sl in enumerate(ndimage.find_objects(pieces), start=1):
        if sl is None:
            continue
        judged = _judge_piece(suv, affine, pieces, lab, sl, rules, organs, min_volume_ml, shell_mm)
        if judged is None:  # noise-sized pieces are dropped without a report
            continue
        cand, region, reason = judged
        if reason:
            rejected.append({**cand, "reason": reason})
        else:
            lesions.append({**cand, "_region": (sl, region)})
    labels = number_lesions(lesions, suv.shape)
    info = {
        "threshold_suv": float(threshold),
        "min_volume_ml": min_volume_ml,
        "max_volume_ml": max_volume_ml,
        "organ_fraction": organ_fraction,
        "organ_contrast": organ_contrast,
        "end_planes_mm": end_planes_mm,
        "split_h_suv": h,
        "lesions": lesions,
        "organs": organs.records,
        "rejected": rejected,
    }
    return labels, info


class _OrganRegions:
    """A study's organ-sized uptake regions: connected regions at or above ``level``
    (``organ_fraction`` x the threshold) larger than ``max_volume_ml``."""

    def __init__(self, suv, affine, level, max_volume_ml):
        vox_ml = voxel_volume_ml(affine)
        self.comps, n_org = ndimage.label(suv >= level, structure=STRUCTURE)
        self.sizes = np.bincount(self.comps.ravel(), minlength=n_org + 1) * vox_ml
        self.median, self.records = {}, []
        for i in [int(i) for i in np.flatnonzero(self.sizes > max_volume_ml) if i > 0]:
            sel = self.comps == i
            self.median[i] = float(np.median(suv[sel]))
            self.records.append(
                {
                    "volume_ml": float(self.sizes[i]),
                    "suv_median": self.median[i],
                    "suvmax": float(suv[sel].max()),
                    "centroid_lps": apply_affine(affine, ndimage.center_of_mass(sel)).tolist(),
                }
            )


class SharedRules:
    """What the rules every automatic method applies need of a study, prepared once: the end
    planes and each plane's noise, the physiological groups' masks, the vertebral column's marrow profile (of
    ``image``: the image the method compares, the raw PET by default) and the bowel zone.
    :meth:`reason` applies them to one candidate (see
    :func:`dualpet.detection.physiology.rejection_reason`)."""

    def __init__(self, suv, affine, organ_map, physiological, end_planes_mm, contrast, max_volume_ml, hu, image=None):
        self.suv, self.hu = suv, hu
        self.spacing = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)
        self.vox_ml = voxel_volume_ml(affine)
        self.end_planes_mm, self.contrast, self.max_volume_ml = end_planes_mm, contrast, max_volume_ml
        self.n_end = int(np.ceil(end_planes_mm / self.spacing[2] - 1e-9)) if end_planes_mm > 0 else 0
        self.plane_noise = plane_noise_profile(suv)  # each plane's noise relative to the middle's
        self.masks = physiological_masks(organ_map, physiological) if organ_map is not None else {}
        image = suv if image is None else image
        self.column = marrow_profile(image, self.masks["marrow"][1]) if "marrow" in self.masks else None
        self.loops = bowel_zone(organ_map, affine) if "bowel" in self.masks else None

    def reason(self, box, region, peak, suvmax, *, end_planes, top=None):
        """Why a candidate (``region`` in the ``box``, its raw ``peak`` and ``suvmax``; ``top``:
        its peak in the compared image, default ``suvmax``) is not a lesion, or None."""
        return rejection_reason(
            self.suv,
            box,
            region,
            peak,
            suvmax,
            end_planes=end_planes,
            end_planes_mm=self.end_planes_mm,
            n_end=self.n_end,
            masks=self.masks,
            contrast=self.contrast,
            max_volume_ml=self.max_volume_ml,
            spacing=self.spacing,
            vox_ml=self.vox_ml,
            hu=self.hu,
            marrow=None if self.column is None else (suvmax if top is None else top, self.column),
            bowel=self.loops,
        )


def _judge_piece(suv, affine, pieces, lab, sl, rules, organs, min_volume_ml, shell_mm):
    """One watershed piece: (candidate record, its region in the box ``sl``, the reason it is
    not a lesion or None), or None for a piece smaller than ``min_volume_ml`` (noise)."""
    region = pieces[sl] == lab
    vals = np.where(region, suv[sl], -np.inf)
    local_peak = np.unravel_index(int(np.argmax(vals)), region.shape)
    peak = tuple(int(p + s.start) for p, s in zip(local_peak, sl))
    cand = {"suvmax": float(suv[peak]), "peak_ijk": list(peak), "peak_lps": apply_affine(affine, peak).tolist()}
    volume = float(region.sum() * rules.vox_ml)
    cand["volume_ml_at_threshold"] = volume
    if volume < min_volume_ml:
        return None
    organ = int(organs.comps[peak])
    in_organ = organ in organs.median
    local = _local_background(suv, pieces, lab, sl, rules.spacing, shell_mm, organs.comps if in_organ else None, organ)
    # An organ-sized piece (or most of an organ-sized region): its bulk is the tissue
    # the candidate has to stand out from.
    organ_like = volume > rules.max_volume_ml or (in_organ and volume >= ORGAN_SHARE * organs.sizes[organ])
    if organ_like:
        local = max(local, float(np.median(suv[sl][region])))
    cand["local_background_suv"] = local
    end = bool(rules.n_end and (sl[2].stop <= rules.n_end or sl[2].start >= suv.shape[2] - rules.n_end))
    reason = rules.reason(sl, region, peak, cand["suvmax"], end_planes=end)
    if reason is None:
        reason, region = _contrast_reason(suv, sl, region, local_peak, cand, local, rules, organ_like or in_organ)
        if reason is None and organ_like:
            reason, region = _trimmed(suv, sl, region, local_peak, cand, local, rules)
    return cand, region, reason


def _contrast_reason(suv, sl, region, local_peak, cand, local, rules, organ):
    """Whether a candidate stands out from its local background by the contrast factor,
    grown with the noise of its plane: (reason or None, region)."""
    plane = rules.plane_noise[cand["peak_ijk"][2]]
    contrast = 1.0 + (rules.contrast - 1.0) * max(1.0, plane)
    if cand["suvmax"] >= contrast * local:
        return None, region
    where = "an organ-sized uptake region" if organ else "its surroundings"
    noisier = f" (its plane {plane:.1f}x noisier than the volume's middle)" if contrast > rules.contrast else ""
    return (
        f"physiological or noise: SUVmax below {contrast:.2f}x the local background {local:.2f} of {where}{noisier}",
        region,
    )


def _trimmed(suv, sl, region, local_peak, cand, local, rules):
    """A lesion inside an organ whose own uptake exceeds the threshold shares the organ's
    watershed basin: keep only its part above the contrast level (reason or None, region)."""
    region = trim_to_contrast(suv[sl], region, local_peak, rules.contrast * local)
    volume = float(region.sum() * rules.vox_ml)
    cand["volume_ml_trimmed"] = volume
    if volume > rules.max_volume_ml:
        return (
            f"larger than max_volume_ml={rules.max_volume_ml} also above {rules.contrast}x its local background",
            region,
        )
    return None, region


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
