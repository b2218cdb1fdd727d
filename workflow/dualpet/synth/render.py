"""Render a phantom into CT (HU) and PET (SUV) volumes on a study's voxel grid.

Volumes are arrays indexed ``[i, j, k]`` (DICOM column, row, slice) with a voxel->LPS
affine (see :mod:`dualpet.geometry`). A study pose maps anatomy to world coordinates:
``world = R @ a + t``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dualpet.geometry import apply_affine, voxel_spacing
from dualpet.anatomy import ORGANS
from dualpet.synth.phantom import AIR, COUCH, HU, LESION_BASE, LESION_HU, METAL, PAD, TABLE, TISSUE_ORGAN

#: Fine-grid subdivision per axis used to integrate activity over PET voxels.
PET_SUPERSAMPLE = 2
_CHUNK = 2_000_000  # voxels evaluated at once (bounds memory on clinical grids)


def grid_affine(shape, spacing, center_world):
    """Axis-aligned voxel->LPS affine (rows along +x, columns along +y, slices along +z)."""
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = np.asarray(center_world, float) - (np.asarray(shape) - 1) / 2.0 * np.asarray(spacing, float)
    return affine


def organ_code(sh):
    """Truth organ map value a shape paints (:data:`dualpet.anatomy.ORGANS`): its organ,
    else ``body`` for tissue; None for lesions (they keep their host organ's value)."""
    if sh.label >= LESION_BASE:
        return None
    name = sh.organ or TISSUE_ORGAN.get(sh.label)
    return ORGANS[name] if name else (ORGANS["body"] if sh.label != AIR else 0)


def render_labels(phantom, shape, affine, pose, with_lesions=True, organs=False):
    """Tissue label of every voxel centre of a grid (int16 array of ``shape``); with
    ``organs``, also the truth organ map (uint8, :func:`organ_code`) as a second array.

    Each shape is evaluated only inside its bounding box mapped to the grid, in slabs of
    slices, so clinical-size grids stay cheap in memory.
    """
    R, t = pose
    labels = np.zeros(shape, dtype=np.int16)
    organ_map = np.zeros(shape, dtype=np.uint8) if organs else None
    inv = np.linalg.inv(affine)
    # voxel -> anatomy in one matrix (float32 is ample: 1e-4 mm at 1 m)
    world_to_anat = np.eye(4)
    world_to_anat[:3, :3] = R.T
    world_to_anat[:3, 3] = -R.T @ t
    vox_to_anat = (world_to_anat @ affine).astype(np.float32)
    for sh in phantom.all_shapes(with_lesions):
        lo, hi = sh.bbox()
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        vox = apply_affine(inv, corners @ R.T + t)
        vlo = np.clip(np.floor(vox.min(0)).astype(int), 0, np.array(shape))
        vhi = np.clip(np.ceil(vox.max(0)).astype(int) + 1, 0, np.array(shape))
        if np.any(vhi <= vlo):
            continue
        ii = np.arange(vlo[0], vhi[0])
        jj = np.arange(vlo[1], vhi[1])
        slab = max(1, _CHUNK // (len(ii) * len(jj)))
        for k0 in range(vlo[2], vhi[2], slab):
            kk = np.arange(k0, min(k0 + slab, vhi[2]))
            I, J, K = np.meshgrid(ii, jj, kk, indexing="ij")
            ijk = np.stack([I.ravel(), J.ravel(), K.ravel()], axis=1)
            a = ijk.astype(np.float32) @ vox_to_anat[:3, :3].T + vox_to_anat[:3, 3]
            inside = sh.contains(a)
            if inside.any():
                sel = ijk[inside]
                if sh.replaces is not None:
                    sel = sel[np.isin(labels[sel[:, 0], sel[:, 1], sel[:, 2]], list(sh.replaces))]
                labels[sel[:, 0], sel[:, 1], sel[:, 2]] = sh.label
                if organs and (code := organ_code(sh)) is not None:
                    organ_map[sel[:, 0], sel[:, 1], sel[:, 2]] = code
    return (labels, organ_map) if organs else labels


def add_table(labels, affine, table_top_y):
    """Paint the couch (fixed in scanner coordinates) where there is air: a curved shell
    (rising towards its edges) under a thin pad, whose top touches the patient's lowest
    (most posterior, largest y) point at ``table_top_y``."""
    ni, nj = labels.shape[:2]
    x = (affine[0, 3] + affine[0, 0] * np.arange(ni))[:, None]
    y = (affine[1, 3] + affine[1, 1] * np.arange(nj))[None, :]
    top = table_top_y - x**2 / (2.0 * COUCH["curvature_radius_mm"])  # cradle: edges more anterior
    across = np.abs(x) <= COUCH["half_width_mm"]
    pad = across & (y >= top) & (y < top + COUCH["pad_mm"])
    shell = across & (y >= top + COUCH["pad_mm"]) & (y < top + COUCH["pad_mm"] + COUCH["shell_mm"])
    for k in range(labels.shape[2]):
        plane = labels[:, :, k]
        plane[pad & (plane == AIR)] = PAD
        plane[shell & (plane == AIR)] = TABLE
    return labels


def render_ct(phantom, shape, affine, pose, rng, table_top_y, noise_hu=12.0, contrast=None):
    """CT in HU (float32): tissue HU, lesion HU, slight blur and noise; and the truth organ
    map on the same grid. ``contrast``: {tissue label: HU} of a contrast-enhanced study."""
    labels, organs = render_labels(phantom, shape, affine, pose, organs=True)
    labels = add_table(labels, affine, table_top_y)
    lut = np.full(LESION_BASE + max(len(phantom.lesions), 1), np.nan, dtype=np.float32)
    for lab, hu in {**HU, **(contrast or {})}.items():
        lut[lab] = hu
    for n, les in enumerate(phantom.lesions):
        lut[LESION_BASE + n] = LESION_HU[les.region]
    hu = lut[labels]
    hu = ndimage.gaussian_filter(hu, sigma=0.6)
    hu += rng.normal(0.0, noise_hu, size=hu.shape).astype(np.float32)
    add_metal_streaks(hu, labels == METAL, affine, rng)
    return hu, organs


def add_metal_streaks(hu, metal, affine, rng, n_streaks=(8, 16), amplitude_hu=(150.0, 600.0), width_rad=0.012,
                      near_mm=30.0):  # fmt: skip
    """Streak artefacts of metal (in place): on each slice holding metal, bright and dark
    lines through it (beam hardening, photon starvation) at random angles, across the whole
    reconstructed field of view (also into the air around the patient), their amplitude
    falling as 1/r beyond ``near_mm`` from the metal."""
    sp = voxel_spacing(affine)
    for k in np.flatnonzero(metal.any(axis=(0, 1))):
        ii, jj = np.nonzero(metal[:, :, k])
        di = (np.arange(hu.shape[0]) - ii.mean())[:, None] * sp[0]
        dj = (np.arange(hu.shape[1]) - jj.mean())[None, :] * sp[1]
        r, phi = np.hypot(di, dj), np.arctan2(dj, di)
        falloff = np.minimum(1.0, near_mm / np.maximum(r, 1e-3))
        streaks = np.zeros(r.shape, np.float32)
        for _ in range(int(rng.integers(*n_streaks))):
            theta = rng.uniform(0.0, np.pi)
            d = np.angle(np.exp(2j * (phi - theta))) / 2.0  # angle to the line through the metal
            sign = 1.0 if rng.uniform() < 0.5 else -1.0
            streaks += sign * rng.uniform(*amplitude_hu) * np.exp(-0.5 * (d / width_rad) ** 2)
        hu[:, :, k] += (streaks * falloff).astype(np.float32)


def fine_grid(shape, affine, factor=PET_SUPERSAMPLE):
    """Sub-voxel grid: ``factor`` samples per axis inside each voxel of the grid."""
    fine_shape = tuple(int(n) * factor for n in shape)
    fine = affine.copy()
    fine[:3, :3] = affine[:3, :3] / factor
    fine[:3, 3] = apply_affine(affine, np.full(3, -0.5 + 0.5 / factor))
    return fine_shape, fine


def sphere_occupancy(shape, affine, centre, radius, sub=4):
    """Fraction of each voxel inside a sphere (``sub``^3 samples per voxel), on its bounding box.

    Returns ``(lo, hi, frac)`` with ``frac`` of shape ``hi - lo``, or ``(None, None, None)``
    when the sphere lies outside the grid.
    """
    c = apply_affine(np.linalg.inv(affine), centre)
    reach = radius / np.linalg.norm(affine[:3, :3], axis=0) + 1
    lo = np.maximum(np.floor(c - reach).astype(int), 0)
    hi = np.minimum(np.ceil(c + reach).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return None, None, None
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    axes = [(np.arange(a, b)[:, None] + offs[None, :]).ravel() for a, b in zip(lo, hi)]
    I, J, K = np.meshgrid(*axes, indexing="ij")
    pts = apply_affine(affine, np.stack([I.ravel(), J.ravel(), K.ravel()], 1))
    inside = (np.sum((pts - centre) ** 2, axis=1) <= radius**2).astype(np.float32)
    n = hi - lo
    frac = inside.reshape(n[0], sub, n[1], sub, n[2], sub).mean(axis=(1, 3, 5))
    return lo, hi, frac


def render_pet_truth(phantom, tracer, shape, affine, pose, fwhm_mm):
    """Noiseless PET in SUV: activity integrated over voxels and blurred by the PSF.

    The activity distribution is sampled on a grid ``PET_SUPERSAMPLE`` times finer than
    the PET grid (lesion spheres with their exact fractional voxel occupancy), blurred
    with a Gaussian PSF of ``fwhm_mm`` and averaged over each PET voxel (partial-volume
    effect of both the PSF and the voxel size).
    """
    fshape, faffine = fine_grid(shape, affine)
    labels = render_labels(phantom, fshape, faffine, pose, with_lesions=False)
    suv = phantom.suv_of_labels(labels, tracer)
    del labels
    for les in phantom.lesions:  # spheres with fractional voxel occupancy
        lo, hi, frac = sphere_occupancy(fshape, faffine, les.center @ pose[0].T + pose[1], les.radius)
        if frac is not None:
            box = tuple(slice(a, b) for a, b in zip(lo, hi))
            suv[box] = suv[box] * (1.0 - frac) + frac * les.suv[tracer]
    sigma_vox = fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0))) / np.linalg.norm(faffine[:3, :3], axis=0)
    suv = ndimage.gaussian_filter(suv, sigma=sigma_vox, mode="constant")
    f = PET_SUPERSAMPLE
    return suv.reshape(shape[0], f, shape[1], f, shape[2], f).mean(axis=(1, 3, 5))


#: Whole-body PET sensitivity falls towards both ends of the axial field of view (the outer
#: half of the first and last bed is seen by ever fewer detector rings): relative
#: sensitivity rises linearly from END_SENSITIVITY at the outermost plane to 1 at
#: END_RAMP_MM from it, so noise there is up to 1/sqrt(END_SENSITIVITY) ~ 3x higher.
END_SENSITIVITY, END_RAMP_MM = 0.1, 40.0


def axial_noise_profile(n_slices, slice_mm):
    """Per-plane noise factor 1/sqrt(relative sensitivity) of a whole-body PET."""
    d = np.minimum(np.arange(n_slices), np.arange(n_slices)[::-1]) * slice_mm + slice_mm / 2.0
    sensitivity = np.minimum(1.0, END_SENSITIVITY + (1.0 - END_SENSITIVITY) * d / END_RAMP_MM)
    return 1.0 / np.sqrt(sensitivity)


def add_pet_noise(clean, rng, cov_ref, ref_suv=2.0, corr_sigma_vox=0.8, axial_profile=None):
    """Reconstruction-like noise: spatially correlated, variance proportional to the signal.

    The standard deviation is ``cov_ref * sqrt(v * ref_suv)``, i.e. a coefficient of
    variation of ``cov_ref`` at SUV ``ref_suv`` (liver-like), falling as 1/sqrt(SUV) for
    hotter regions, times ``axial_profile[k]`` per plane (see :func:`axial_noise_profile`).
    Negative values are clipped as OSEM images are non-negative.
    """
    z = ndimage.gaussian_filter(rng.standard_normal(clean.shape).astype(np.float32), corr_sigma_vox)
    z /= z.std()
    if axial_profile is not None:
        z *= np.asarray(axial_profile, dtype=np.float32)[None, None, :]
    noisy = clean + cov_ref * np.sqrt(np.maximum(clean, 0.0) * ref_suv) * z
    return np.maximum(noisy, 0.0).astype(np.float32)
