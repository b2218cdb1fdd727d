"""Render a phantom into CT (HU) and PET (SUV) volumes on a study's voxel grid.

Volumes are arrays indexed ``[i, j, k]`` (DICOM column, row, slice) with a voxel->LPS
affine (see :mod:`dualpet.geometry`). A study pose maps anatomy to world coordinates:
``world = R @ a + t``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dualpet.anatomy import ORGANS
from dualpet.geometry import apply_affine, voxel_spacing
from dualpet.synth.phantom import COUCH, HU, LESION_HU, NECROSIS_HU, TISSUE_ORGAN
from dualpet.synth.shapes import AIR, LESION_BASE, METAL, PAD, TABLE

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
    slices, so clinical-size grids stay cheap in memory; the anatomy coordinates of a box
    are one broadcast sum of the voxel->anatomy matrix's columns.
    """
    R, t = pose
    labels = np.zeros(shape, dtype=np.int16)
    organ_map = np.zeros(shape, dtype=np.uint8) if organs else None
    inv = np.linalg.inv(affine)
    # voxel -> anatomy in one matrix (float32 is ample: 1e-4 mm at 1 m)
    world_to_anat = np.eye(4)
    world_to_anat[:3, :3] = R.T
    world_to_anat[:3, 3] = -R.T @ t
    m = (world_to_anat @ affine).astype(np.float32)
    for sh in (piece for whole in phantom.all_shapes(with_lesions) for piece in whole.pieces()):
        lo, hi = sh.bbox()
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        vox = apply_affine(inv, corners @ R.T + t)
        vlo = np.clip(np.floor(vox.min(0)).astype(int), 0, np.array(shape))
        vhi = np.clip(np.ceil(vox.max(0)).astype(int) + 1, 0, np.array(shape))
        if np.any(vhi <= vlo):
            continue
        code = organ_code(sh) if organs else None
        ii = np.arange(vlo[0], vhi[0], dtype=np.float32)[:, None, None, None] * m[:3, 0]
        jj = np.arange(vlo[1], vhi[1], dtype=np.float32)[None, :, None, None] * m[:3, 1]
        base = ii + jj + m[:3, 3]
        slab = max(1, _CHUNK // (len(ii) * jj.shape[1]))
        for k0 in range(vlo[2], vhi[2], slab):
            k1 = min(k0 + slab, vhi[2])
            a = base + np.arange(k0, k1, dtype=np.float32)[None, None, :, None] * m[:3, 2]
            inside = sh.contains(a.reshape(-1, 3)).reshape(a.shape[:3])
            box = (slice(vlo[0], vhi[0]), slice(vlo[1], vhi[1]), slice(k0, k1))
            if sh.replaces is not None:
                inside &= np.isin(labels[box], list(sh.replaces))
            if inside.any():
                labels[box][inside] = sh.label
                if code is not None:
                    organ_map[box][inside] = code
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
    """CT in HU (float32): tissue HU (the patient's own, :attr:`Phantom.hu`, and the study's
    contrast enhancement ``contrast``, {tissue label: HU}), lesion HU, slight blur and
    low-dose noise (:func:`add_ct_noise`); and the truth organ map on the same grid."""
    labels, organs = render_labels(phantom, shape, affine, pose, organs=True)
    labels = add_table(labels, affine, table_top_y)
    n = len(phantom.lesions)
    lut = np.full(LESION_BASE + 2 * max(n, 1), np.nan, dtype=np.float32)
    for lab, hu in {**HU, **phantom.hu, **(contrast or {})}.items():
        lut[lab] = hu
    for i, les in enumerate(phantom.lesions):
        lut[LESION_BASE + i] = LESION_HU[les.region]
        lut[LESION_BASE + n + i] = NECROSIS_HU
    hu = lut[labels]
    hu = ndimage.gaussian_filter(hu, sigma=0.6)
    add_ct_noise(hu, np.isin(labels, (TABLE, PAD)), affine, rng, noise_hu)
    add_metal_streaks(hu, labels == METAL, affine, rng)
    return hu, organs


#: Linear attenuation of water at a CT's effective energy (about 70 keV), per mm.
MU_WATER_PER_MM = 0.0195
#: Low-dose CT noise (:func:`add_ct_noise`): the grain (SD of the in-plane correlation, mm;
#: at least CT_GRAIN_MIN_VOXELS voxels, so that coarse grids keep a correlation of about
#: 0.4 between neighbours) of a soft reconstruction kernel, with the low-frequency deficit of filtered
#: back-projection (a wider Gaussian subtracted); photon starvation sets in where the
#: widest ray of a slice (within the reconstructed field of view) crosses more than
#: CT_REF_ATTENUATION (about 360 mm of water: the shoulders, most with the arms down;
#: the arms beside the trunk). The slice's noise grows by CT_NOISE_GAIN and horizontal
#: streaks of CT_STREAK_GAIN times the excess (exp(excess / 2) - 1: the relative noise of a
#: projection of N ~ exp(-attenuation) photons) run along the starved rows, capped at
#: CT_NOISE_MAX and CT_STREAK_MAX times the study's noise (tube-current modulation).
#: Shoulders with the arms down: streaks of about twice the noise; arms up: about once.
CT_GRAIN_MM, CT_GRAIN_MIN_VOXELS, CT_REF_ATTENUATION = 1.0, 0.65, 7.0
CT_NOISE_GAIN, CT_NOISE_MAX, CT_STREAK_GAIN, CT_STREAK_MAX = 0.2, 2.5, 1.0, 4.0
#: Streak directions (degrees from the lateral): the near-lateral projections through the shoulders.
CT_STREAK_ANGLES = (-6.0, 0.0, 6.0)


def add_ct_noise(hu, outside, affine, rng, noise_hu, slab=16):
    """Low-dose CT noise (in place): spatially correlated (not white) with standard
    deviation ``noise_hu`` per voxel where the patient is thin, higher on slices whose
    lateral rays are long (photon starvation), plus horizontal streaks along those rays
    (shoulders; the arms when they lie beside the trunk). ``outside``: voxels (couch) that
    do not count for the attenuation. Processed in slabs of slices (memory)."""
    sp = voxel_spacing(affine)
    sigma = max(CT_GRAIN_MIN_VOXELS, CT_GRAIN_MM / sp[0])
    ni, nj, nk = hu.shape
    y = np.arange(nj) * sp[1]
    x = (np.arange(ni) - (ni - 1) / 2.0) * sp[0]
    for k0 in range(0, nk, slab):
        k1 = min(k0 + slab, nk)
        white = rng.standard_normal((ni, nj, k1 - k0), dtype=np.float32)
        grain = ndimage.gaussian_filter(white, (sigma, sigma, 0)) - 0.5 * ndimage.gaussian_filter(
            white, (3 * sigma, 3 * sigma, 0)
        )
        grain /= max(float(grain.std()), 1e-6)
        mu = np.clip(1.0 + np.minimum(hu[:, :, k0:k1], 1500.0) / 1000.0, 0.0, None) * MU_WATER_PER_MM
        mu[outside[:, :, k0:k1]] = 0.0
        lateral = mu.sum(axis=0) * sp[0]  # (nj, slabs): attenuation of each row's lateral ray
        excess = np.exp(np.maximum(lateral - CT_REF_ATTENUATION, 0.0) / 2.0) - 1.0
        factor = np.minimum(1.0 + CT_NOISE_GAIN * excess.max(axis=0), CT_NOISE_MAX)
        hu[:, :, k0:k1] += noise_hu * factor[None, None, :] * grain
        for kk in np.flatnonzero(excess.max(axis=0) > 0.05):
            amp = np.minimum(CT_STREAK_GAIN * excess[:, kk], CT_STREAK_MAX) * noise_hu
            streaks = np.zeros((ni, nj), np.float32)
            for angle in CT_STREAK_ANGLES:
                t = np.deg2rad(angle)
                s = (y[None, :] - x[:, None] * np.tan(t)) / sp[1]  # row a point's ray starts from
                rows = np.clip(np.rint(s).astype(int), 0, nj - 1)
                line = rng.standard_normal(nj).astype(np.float32) * amp
                streaks += line[rows] * ((s >= 0) & (s <= nj - 1))
            hu[:, :, k0 + kk] += streaks / np.sqrt(len(CT_STREAK_ANGLES))


def add_metal_streaks(
    hu, metal, affine, rng, n_streaks=(8, 16), amplitude_hu=(150.0, 600.0), width_rad=0.012, near_mm=30.0
):
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
    for les in phantom.lesions:  # spheres with fractional voxel occupancy, parts in paint order
        for centre, radius, part_suv, _ in les.spheres():
            lo, hi, frac = sphere_occupancy(fshape, faffine, centre @ pose[0].T + pose[1], radius)
            if frac is not None:
                box = tuple(slice(a, b) for a, b in zip(lo, hi))
                suv[box] = suv[box] * (1.0 - frac) + frac * part_suv[tracer]
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
