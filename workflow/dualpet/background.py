"""Background (reference region) VOIs: blood pool in the descending aorta.

Method (``bloodpool``, the default): the descending thoracic aorta lies left-anterior of
the vertebral bodies. On the CT, the thoracic levels are those whose axial slices hold
the most lung; on each of them the vertebral body is the bone (HU > 150) component
nearest the body's posterior midline. From the mean vertebral-body centre the aorta is
searched around a documented anatomical offset (``offset_mm``, default 25 mm left and
30 mm anterior) as the round soft-tissue structure bounded by fat, lung or bone (see
:func:`aorta_centre`). The background SUVmean is measured on the PET's own voxels inside a
cylinder of 10 mm diameter and 20 mm length (the EANM/PERCIST blood-pool VOI).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dualpet.anatomy import BODY_HU_MIN, BONE_HU_MIN, LIVER_HU, LUNG_HU_MAX, SOFT_TISSUE_HU
from dualpet.errors import DualpetInputError
from dualpet.geometry import apply_affine, values_in_ball, voxel_spacing, world_to_voxel


def _thoracic_levels(hu, n_levels=12):
    """Slice indices (k) of the CT with the largest lung area."""
    body = hu > BODY_HU_MIN
    filled = np.stack([ndimage.binary_fill_holes(body[:, :, k]) for k in range(hu.shape[2])], axis=2)
    lung = filled & (hu < LUNG_HU_MAX)
    area = lung.sum(axis=(0, 1))
    if area.max() == 0:
        return None, filled
    order = np.argsort(area)[::-1]
    keep = [k for k in order[: n_levels * 2] if area[k] >= 0.5 * area.max()]
    return sorted(keep[:n_levels]), filled


def vertebral_centre(hu, affine):
    """LPS centre (mm) of the vertebral bodies at thoracic levels, or None."""
    levels, body = _thoracic_levels(hu)
    if not levels:
        return None
    points = []
    for k in levels:
        slab = body[:, :, k]
        if not slab.any():
            continue
        ii, jj = np.nonzero(slab)
        centre_i = ii.mean()
        posterior_j = np.percentile(jj, 80)  # j grows posterior for axial LPS images
        bone, n = ndimage.label(hu[:, :, k] > BONE_HU_MIN)
        if n == 0:
            continue
        coms = np.array(ndimage.center_of_mass(bone, bone, range(1, n + 1)))
        sizes = ndimage.sum(np.ones_like(bone), bone, range(1, n + 1))
        ok = sizes >= 5
        if not ok.any():
            continue
        d = np.hypot(coms[:, 0] - centre_i, coms[:, 1] - posterior_j)
        d[~ok] = np.inf
        c = coms[int(np.argmin(d))]
        points.append(apply_affine(affine, [c[0], c[1], k]))
    return np.median(points, axis=0) if points else None


def _cylinder_mask(shape, affine, centre, radius_mm, half_length_mm):
    """Voxels of a grid whose centres lie in a z-aligned cylinder (LPS)."""
    sp = voxel_spacing(affine)
    c = world_to_voxel(affine, centre)
    reach = np.array([radius_mm, radius_mm, half_length_mm]) / sp + 1
    lo = np.maximum(np.floor(c - reach).astype(int), 0)
    hi = np.minimum(np.ceil(c + reach).astype(int) + 1, shape)
    if np.any(hi <= lo):  # entirely outside the grid
        return tuple(np.empty((3, 0), dtype=int))
    idx = np.indices(hi - lo).reshape(3, -1).T + lo
    w = apply_affine(affine, idx) - centre
    inside = (np.hypot(w[:, 0], w[:, 1]) <= radius_mm) & (np.abs(w[:, 2]) <= half_length_mm)
    return tuple(idx[inside].T)


def aorta_centre(hu, ct_affine, vertebra, *, offset_mm=(25.0, -30.0), search_mm=15.0, half_length_mm=30.0):
    """LPS centre of the descending aorta near a vertebral centre, from the CT alone.

    On non-contrast CT the descending aorta is a round soft-tissue structure (-50..100 HU)
    bounded by fat, lung and bone, so its centre is the maximum of the in-plane distance
    to the nearest non-soft-tissue voxel, averaged over the slices within
    ``half_length_mm`` of the vertebral level and searched within ``search_mm`` of
    ``vertebra + offset_mm``. Using the CT only keeps PET noise out of the localisation
    (a PET-driven search selects, and then reports, positive noise).

    Returns
    -------
    (ndarray (3,), float)
        Centre (LPS mm) and the lumen radius estimate (mm).
    """
    spacing = voxel_spacing(ct_affine)
    target = vertebra + np.array([offset_mm[0], offset_mm[1], 0.0])
    c = world_to_voxel(ct_affine, target)
    reach = (search_mm + 30.0) / spacing
    lo = np.maximum(np.floor(c - [reach[0], reach[1], half_length_mm / spacing[2]]).astype(int), 0)
    hi = np.minimum(np.ceil(c + [reach[0], reach[1], half_length_mm / spacing[2]]).astype(int) + 1, hu.shape)
    if np.any(hi - lo < 3):
        return None, 0.0
    sub = hu[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    soft = (sub > SOFT_TISSUE_HU[0]) & (sub < SOFT_TISSUE_HU[1])
    dist = np.mean(
        [ndimage.distance_transform_edt(soft[:, :, k], sampling=spacing[:2]) for k in range(soft.shape[2])], axis=0
    )
    ii, jj = np.indices(dist.shape)
    world = apply_affine(ct_affine, np.stack([ii + lo[0], jj + lo[1], np.full(ii.shape, c[2])], -1))
    inside = np.hypot(world[..., 0] - target[0], world[..., 1] - target[1]) <= search_mm
    dist[~inside] = 0.0
    if dist.max() <= 0:
        return None, 0.0
    top = dist >= dist.max() - 0.5 * spacing[:2].min()
    centre = world[top].mean(axis=0)
    centre[2] = target[2]
    return centre, float(dist.max())


def blood_pool(hu, ct_affine, suv, pet_affine, *, offset_mm=(25.0, -30.0), search_mm=15.0, min_radius_mm=7.0, where=""):
    """Find the blood-pool VOI and measure its SUV.

    Parameters
    ----------
    hu, ct_affine : CT volume (HU) and its voxel->LPS affine.
    suv, pet_affine : PET volume (SUVbw) and its voxel->LPS affine (same frame of reference).
    offset_mm : (x, y) offset of the aorta from the vertebral centre, LPS mm
        (+x = patient left, -y = anterior).
    min_radius_mm : the aorta's lumen must be at least this wide on the CT.

    Returns
    -------
    dict
        ``suvmean``, ``suvsd``, ``n_voxels``, ``centre_lps``, ``lumen_radius_mm``, ``source``.
    """
    vc = vertebral_centre(hu, ct_affine)
    if vc is None:
        raise DualpetInputError(f"{where}: blood pool not found: no thoracic level with lungs and spine on the CT")
    centre, radius = aorta_centre(hu, ct_affine, vc, offset_mm=offset_mm, search_mm=search_mm)
    if centre is None or radius < min_radius_mm:
        raise DualpetInputError(
            f"{where}: blood pool not found: no round soft-tissue structure (aorta) of radius >= "
            f"{min_radius_mm} mm left-anterior of the spine on the CT"
        )
    source = "bloodpool:auto (descending aorta located on CT from the spine; 10 mm x 20 mm cylinder)"
    return {**_measure(suv, pet_affine, centre, source, "bloodpool", where), "lumen_radius_mm": radius}


#: Radius (mm) of the liver background sphere (3 cm diameter).
LIVER_RADIUS_MM = 15.0


#: In-plane voxel size (mm) the liver search works at: block averages of finer CT pixels
#: (a 512 x 512 clinical CT is searched at ~3 mm, 9x fewer voxels, same organ).
COARSE_MM = 3.0


def coarse_ct(hu, ct_affine, target_mm=COARSE_MM):
    """In-plane block average of a CT to about ``target_mm`` pixels, and its affine."""
    sp = voxel_spacing(ct_affine)
    f = [max(int(round(target_mm / sp[a])), 1) for a in (0, 1)]
    if f == [1, 1]:
        return hu, np.asarray(ct_affine, dtype=float)
    ni, nj = hu.shape[0] // f[0] * f[0], hu.shape[1] // f[1] * f[1]
    out = hu[:ni, :nj].reshape(ni // f[0], f[0], nj // f[1], f[1], hu.shape[2]).mean(axis=(1, 3), dtype=np.float32)
    scale = np.diag([f[0], f[1], 1.0, 1.0])
    scale[:2, 3] = [(f[0] - 1) / 2.0, (f[1] - 1) / 2.0]
    return out, np.asarray(ct_affine, dtype=float) @ scale


def liver_centre(hu, ct_affine):
    """LPS centre for the liver background sphere inside the right lobe, from the CT.

    The liver is the large organ of liver density (``LIVER_HU``, non-contrast CT) on the patient's right under the
    right hemidiaphragm: below the lowest point of the right lung and within 150 mm of it,
    right of the body's midline. The centre is the point deepest inside that soft tissue
    (3-D distance transform), which keeps the sphere off vessels, fat and the organ's edge.

    Returns (centre or None, depth in mm).
    """
    return _liver_search(hu, ct_affine)[:2]


def _liver_search(hu, ct_affine):
    """:func:`liver_centre` plus the smoothed CT it searched (None if it stopped early)."""
    spacing = voxel_spacing(ct_affine)
    body = hu > BODY_HU_MIN
    filled = np.stack([ndimage.binary_fill_holes(body[:, :, k]) for k in range(hu.shape[2])], axis=2)
    lung = filled & (hu < LUNG_HU_MAX)
    if not lung.any():
        return None, 0.0, None
    ii, jj, kk = np.nonzero(filled)
    mid_i = ii.mean()
    # the patient's right is -x in LPS: the columns on the side of decreasing x
    right = apply_affine(ct_affine, [[0, 0, 0], [1, 0, 0]])
    right_is_low_i = right[1, 0] > right[0, 0]
    lung_right = lung.copy()
    cols = np.arange(hu.shape[0])
    lung_right[(cols > mid_i) if right_is_low_i else (cols < mid_i)] = False
    if not lung_right.any():
        return None, 0.0, None
    z_of_k = apply_affine(ct_affine, np.stack([np.zeros(hu.shape[2]), np.zeros(hu.shape[2]), np.arange(hu.shape[2])], 1))[:, 2]
    dome_z = z_of_k[np.nonzero(lung_right.any(axis=(0, 1)))[0]].min()
    band = (z_of_k < dome_z - 5.0) & (z_of_k > dome_z - 150.0)
    # non-contrast liver (~55-65 HU) is denser than muscle (~45 HU) and spleen; the
    # smoothing keeps CT noise from breaking the organ into pieces
    smooth = ndimage.gaussian_filter(hu.astype(np.float32), 1.0)
    soft = filled & (smooth > LIVER_HU[0]) & (smooth < LIVER_HU[1])
    soft[:, :, ~band] = False
    soft[(cols > mid_i - 10) if right_is_low_i else (cols < mid_i + 10)] = False
    if not soft.any():
        return None, 0.0, None
    depth = ndimage.distance_transform_edt(soft, sampling=spacing)
    k = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return apply_affine(ct_affine, k), float(depth[k]), smooth


#: Plausible liver volumes (mL); a mask outside this range is not trusted for labels.
LIVER_ML = (600.0, 4000.0)


def liver_mask(hu, ct_affine):
    """The liver on the CT, or None: ``(mask, affine)`` on the in-plane coarsened CT grid
    (:func:`coarse_ct`); the connected liver-density tissue around :func:`liver_centre`,
    closed and hole-filled slice by slice so that hypodense metastases belong to it. None
    if no liver is found or the mask's volume is implausible (``LIVER_ML``: it leaked into
    touching organs of similar density, or only a fragment was found)."""
    hu, ct_affine = coarse_ct(hu, ct_affine)
    centre, depth, smooth = _liver_search(hu, ct_affine)
    if centre is None or depth < LIVER_RADIUS_MM:
        return None
    dense = (smooth > LIVER_HU[0]) & (smooth < LIVER_HU[1])
    comps, _ = ndimage.label(dense)
    seed = tuple(int(round(v)) for v in world_to_voxel(ct_affine, centre))
    if not comps[seed]:
        return None
    organ = comps == comps[seed]
    radius = np.maximum(np.rint(6.0 / voxel_spacing(ct_affine)[:2]).astype(int), 1)
    disk = np.zeros((2 * radius[0] + 1, 2 * radius[1] + 1), dtype=bool)
    yy, xx = np.ogrid[-radius[0] : radius[0] + 1, -radius[1] : radius[1] + 1]
    disk[(yy / radius[0]) ** 2 + (xx / radius[1]) ** 2 <= 1.0] = True
    for k in np.flatnonzero(organ.any(axis=(0, 1))):
        closed = ndimage.binary_closing(organ[:, :, k], structure=disk, border_value=0)
        organ[:, :, k] = ndimage.binary_fill_holes(closed)
    volume_ml = organ.sum() * float(np.prod(voxel_spacing(ct_affine))) / 1000.0
    if not LIVER_ML[0] <= volume_ml <= LIVER_ML[1]:  # leaked into neighbours, or a fragment
        return None
    return organ, ct_affine


def liver(hu, ct_affine, suv, pet_affine, *, where=""):
    """Liver background: SUVmean in a 3 cm sphere in the right lobe (found by :func:`liver_centre`
    on the coarsened CT)."""
    centre, depth = liver_centre(*coarse_ct(hu, ct_affine))
    if centre is None or depth < LIVER_RADIUS_MM:
        raise DualpetInputError(
            f"{where}: liver background not found: no soft-tissue region under the right lung deep enough "
            f"for a {2 * LIVER_RADIUS_MM:.0f} mm sphere on the CT"
        )
    source = "liver:auto (right lobe below the right lung base, 30 mm sphere)"
    return _measure(suv, pet_affine, centre, source, "liver", where)


def _measure(suv, pet_affine, centre, source, method, where=""):
    """SUV statistics in the method's VOI at ``centre`` (LPS mm), on the PET's own voxels:
    blood pool, a 10 mm x 20 mm z-cylinder; liver, a 30 mm sphere."""
    centre = np.asarray(centre, dtype=float)
    if method == "liver":
        vals = values_in_ball(suv, pet_affine, centre, LIVER_RADIUS_MM)
    else:
        vals = suv[_cylinder_mask(suv.shape, pet_affine, centre, 5.0, 10.0)]
    if vals.size == 0:
        prefix = f"{where}: " if where else ""
        raise DualpetInputError(f"{prefix}background VOI at {np.round(centre, 1).tolist()} lies outside the PET")
    return _statistics(vals, centre, source)


def _statistics(vals, centre, source):
    return {
        "suvmean": float(vals.mean()),
        "suvsd": float(vals.std(ddof=1)) if vals.size > 1 else 0.0,
        "n_voxels": int(vals.size),
        "centre_lps": [float(v) for v in centre],
        "source": source,
    }


def measure_at(suv, pet_affine, centre, method="bloodpool"):
    """Background VOI at given coordinates (from the studies sheet): the method's VOI shape
    (blood pool: 10 mm x 20 mm z-cylinder; liver: 30 mm sphere) centred there."""
    shape = "30 mm sphere" if method == "liver" else "10 mm x 20 mm cylinder"
    return _measure(suv, pet_affine, centre, f"{method}:sheet coordinates ({shape})", method)


def measure_mask(suv, pet_affine, voi, *, where=""):
    """Background from a mask given in the studies sheet (``voi``: bool on the PET grid)."""
    vals = suv[voi]
    if vals.size == 0:
        raise DualpetInputError(f"{where}: no voxel of the mask lies inside the PET")
    centre = apply_affine(pet_affine, np.argwhere(voi).mean(axis=0))
    return _statistics(vals, centre, f"mask:sheet ({vals.size} PET voxels)")
