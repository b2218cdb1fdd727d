"""Local-contrast detection (method ``local``, the default): spots that stand out from the
tissue they grow in by more than the image noise (see :func:`detect_local`)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from dualpet.detection.noise import NOISE_FLOOR_FRACTION, smoothing_sigma
from dualpet.detection.regions import STRUCTURE, extent, h_maxima_in, in_end_planes, number_lesions, resize
from dualpet.detection.threshold import SHELL_MM, SharedRules
from dualpet.geometry import apply_affine, voxel_spacing, voxel_volume_ml
from dualpet.settings import default

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

#: A candidate whose structure (its voxels above its half level, across basins) encloses,
#: slice by slice, a cold inside of at least this volume (mL) is the rim of a tumour with a
#: necrotic core: its surroundings lie outside the whole tumour. (The PET's blur fills a
#: 16 mm core to a third of the rim's level: such a core encloses about 1 mL below its half level.)
NECROTIC_CORE_ML = 0.5


def below(value, limit, digits=1):
    """``value`` (below ``limit``) printed with the fewest decimals, from ``digits`` up to
    4, that print it below the limit: a refused 4.96 reads 4.96, not 5.0, against 'needs 5'."""
    for d in range(digits, 5):
        text = f"{value:.{d}f}"
        if float(text) < limit:
            return text
    return f"{value:.6g}"


def ct_class_of(hu):
    """CT tissue class per PET voxel (0 lung and air, 1 fat, 2 soft tissue, 3 bone or
    enhanced blood: a bone lesion is read against marrow, a rib against the rib) from
    the CT averaged over each PET voxel (:func:`ct_on_pet_grid` with ``average``)."""
    return np.digitize(hu, CT_CLASSES_HU).astype(np.int8)


def ring_level(values, own, spacing, ring_mm, exclude, ct_class=None):
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
        comps, _ = ndimage.label(same, structure=STRUCTURE)
        held = comps[own & same]
        host = ring & (comps == np.bincount(held).argmax()) if held.size else ring & False
        core = host & ndimage.binary_erosion(same, STRUCTURE)
        if core.sum() >= RING_HOST_MIN:
            ring = core
        elif host.sum() >= RING_HOST_MIN:
            ring = host
            percentile = max(percentile, RING_PERCENTILE_THIN)
    vals = values[ring]
    return float(np.percentile(vals, percentile)) if vals.size else 0.0


def rim_level(values, peak, level, spacing, shell_mm, exclude, ct_class, top):
    """The surroundings' level of a candidate on the rim of a tumour with a necrotic core:
    its structure (voxels connected to the peak at or above ``level``, across watershed
    basins) filled slice by slice, when that adds NECROTIC_CORE_ML or more; the ring is
    then taken around the whole tumour (the rest of the rim is the candidate itself, not
    its surroundings). Else ``top`` (nothing stands out)."""
    joined, _ = extent(values, np.ones(values.shape, bool), peak, level)
    filled = np.zeros_like(joined)
    for k in np.flatnonzero(joined.any(axis=(0, 1))):
        filled[:, :, k] = ndimage.binary_fill_holes(joined[:, :, k])
    if (filled & ~joined).sum() * float(np.prod(spacing)) / 1000.0 < NECROTIC_CORE_ML:
        return top
    return ring_level(values, filled, spacing, shell_mm, exclude, ct_class)


def detect_local(
    suv,
    affine,
    noise,
    *,
    contrast=default("detection.organ_contrast"),
    cnr=default("detection.contrast_to_noise"),
    min_volume_ml=default("detection.min_volume_ml"),
    max_volume_ml=default("detection.max_volume_ml"),
    shell_mm=SHELL_MM,
    smooth_fwhm_mm=default("detection.smooth_fwhm_mm"),
    exclusion=None,
    hu=None,
    hu_mean=None,
    end_planes_mm=default("detection.end_planes_mm"),
    organ_map=None,
    physiological=(),
    smooth=None,
):
    """Lesions that stand out from their own surroundings by more than the image noise.

    1. The PET is smoothed (``smooth_fwhm_mm``) and variance-stabilised with the study's
       noise model (``noise``: :func:`~dualpet.detection.noise.noise_model`, SD = a x sqrt(SUV), times the axial
       profile of :func:`~dualpet.detection.noise.plane_noise_profile`), so that one unit is one noise SD everywhere.
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
    if at hand. Returns ``(labels, info)`` as :func:`dualpet.detection.threshold.detect_lesions`.
    """
    suv = suv.astype(np.float32)
    if smooth is None:
        smooth = ndimage.gaussian_filter(suv, smoothing_sigma(affine, smooth_fwhm_mm))
    rules = SharedRules(suv, affine, organ_map, physiological, end_planes_mm, contrast, max_volume_ml, hu, image=smooth)
    search = _LocalSearch(suv, smooth, affine, noise, rules, exclusion, hu_mean)
    search.criteria = {"contrast": contrast, "cnr": cnr, "min_volume_ml": min_volume_ml, "shell_mm": shell_mm}
    order = search.candidates()
    for neg_top, lab, p in order:
        search.consider(-neg_top, lab, p)
    search.near.sort(key=lambda d: -d["contrast_to_noise"])
    labels = number_lesions(search.lesions, suv.shape)
    info = {
        "method": "local",
        "threshold_suv": None,
        "contrast": contrast,
        "cnr": cnr,
        "noise": {**noise, "smooth_fwhm_mm": smooth_fwhm_mm, "floor_suv": search.floor},
        "min_volume_ml": min_volume_ml,
        "max_volume_ml": max_volume_ml,
        "end_planes_mm": end_planes_mm,
        "candidates": len(order),
        "lesions": search.lesions,
        "rejected": search.rejected + search.near[:MAX_NEAR_MISSES],
    }
    return labels, info


class _LocalSearch:
    """The state of one study's local-contrast search: the variance-stabilised image and its
    watershed basins, and the candidates decided so far (highest peak first)."""

    def __init__(self, suv, smooth, affine, noise, rules, exclusion, hu_mean):
        self.suv, self.smooth, self.affine, self.rules = suv, smooth, affine, rules
        self.spacing, self.vox_ml = voxel_spacing(affine), voxel_volume_ml(affine)
        self.profile = rules.plane_noise / max(float(rules.plane_noise[noise["plane"]]), 1e-6)
        self.floor = NOISE_FLOOR_FRACTION * noise["level"]
        self.a = max(float(noise["a"]), 1e-6)
        body = smooth > self.floor
        if exclusion is not None:
            body &= ~exclusion.astype(bool)
        profile = self.profile.astype(np.float32)[None, None, :]
        stabilised = (2.0 / self.a) * np.sqrt(np.maximum(smooth, self.floor)) / profile
        markers, _ = ndimage.label(h_maxima_in(body, stabilised, LOCAL_SPLIT_NOISE), structure=STRUCTURE)
        self.basins = watershed(-stabilised, markers, mask=body, connectivity=3)
        self.ct_class = ct_class_of(hu_mean) if hu_mean is not None else None
        self.half = np.ceil(LOCAL_BOX_MM / self.spacing).astype(int)
        self.owner = np.zeros(suv.shape, dtype=np.int32)  # 1 + index into decided of each decided extent
        self.decided = []  # the lesions (with their _region) and rejected candidates, in order
        self.lesions, self.rejected, self.near = [], [], []
        self.lesion_basins = set()  # watershed basins of the lesions (and of the shoulders merged into them)

    def sd_at(self, level, plane):
        """The noise SD (smoothed image) at a level of uptake in a plane."""
        return self.a * np.sqrt(max(level, self.floor)) * float(self.profile[plane])

    def candidates(self):
        """(-peak, basin label, peak voxel) of every basin, highest peak first."""
        order = []
        for lab, sl in enumerate(ndimage.find_objects(self.basins), start=1):
            if sl is None:
                continue
            vals = np.where(self.basins[sl] == lab, self.smooth[sl], -np.inf)
            q = np.unravel_index(int(np.argmax(vals)), vals.shape)
            order.append((-float(vals[q]), lab, tuple(int(c + s.start) for c, s in zip(q, sl))))
        order.sort()
        return order

    def consider(self, top, lab, p):
        """Decide the candidate of basin ``lab`` (peak ``top`` at voxel ``p``)."""
        box = tuple(slice(max(c - h, 0), min(c + h + 1, n)) for c, h, n in zip(p, self.half, self.suv.shape))
        view = _View(self.smooth[box], self.basins[box] == lab, self.owner[box] > 0, box, p, self.ct_class)
        ring_bg = self.surroundings(view, top)
        if ring_bg is None:
            return
        level = ring_bg + LOCAL_EXTENT_FRACTION * (top - ring_bg)
        region, edge = extent(view.sm, view.basin, view.q, level)
        if self.joined_to_higher(view, region, level, lab):
            return
        sd = self.sd_at(ring_bg, p[2])
        raw = np.where(region, self.suv[box], -np.inf)
        local_peak = np.unravel_index(int(np.argmax(raw)), raw.shape)
        peak = tuple(int(c + b.start) for c, b in zip(local_peak, box))
        volume = float(region.sum() * self.vox_ml)
        info = {
            "suvmax": float(self.suv[peak]),
            "peak_ijk": list(peak),
            "peak_lps": apply_affine(self.affine, peak).tolist(),
            "volume_ml_at_threshold": volume,
            "local_background_suv": ring_bg,
            "smoothed_peak_suv": top,
            "contrast": float(top / ring_bg if ring_bg > 0 else float("inf")),
            "contrast_to_noise": float((top - ring_bg) / sd),
        }
        if self.too_faint(info):
            return
        reason = self.reason(info, region, edge, box, peak, top)
        self.decided.append({**info, "reason": reason} if reason else {**info, "_region": (box, region)})
        self.owner[box][region] = len(self.decided)
        if not reason:
            self.lesion_basins.add(lab)
        (self.rejected if reason else self.lesions).append(self.decided[-1])

    def surroundings(self, view, top):
        """The level of a candidate's surroundings (its ring's), or None when its own tissue is
        as hot as its peak (nothing stands out).

        The first estimate is the lowest of shells 10-20, 20-30 and 30-40 mm from the peak (a
        large lesion's plateau fills the nearer ones), tissue classes aside; the extent stays
        in the candidate's basin, so a lower tissue further out does not let it spread
        through the organ it lies in. Then twice: the extent above half way from the ring's
        level to the peak, and the ring around it (a necrotic tumour's rim: around the whole
        tumour)."""
        sm, others, cls, shell_mm = view.sm, view.others, view.cls, self.criteria["shell_mm"]
        region = np.zeros(sm.shape, dtype=bool)
        region[view.q] = True
        ring_bg = min(ring_level(sm, region, self.spacing, ring, others) for ring in LOCAL_FIRST_RINGS_MM)
        if top <= ring_bg:
            return None
        for _ in range(2):
            region, _ = extent(sm, view.basin, view.q, ring_bg + LOCAL_EXTENT_FRACTION * (top - ring_bg))
            first_bg, ring_bg = ring_bg, ring_level(sm, region, self.spacing, shell_mm, others, cls)
            if ring_bg * self.criteria["contrast"] > top:  # its ring is nearly as hot: unless a necrotic rim
                half_level = first_bg + LOCAL_EXTENT_FRACTION * (top - first_bg)
                ring_bg = min(ring_bg, rim_level(sm, view.q, half_level, self.spacing, shell_mm, others, cls, top))
            if ring_bg >= top:
                break
        return None if ring_bg >= top else ring_bg

    def joined_to_higher(self, view, region, level, lab):
        """Whether the candidate is a shoulder of a higher one above its own half level: its
        extent touches that one's, or its basin joins a higher lesion's above the level (one
        tumour with several peaks, lobulated or a rim around a necrotic core; two lesions close
        together have a dip to their surroundings between them). A lesion's region grows by
        the shoulder."""
        owner = self.owner[view.box]
        touching = owner[ndimage.binary_dilation(region, STRUCTURE) & view.others]
        if not touching.size:
            own_or_lesion = view.basin | np.isin(self.basins[view.box], list(self.lesion_basins))
            joined, _ = extent(view.sm, own_or_lesion, view.q, level)
            touching = np.array(
                [o for o in np.unique(owner[joined & view.others]) if "_region" in self.decided[o - 1]], int
            )
        if not touching.size:
            return False
        first = self.decided[int(touching.min()) - 1]
        owner[region] = int(touching.min())
        if "_region" in first:
            first["_region"][1][...] |= resize(region, view.box, first["_region"][0])
            self.lesion_basins.add(lab)
        return True

    def too_faint(self, info):
        """Whether a candidate misses the contrast or noise criterion (a near miss is kept to
        be reported)."""
        cnr, contrast = self.criteria["cnr"], self.criteria["contrast"]
        score, ratio = info["contrast_to_noise"], info["contrast"]
        if score >= cnr and ratio >= contrast:
            return False
        if score >= NEAR_MISS_SHARE * cnr and ratio >= 1.0 + NEAR_MISS_SHARE * (contrast - 1.0):
            why = (
                f"{below(score, cnr)} noise SDs above its surroundings (needs {cnr:g})"
                if score < cnr
                else f"{below(ratio, contrast)} x its surroundings (needs {contrast:g})"
            )
            self.near.append({**info, "reason": f"too faint: {why}"})
        return True

    def reason(self, info, region, edge, box, peak, top):
        """Why a candidate standing out enough is still not a lesion (size, then the shared
        rules), or None."""
        max_volume_ml = self.rules.max_volume_ml
        if edge or info["volume_ml_at_threshold"] > max_volume_ml:
            return (
                f"physiological: organ-sized uptake (its extent is larger than max_volume_ml={max_volume_ml} "
                f"or reaches {LOCAL_BOX_MM:g} mm from its peak)"
            )
        if info["volume_ml_at_threshold"] < self.criteria["min_volume_ml"]:
            return f"noise: smaller than min_volume_ml={self.criteria['min_volume_ml']}"
        n_end = self.rules.n_end
        end = bool(n_end and in_end_planes(region, box[2].start, n_end, self.suv.shape[2]))
        return self.rules.reason(box, region, peak, info["suvmax"], end_planes=end, top=top)


class _View:
    """A candidate's box: the smoothed image there, its basin, the voxels already decided,
    the CT classes, and its peak in box coordinates."""

    def __init__(self, sm, basin, others, box, p, ct_class):
        self.sm, self.basin, self.others, self.box = sm, basin, others, box
        self.cls = ct_class[box] if ct_class is not None else None
        self.q = tuple(c - b.start for c, b in zip(p, box))
