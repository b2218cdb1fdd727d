"""Per-lesion PET metrics on native voxels.

- SUVmax: hottest voxel of the VOI.
- SUVmean: mean over the VOI.
- SUVpeak: highest mean SUV within a 1 mL sphere (radius 6.2 mm) whose centre lies in
  the VOI; voxels are weighted by the fraction of their volume inside the sphere.
- MTV: VOI volume (mL); TLG: SUVmean x MTV.
- TBR: SUVmax / background SUVmean; TBRmean: SUVmean / background SUVmean.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dualpet.geometry import voxel_spacing, voxel_volume_ml
from dualpet.interchange import read_crop

#: Radius (mm) of a 1 mL sphere.
PEAK_RADIUS_MM = (3.0 * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)


def isocontour_voi(suv, region, fraction, seed=None):
    """VOI = voxels >= ``fraction`` x SUVmax, connected to the maximum, in ``region``.

    Parameters
    ----------
    suv : ndarray
        SUVbw.
    region : ndarray of bool
        Where the lesion may extend (its detection region grown by the neighbourhood).
    fraction : float
        Isocontour level relative to the lesion's SUVmax (0.41 = 41 %).
    seed : ndarray of bool, optional
        The lesion's own detection region: its SUVmax is the maximum there, and voxels
        of the neighbourhood hotter than it (the spill-over of a hotter neighbour) are
        not part of it.
    """
    region = region.astype(bool)
    if not region.any():
        return region
    own = region if seed is None or not (seed & region).any() else (seed & region)
    vals = np.where(own, suv, -np.inf)
    peak = np.unravel_index(int(np.argmax(vals)), suv.shape)
    above = region & (suv >= fraction * suv[peak])
    if seed is not None:
        above &= (suv <= suv[peak]) | own
    lab, _ = ndimage.label(above, structure=np.ones((3, 3, 3), bool))
    return lab == lab[peak]


def sphere_kernel(affine, radius_mm=PEAK_RADIUS_MM, supersample=5):
    """Normalised kernel of voxel weights = fraction of each voxel inside a sphere."""
    sp = voxel_spacing(affine)
    half = np.ceil(radius_mm / sp + 0.5).astype(int)
    offs = (np.arange(supersample) + 0.5) / supersample - 0.5
    grids = [(np.arange(-h, h + 1)[:, None] + offs[None, :]).ravel() * s for h, s in zip(half, sp)]
    X, Y, Z = np.meshgrid(*grids, indexing="ij")
    inside = radius_mm**2 >= (X**2 + Y**2 + Z**2)
    shape = tuple(2 * h + 1 for h in half)
    k = inside.reshape(shape[0], supersample, shape[1], supersample, shape[2], supersample).mean(axis=(1, 3, 5))
    return k / k.sum()


def suv_peak(suv, voi, affine, radius_mm=PEAK_RADIUS_MM):
    """SUVpeak: max over VOI voxels of the 1 mL-sphere mean centred on them."""
    if not voi.any():
        return float("nan")
    mean = ndimage.correlate(suv.astype(np.float64), sphere_kernel(affine, radius_mm), mode="nearest")
    return float(mean[voi].max())


def lesion_metrics(suv, voi, affine, background_suvmean=None):
    """Metrics of one lesion VOI on its PET grid.

    Parameters
    ----------
    suv : ndarray
        SUVbw (a crop is fine if it extends >= 7 mm beyond the VOI, for SUVpeak).
    voi : ndarray of bool
        The lesion VOI.
    affine : ndarray (4, 4)
        Voxel -> LPS of ``suv``.
    background_suvmean : float, optional
        Background SUVmean for TBR.

    Returns
    -------
    dict
        suvmax, suvmean, suvpeak (SUVbw), mtv_ml (mL), tlg (SUVbw x mL), tbr, tbr_mean, n_voxels.
    """
    voi = voi.astype(bool)
    n = int(voi.sum())
    if n == 0:
        nan = float("nan")
        return {
            "suvmax": nan,
            "suvmean": nan,
            "suvpeak": nan,
            "mtv_ml": 0.0,
            "tlg": 0.0,
            "tbr": nan,
            "tbr_mean": nan,
            "n_voxels": 0,
        }
    vals = suv[voi]
    mtv = n * voxel_volume_ml(affine)
    out = {
        "suvmax": float(vals.max()),
        "suvmean": float(vals.mean()),
        "suvpeak": suv_peak(suv, voi, affine),
        "mtv_ml": float(mtv),
        "tlg": float(vals.mean() * mtv),
        "n_voxels": n,
    }
    bg = background_suvmean
    ok = bg is not None and np.isfinite(bg) and bg > 0
    out["tbr"] = out["suvmax"] / bg if ok else float("nan")
    out["tbr_mean"] = out["suvmean"] / bg if ok else float("nan")
    return out


def lesion_crop_metrics(crop_path, tracers):
    """Metrics of one lesion from its crop (the per-lesion job)."""
    fraction, crop = read_crop(crop_path, tracers)
    out = {}
    for t in tracers:
        mode = crop[t]["mode"]
        if mode == "outside_field_of_view":
            out[t] = {"voi_source": mode}
            continue
        suv, mask, affine = crop[t]["suv"], crop[t]["mask"], crop[t]["affine"]
        voi = isocontour_voi(suv, mask, fraction, crop[t].get("seed")) if mode == "isocontour" else mask
        m = lesion_metrics(suv, voi, affine, crop[t]["background"])
        if mode.startswith("mapped_from_"):  # not detected on this tracer: no metabolic volume
            m["mtv_ml"] = float("nan")
            m["tlg"] = float("nan")
        m["voi_source"] = mode
        m["voi_ml"] = float(voi.sum() * abs(np.linalg.det(affine[:3, :3])) / 1000.0)
        out[t] = m
    return out
