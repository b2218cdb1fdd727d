"""Background (reference region) VOIs from the study's organ label map.

``bloodpool`` (the default): a cylinder of 10 mm diameter and 20 mm length (the
EANM/PERCIST blood-pool VOI) on the centre line of the descending thoracic aorta of the
organ map (:mod:`dualpet.anatomy`), where its lumen is wide enough and free of calcified
plaque, else of the abdominal aorta (:data:`BLOODPOOL_SEGMENTS`); ``liver``: a 30 mm sphere in the liver's right lobe, clear of lesions (the
median-SUV one of several candidates deep in the label). The configured region is
used if the field of view holds it, else the other one (recorded). The SUVmean is measured
on the PET's own voxels. A VOI given in the studies sheet (coordinates or a mask) replaces
the search.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dualpet.anatomy import organ_voxels
from dualpet.errors import DualpetInputError
from dualpet.geometry import apply_affine, box_around, values_in_ball, voxel_spacing, world_to_voxel

#: Radius (mm) of the liver background sphere (3 cm diameter).
LIVER_RADIUS_MM = 15.0
#: Candidate liver spheres keep this far (mm) inside the label beyond their radius (PET
#: blur and registration error), and this far (mm) from each other.
LIVER_MARGIN_MM, LIVER_CANDIDATE_SPACING_MM = 5.0, 20.0
#: Blood-pool VOI: a z-aligned cylinder of this radius and half length (mm), 10 mm x 20 mm.
BLOODPOOL_RADIUS_MM, BLOODPOOL_HALF_LENGTH_MM = 5.0, 10.0
#: The aortic lumen must be this wide (mm) where the VOI sits: VOI radius plus 2 mm clear
#: of the wall, where partial volume with the wall and PET blur would lower the mean.
MIN_LUMEN_RADIUS_MM = BLOODPOOL_RADIUS_MM + 2.0
#: Where the blood-pool VOI is placed, in this order: the descending thoracic aorta (the
#: EANM/PERCIST reference), else the abdominal aorta above the bifurcation (a field of view
#: without the chest); the liver is the fallback of the other method.
BLOODPOOL_SEGMENTS = ("thoracic", "abdominal")
#: Calcified plaque in the lumen (HU on the CT, after a 1 mm smoothing): plain CT, and
#: contrast-enhanced CT (where the lumen itself reaches 400 HU).
CALCIFIED_HU = {"plain": 300.0, "enhanced": 700.0}


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


def _aorta_levels(labels, ct_affine, hu, segment="thoracic"):
    """Candidate blood-pool VOI centres in the descending aorta of a label map, its
    ``segment`` "thoracic" (slices holding aorta and lung) or "abdominal" (aorta without
    lung): per CT slice the aorta's deepest point and equivalent lumen radius; a level qualifies
    if every slice within the VOI's half length has a lumen of at least MIN_LUMEN_RADIUS_MM
    and no calcified plaque lies within the VOI. Ordered from the middle of the segment
    outwards. Returns (list of (centre, radius), reason if none)."""
    aorta = organ_voxels(labels, "aorta")
    sp = voxel_spacing(ct_affine)
    if not aorta.any():
        return [], f"no {segment} aorta in the organ map"
    # the rest is read in the aorta's box (the map is on the CT's grid: 78 M voxels)
    bi, bj, bk = box_around(aorta)
    boxed = aorta[bi, bj, bk]
    planes = [
        k
        for k in np.flatnonzero(boxed.any(axis=(0, 1))) + bk.start
        if bool(organ_voxels(labels[:, :, k], "lung_left", "lung_right").any()) == (segment == "thoracic")
    ]
    if not planes:
        return [], f"no {segment} aorta in the organ map"
    # each plane's lumen within the aorta's in-plane box and a one-voxel rim of background
    # (the nearest background of a lumen voxel lies there: the same depths as on the slice)
    offset = np.array([bi.start - 1, bj.start - 1])
    info = {}
    for k in planes:
        # the lumen's centre is its point deepest inside the label (a centroid is pulled by
        # partial-volume voxels at its edge), its radius that of a disk of its area
        lumen = boxed[:, :, k - bk.start]
        depth = ndimage.distance_transform_edt(np.pad(lumen, 1), sampling=sp[:2])
        i, j = np.unravel_index(int(np.argmax(depth)), depth.shape)
        top = np.argwhere(depth >= depth[i, j] - 1e-6) + offset  # a plateau of equally deep points: its middle
        info[k] = (
            apply_affine(ct_affine, [*top.mean(axis=0), k]),
            float(np.sqrt(lumen.sum() * sp[0] * sp[1] / np.pi)),
        )
    half = int(np.ceil(BLOODPOOL_HALF_LENGTH_MM / sp[2]))
    enhanced = float(np.median(hu[bi, bj, bk][boxed])) > 120.0
    limit = CALCIFIED_HU["enhanced" if enhanced else "plain"]
    mid = np.median(planes)
    levels, why = [], f"no 20 mm stretch of {segment} aorta with a lumen of at least {MIN_LUMEN_RADIUS_MM:g} mm radius"
    for k in sorted(planes, key=lambda k: abs(k - mid)):
        span = range(k - half, k + half + 1)
        if not all(j in info and info[j][1] >= MIN_LUMEN_RADIUS_MM for j in span):
            continue
        centre = np.mean([info[j][0] for j in span], axis=0)
        cyl = _cylinder_mask(hu.shape, ct_affine, centre, BLOODPOOL_RADIUS_MM + 1.0, BLOODPOOL_HALF_LENGTH_MM)
        box = tuple(slice(max(int(v.min()) - 2, 0), int(v.max()) + 3) for v in cyl)
        smooth = ndimage.gaussian_filter(hu[box].astype(np.float32), 1.0 / sp)
        if np.any(smooth[tuple(v - b.start for v, b in zip(cyl, box))] > limit):
            why = f"the {segment} aorta's lumen holds calcified plaque wherever it is wide enough"
            continue
        levels.append((centre, float(np.mean([info[j][1] for j in span]))))
        if len(levels) >= 3:
            break
    return levels, (None if levels else why)


def liver_centres(labels, ct_affine):
    """Candidate centres (LPS) of the liver sphere: points of the liver label's right half at
    least LIVER_RADIUS_MM + LIVER_MARGIN_MM inside the label (3-D distance on a ~3 mm
    subsample), spread LIVER_CANDIDATE_SPACING_MM apart, deepest first; at least the
    deepest point if it holds the sphere. (None, reason) if the liver is too thin."""
    sp = voxel_spacing(ct_affine)
    f = np.maximum(np.rint(3.0 / sp).astype(int), 1)
    f[2] = 1 if sp[2] >= 2.0 else f[2]
    liver = organ_voxels(labels[:: f[0], :: f[1], :: f[2]], "liver")
    if not liver.any():
        return None, "no liver in the organ map"
    # the depth in the liver's box one voxel wider: its rim is outside the liver, so no
    # voxel outside the box is nearer (0 outside the liver, as the whole grid's transform)
    depth = np.zeros(liver.shape)
    box = box_around(liver, 1)
    depth[box] = ndimage.distance_transform_edt(liver[box], sampling=sp * f)
    # the right lobe (the thickest part): the half of the label on the patient's right, so
    # that tissue of similar density grown into (heart, stomach) never holds the sphere
    x = apply_affine(
        ct_affine, np.stack([np.arange(liver.shape[0]) * f[0], np.zeros(liver.shape[0]), np.zeros(liver.shape[0])], 1)
    )[:, 0]
    right = x <= np.median(x[np.nonzero(liver)[0]])
    depth[~right] = 0.0
    k = np.unravel_index(int(np.argmax(depth)), depth.shape)
    if depth[k] < LIVER_RADIUS_MM:
        return None, f"the liver in the field of view is too thin for a {2 * LIVER_RADIUS_MM:.0f} mm sphere"
    ijk = np.argwhere(depth >= LIVER_RADIUS_MM + LIVER_MARGIN_MM)
    ijk = ijk[np.argsort(-depth[tuple(ijk.T)], kind="stable")]
    pts = apply_affine(ct_affine, ijk * f) if len(ijk) else np.empty((0, 3))
    chosen = [apply_affine(ct_affine, np.array(k) * f)]
    # greedy: deepest first, each at least the spacing from those chosen
    blocked = np.linalg.norm(pts - chosen[0], axis=1) < LIVER_CANDIDATE_SPACING_MM
    while not blocked.all():
        chosen.append(pts[int(np.argmin(blocked))])
        blocked |= np.linalg.norm(pts - chosen[-1], axis=1) < LIVER_CANDIDATE_SPACING_MM
    return chosen, None


def _liver_voi(suv, pet_affine, centres, where):
    """The liver sphere among the candidates whose SUVmean is the candidates' median: a
    lesion (hot or cold) moves the spheres that hold it away from the median, normal
    parenchyma does not (PERCIST: a VOI in normal-appearing liver)."""
    stats = [_measure(suv, pet_affine, c, "", "liver", where) for c in centres]
    means = np.array([st["suvmean"] for st in stats])
    best = int(np.argmin(np.abs(means - np.median(means))))
    out = stats[best]
    out["source"] = (
        f"liver:anatomy (30 mm sphere in the liver label's right lobe, the median-SUV one of "
        f"{len(centres)} candidate{'s' if len(centres) != 1 else ''})"
    )
    out["candidates"] = len(centres)
    return out


def background_from_anatomy(labels, ct_affine, hu, suv, pet_affine, method="bloodpool", *, fallback=True, where=""):
    """Background VOI from the study's organ label map (:mod:`dualpet.anatomy`).

    ``bloodpool``: a 10 mm x 20 mm z-cylinder on the descending aorta's centre line, at
    the level nearest the middle of its thoracic segment (else its abdominal one) where the
    lumen is wide enough (:data:`MIN_LUMEN_RADIUS_MM`) and free of calcified plaque. ``liver``: a 30 mm
    sphere in the liver's right lobe, the median-SUV one of candidates spread through it
    (a lesion in one sphere does not bias the background). If the configured region is not available and
    ``fallback`` is set, the other one is used and the result says so (``fallback``);
    if neither is, the error names both reasons.
    """
    reasons = {}
    order = [method] + ([m for m in ("bloodpool", "liver") if m != method] if fallback else [])
    for m in order:
        if m == "bloodpool":
            out, why = _bloodpool(labels, ct_affine, hu, suv, pet_affine, where)
        else:
            centres, why = liver_centres(labels, ct_affine)
            if centres is not None:
                out = _liver_voi(suv, pet_affine, centres, where)
        if why is None:
            out["region"] = m
            if m != method:
                out["fallback"] = f"{method} not available ({reasons[method]}): {m} used instead"
            return out
        reasons[m] = why
    detail = "; ".join(f"{m}: {r}" for m, r in reasons.items())
    raise BackgroundNotFound(
        f"{where}: no background region found ({detail})", f"no background region found ({detail})"
    )


class BackgroundNotFound(DualpetInputError):
    """No background region in the study (``reason``: why, without the study's name). Only
    what needs a background fails with it (TBR, the threshold method 'background')."""

    def __init__(self, message, reason):
        super().__init__(message)
        self.reason = reason


def no_background(reason):
    """The background record of a study without one: every metric but TBR stands; TBR is
    left empty and ``missing`` says why."""
    return {"suvmean": None, "suvsd": None, "n_voxels": 0, "centre_lps": None, "source": "", "missing": reason}


def study_background(
    organ_ct, ct_affine, hu_ct, suv, pet_affine, method, *, mask=None, at=None, needed=False, where=""
):
    """A study's background VOI, as the studies sheet and the config choose it: the sheet's
    ``mask`` (a NIfTI file, any grid) or ``at`` (a centre in LPS mm), else the search in
    the organ map (:func:`background_from_anatomy`, ``method``: ``bloodpool`` or
    ``liver``). A study without one keeps every metric but TBR (:func:`no_background`)
    unless the background is ``needed`` (the threshold method ``background``).

    Returns (the background record, its VOI on the PET grid when it came from a mask, else
    None)."""
    if mask:
        from dualpet.nifti import labels_on_grid

        voi = labels_on_grid(mask, suv.shape, pet_affine, "background mask") != 0
        return measure_mask(suv, pet_affine, voi, where=f"{where}: background mask (studies sheet)"), voi
    if at is not None:
        return measure_at(suv, pet_affine, at, method), None
    try:
        return background_from_anatomy(organ_ct, ct_affine, hu_ct, suv, pet_affine, method, where=where), None
    except BackgroundNotFound as exc:  # a cropped image, no aorta or liver in view: TBR only is lost
        if needed:
            raise DualpetInputError(
                f"{exc}; detection method 'background' needs one (its threshold is a multiple of the background)"
            ) from None
        return no_background(exc.reason), None


def _bloodpool(labels, ct_affine, hu, suv, pet_affine, where):
    """The blood-pool VOI in the first segment of BLOODPOOL_SEGMENTS the organ map's aorta
    offers; (result, None) or (None, why neither does). A VOI in the abdominal aorta says
    why the thoracic one was not used (``fallback``)."""
    reasons = []
    for segment in BLOODPOOL_SEGMENTS:
        levels, why = _aorta_levels(labels, ct_affine, hu, segment)
        if levels:
            centre, radius = levels[0]
            src = f"bloodpool:anatomy (descending {segment} aorta of the organ map; 10 mm x 20 mm cylinder)"
            out = {**_measure(suv, pet_affine, centre, src, "bloodpool", where), "lumen_radius_mm": radius}
            if reasons:
                out["fallback"] = f"{'; '.join(reasons)}: the {segment} aorta used instead"
            return out, None
        reasons.append(why)
    return None, "; ".join(reasons)


def _measure(suv, pet_affine, centre, source, method, where=""):
    """SUV statistics in the method's VOI at ``centre`` (LPS mm), on the PET's own voxels:
    blood pool, a 10 mm x 20 mm z-cylinder; liver, a 30 mm sphere."""
    centre = np.asarray(centre, dtype=float)
    if method == "liver":
        vals = values_in_ball(suv, pet_affine, centre, LIVER_RADIUS_MM)
    else:
        vals = suv[_cylinder_mask(suv.shape, pet_affine, centre, BLOODPOOL_RADIUS_MM, BLOODPOOL_HALF_LENGTH_MM)]
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


def voi_shape(record):
    """The shape of a background record's VOI, for pictures: ``("sphere", radius_mm)`` for the
    liver, ``("cylinder", radius_mm, half_length_mm)`` for the blood pool (z-aligned), None
    for a mask from the sheet or no background. The region is the record's ``region``, else
    the method its ``source`` starts with (``liver:...``, ``bloodpool:...``).

    >>> voi_shape({"source": "liver:sheet coordinates (30 mm sphere)"})
    ('sphere', 15.0)
    >>> voi_shape({"source": "bloodpool:thoracic aorta", "region": "bloodpool"})
    ('cylinder', 5.0, 10.0)
    """
    region = record.get("region") or str(record.get("source", "")).split(":", 1)[0]
    if region == "liver":
        return ("sphere", LIVER_RADIUS_MM)
    if region == "bloodpool":
        return ("cylinder", BLOODPOOL_RADIUS_MM, BLOODPOOL_HALF_LENGTH_MM)
    return None


def measure_mask(suv, pet_affine, voi, *, where=""):
    """Background from a mask given in the studies sheet (``voi``: bool on the PET grid)."""
    vals = suv[voi]
    if vals.size == 0:
        raise DualpetInputError(f"{where}: no voxel of the mask lies inside the PET")
    centre = apply_affine(pet_affine, np.argwhere(voi).mean(axis=0))
    return _statistics(vals, centre, f"mask:sheet ({vals.size} PET voxels)")
