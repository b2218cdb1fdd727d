"""The study's PET noise: its level in a homogeneous region and its axial profile.

PET noise grows with activity (counting statistics: SD = a x sqrt(SUV)) and towards the
ends of the axial field of view (falling sensitivity). :func:`noise_model` measures ``a``
on the smoothed image, :func:`plane_noise_profile` the profile, both from the image itself.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dualpet.geometry import values_in_ball, voxel_spacing, world_to_voxel
from dualpet.settings import default

#: Planes whose noise is estimated: voxels above this fraction of the median SUV of the
#: positive voxels (the body), in planes holding at least MIN_PLANE_VOXELS of them.
NOISE_BODY_FRACTION, MIN_PLANE_VOXELS = 0.5, 50

#: The noise model never goes below the noise at this fraction of the homogeneous
#: region's level (air, lung and fat have almost no counts but still have noise).
NOISE_FLOOR_FRACTION = 0.15


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


def smoothing_sigma(affine, fwhm_mm=default("detection.smooth_fwhm_mm")):
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
