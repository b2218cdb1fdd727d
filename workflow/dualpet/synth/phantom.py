"""Analytic torso phantom: anatomy, physiological uptake and lesions.

The anatomy lives in its own frame ("anatomy coordinates"): LPS-oriented, mm, origin on
the body axis at the level of the diaphragm. A study places it in the scanner with a rigid
pose ``world = R @ a + t`` (world = that study's DICOM patient coordinates, LPS mm).

Shapes are painted in order (later shapes overwrite earlier ones), so a label map can be
evaluated at any set of points (:meth:`Phantom.labels_at`), which is what both the
renderer (on voxel centres) and the lesion placement (on test points) use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Tissue labels. Lesions get LESION_BASE + index.
AIR, FAT, MUSCLE, LUNG, LIVER, SPLEEN, KIDNEY, BLADDER = 0, 1, 2, 3, 4, 5, 6, 7
MYOCARDIUM, BLOOD, BONE, MARROW, TABLE, PAD = 8, 9, 10, 11, 12, 13
LESION_BASE = 100
TISSUES = {
    AIR: "air", FAT: "fat", MUSCLE: "muscle", LUNG: "lung", LIVER: "liver",
    SPLEEN: "spleen", KIDNEY: "kidney", BLADDER: "bladder", MYOCARDIUM: "myocardium",
    BLOOD: "blood", BONE: "bone", MARROW: "marrow", TABLE: "table", PAD: "pad",
}  # fmt: skip

#: CT numbers (HU) per tissue; lesions get their own (see :class:`Lesion`).
HU = {
    AIR: -1000.0, FAT: -100.0, MUSCLE: 45.0, LUNG: -840.0, LIVER: 62.0, SPLEEN: 50.0,
    KIDNEY: 32.0, BLADDER: 8.0, MYOCARDIUM: 45.0, BLOOD: 40.0, BONE: 750.0,
    MARROW: 230.0, TABLE: 250.0, PAD: -300.0,
}  # fmt: skip
#: The couch (fixed in the scanner): a curved carbon-fibre shell (TABLE) under a thin,
#: compressed mattress (PAD) on which the patient's back rests, as on real PET/CT couches.
COUCH = {"pad_mm": 3.0, "shell_mm": 6.0, "curvature_radius_mm": 600.0, "half_width_mm": 230.0}

#: Physiological uptake (SUVbw of the tissue, before partial volume), population medians.
#: FDG: liver ~2, myocardium variable, renal excretion into kidneys and bladder.
#: Pentixafor (CXCR4): spleen and marrow high, renal excretion, low myocardium.
UPTAKE = {
    "fdg": {
        FAT: 0.35, MUSCLE: 0.8, LUNG: 0.45, LIVER: 2.2, SPLEEN: 1.8, KIDNEY: 3.8,
        BLADDER: 25.0, MYOCARDIUM: 5.0, BLOOD: 1.7, BONE: 0.5, MARROW: 1.6,
    },
    "pentixafor": {
        FAT: 0.3, MUSCLE: 0.7, LUNG: 0.5, LIVER: 1.6, SPLEEN: 5.5, KIDNEY: 4.0,
        BLADDER: 18.0, MYOCARDIUM: 1.5, BLOOD: 1.8, BONE: 0.5, MARROW: 2.3,
    },
}  # fmt: skip

#: Radionuclide of each tracer the generator knows.
TRACER_NUCLIDE = {"fdg": "F-18", "pentixafor": "Ga-68"}

#: Lesion tissue on CT (HU) per region.
LESION_HU = {"liver": 38.0, "lymph node": 35.0, "bone": 420.0, "lung": 30.0}

#: Hot organs a lesion must keep clear of (mm), so that truth is not confounded by spill-in.
HOT_ORGANS = (KIDNEY, BLADDER, MYOCARDIUM, SPLEEN)


@dataclass
class Shape:
    """A solid in anatomy coordinates: ellipsoid or z-aligned elliptic cylinder."""

    label: int
    center: np.ndarray
    semi: np.ndarray  # semi-axes (mm); for a cylinder semi[2] is the half length
    kind: str = "ellipsoid"  # or "cylinder"
    rotation: np.ndarray | None = None  # 3x3, shape frame -> anatomy frame
    replaces: frozenset | None = None  # paint only over these labels (None: over anything)

    def bbox(self):
        """Axis-aligned bounding box in anatomy coordinates (lo, hi)."""
        if self.rotation is None:
            ext = self.semi
        else:
            ext = np.abs(self.rotation) @ self.semi
        return self.center - ext, self.center + ext

    def contains(self, a):
        """Boolean mask of the points ``a`` (N, 3) inside the shape."""
        d = a - self.center
        if self.rotation is not None:
            d = d @ self.rotation  # into the shape frame
        q = d / self.semi
        if self.kind == "ellipsoid":
            return np.einsum("ij,ij->i", q, q) <= 1.0
        return (q[:, 0] ** 2 + q[:, 1] ** 2 <= 1.0) & (np.abs(q[:, 2]) <= 1.0)


@dataclass
class Lesion:
    """A spherical lesion with per-tracer uniform uptake (SUVbw)."""

    id: str
    region: str
    center: np.ndarray  # anatomy coordinates, mm
    radius: float  # mm
    suv: dict  # tracer -> true SUVbw of the lesion tissue
    category: str  # "both", "reference_only", "index_only"


@dataclass
class Phantom:
    """One patient's anatomy, physiology and lesions."""

    shapes: list
    uptake: dict  # tracer -> {label: SUV}
    lesions: list = field(default_factory=list)
    body_semi: tuple = (165.0, 115.0)
    landmarks: dict = field(default_factory=dict)

    def lesion_shapes(self):
        return [
            Shape(LESION_BASE + i, les.center, np.full(3, les.radius))
            for i, les in enumerate(self.lesions)
        ]

    def all_shapes(self, with_lesions=True):
        return self.shapes + (self.lesion_shapes() if with_lesions else [])

    def labels_at(self, a, with_lesions=True):
        """Tissue label at anatomy points ``a`` (N, 3)."""
        a = np.asarray(a, dtype=float).reshape(-1, 3)
        lab = np.zeros(len(a), dtype=np.int16)
        for shape in self.all_shapes(with_lesions):
            lo, hi = shape.bbox()
            sel = np.all((a >= lo) & (a <= hi), axis=1)
            if sel.any():
                idx = np.flatnonzero(sel)
                idx = idx[shape.contains(a[idx])]
                if shape.replaces is not None:
                    idx = idx[np.isin(lab[idx], list(shape.replaces))]
                lab[idx] = shape.label
        return lab

    def suv_of_labels(self, labels, tracer):
        """True SUV per label for ``tracer`` (lesions included)."""
        lut = np.zeros(LESION_BASE + max(len(self.lesions), 1), dtype=np.float32)
        for lab, val in self.uptake[tracer].items():
            lut[lab] = val
        for i, les in enumerate(self.lesions):
            lut[LESION_BASE + i] = les.suv[tracer]
        return lut[labels]


def make_anatomy(rng):
    """Sample one patient's anatomy (organ sizes and positions vary by ~10 %).

    Returns the list of shapes in paint order and a dict of landmarks used for lesion
    placement and for truth (aorta axis, spine axis, liver centre).
    """
    s = rng.uniform(0.92, 1.08, size=3)  # body scale per axis
    j = lambda scale=8.0: rng.uniform(-scale, scale, size=3)  # noqa: E731 organ position jitter
    g = lambda: rng.uniform(0.9, 1.1, size=3)  # noqa: E731 organ size factor

    bx, by = 165.0 * s[0], 115.0 * s[1]
    zlen = 1000.0
    shapes = [
        Shape(FAT, np.array([0.0, 0.0, 0.0]), np.array([bx, by, zlen]), "cylinder"),
        Shape(MUSCLE, np.array([0.0, 0.0, 0.0]), np.array([bx - 16, by - 14, zlen]), "cylinder"),
    ]
    lung_semi = np.array([58.0, 72.0, 115.0]) * g()
    for side in (-1, 1):
        c = np.array([side * 78.0, 8.0, 95.0]) + j()
        shapes.append(Shape(LUNG, c, lung_semi * np.array([1, 1, 1]), "ellipsoid"))
    liver_c = np.array([-58.0, 5.0, -35.0]) + j()
    liver_semi = np.array([88.0, 76.0, 72.0]) * g()
    shapes.append(Shape(LIVER, liver_c, liver_semi))
    spleen_c = np.array([92.0, 48.0, -30.0]) + j(6)
    shapes.append(Shape(SPLEEN, spleen_c, np.array([34.0, 26.0, 50.0]) * g()))
    kid_semi = np.array([27.0, 24.0, 52.0]) * g()
    for side in (-1, 1):
        c = np.array([side * 68.0, 62.0, -105.0 + (8 if side < 0 else 0)]) + j(5)
        shapes.append(Shape(KIDNEY, c, kid_semi))
    # Heart: myocardial ellipsoid with a blood-filled cavity, tilted towards the left.
    heart_c = np.array([22.0, -30.0, 45.0]) + j(6)
    heart_rot = _rot_z(np.deg2rad(30.0)) @ _rot_x(np.deg2rad(-20.0))
    heart_semi = np.array([58.0, 46.0, 50.0]) * g()
    shapes.append(Shape(MYOCARDIUM, heart_c, heart_semi, rotation=heart_rot))
    shapes.append(Shape(BLOOD, heart_c, heart_semi - 11.0, rotation=heart_rot))
    # Descending aorta: left-anterior of the vertebral bodies, from arch to bifurcation.
    spine_xy = np.array([0.0, 62.0]) * np.array([1.0, s[1]])
    aorta_xy = spine_xy + np.array([24.0, -32.0]) + rng.uniform(-3, 3, size=2)
    aorta_r = rng.uniform(11.0, 13.5)
    # The aorta runs in a sleeve of periaortic (mediastinal/retroperitoneal) fat.
    sleeve = aorta_r + rng.uniform(4.0, 7.0)
    shapes.append(Shape(FAT, np.array([*aorta_xy, -25.0]), np.array([sleeve, sleeve, 175.0]), "cylinder"))
    shapes.append(Shape(BLOOD, np.array([*aorta_xy, -25.0]), np.array([aorta_r, aorta_r, 175.0]), "cylinder"))
    # Spine: cortical vertebral bodies with marrow, posterior arch.
    shapes.append(Shape(BONE, np.array([*spine_xy, 0.0]), np.array([19.0, 17.0, zlen]), "cylinder"))
    shapes.append(Shape(MARROW, np.array([*spine_xy, 0.0]), np.array([15.5, 13.5, zlen]), "cylinder"))
    shapes.append(Shape(BONE, np.array([spine_xy[0], spine_xy[1] + 30.0, 0.0]), np.array([9.0, 12.0, zlen]), "cylinder"))
    # Bladder (urine) low in the pelvis.
    bladder_c = np.array([0.0, -45.0, -205.0]) + j(5)
    shapes.append(Shape(BLADDER, bladder_c, np.array([42.0, 32.0, 30.0]) * g()))
    arms = "down" if rng.uniform() < 0.5 else "up"  # arms up lie above the field of view
    if arms == "down":
        for side in (-1, 1):
            semi = np.array([40.0, 46.0]) * rng.uniform(0.9, 1.1, size=2)
            c = np.array([side * (bx + rng.uniform(4.0, 18.0) + semi[0]), rng.uniform(-10.0, 15.0), -80.0])
            shapes.append(Shape(FAT, c, np.array([*semi, 330.0]), "cylinder"))
            shapes.append(Shape(MUSCLE, c, np.array([*(semi - 8.0), 330.0]), "cylinder"))
            bone_c = c + np.array([side * -6.0, 0.0, 0.0])
            shapes.append(Shape(BONE, bone_c, np.array([12.0, 12.0, 330.0]), "cylinder"))
            shapes.append(Shape(MARROW, bone_c, np.array([7.0, 7.0, 330.0]), "cylinder"))
    landmarks = {
        "arms": arms,
        "aorta_xy": aorta_xy,
        "aorta_radius": aorta_r,
        "aorta_z": (-200.0, 150.0),
        "spine_xy": spine_xy,
        "liver_center": liver_c,
        "liver_semi": liver_semi,
        "lung_centers": [sh.center for sh in shapes if sh.label == LUNG],
        "lung_semi": lung_semi,
    }
    return shapes, landmarks, (bx, by)


def _rot_x(t):
    return np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])


def _rot_z(t):
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])


def sample_uptake(rng, tracers):
    """Per-patient physiological SUVs.

    Population medians x a patient-wide factor (body habitus, glucose, uptake time;
    log-normal, sigma 0.15) x an organ factor (log-normal, sigma 0.08), both truncated at
    2 sigma so that organ ratios such as liver/blood stay physiological.
    """

    def factor(sigma):
        return float(np.exp(np.clip(rng.normal(0.0, sigma), -2 * sigma, 2 * sigma)))

    out = {}
    for tracer in tracers:
        base = UPTAKE[tracer]
        patient_factor = factor(0.15)
        out[tracer] = {lab: v * patient_factor * factor(0.08) for lab, v in base.items()}
        if tracer == "fdg":  # myocardial FDG uptake varies a lot with diet and insulin
            out[tracer][MYOCARDIUM] = float(rng.uniform(2.0, 9.0))
    return out


#: Lesion mix like the motivating study: FDG-avid most, about 40 % Pentixafor-negative,
#: a few Pentixafor-only.
CATEGORY_P = {"both": 0.48, "reference_only": 0.42, "index_only": 0.10}
REGION_P = {"liver": 0.35, "lymph node": 0.35, "bone": 0.15, "lung": 0.15}


def sample_lesions(rng, phantom, tracers, n_lesions, z_range):
    """Place ``n_lesions`` non-overlapping lesions and draw their uptake.

    Lesions stay inside their host tissue, at least 8 mm apart from each other and at
    least 10 mm from hot physiological organs (kidneys, bladder, heart, spleen), and
    within ``z_range`` (anatomy z, mm) so that both studies' fields of view hold them.
    """
    ref, idx = tracers
    lesions = []
    attempts = 0
    while len(lesions) < n_lesions and attempts < 5000:
        attempts += 1
        region = str(rng.choice(list(REGION_P), p=list(REGION_P.values())))
        radius = float(4.0 + 16.0 * rng.beta(1.6, 3.0))
        center = _propose_center(rng, phantom, region, radius)
        if center is None or not (z_range[0] + radius <= center[2] <= z_range[1] - radius):
            continue
        if any(np.linalg.norm(center - o.center) < radius + o.radius + 8.0 for o in lesions):
            continue
        if not _site_ok(phantom, region, center, radius):
            continue
        category = rng.choice(list(CATEGORY_P), p=list(CATEGORY_P.values()))
        host = phantom.labels_at(center[None], with_lesions=False)[0]
        suv = {}
        for tracer in tracers:
            positive = category == "both" or (category == "reference_only") == (tracer == ref)
            if positive:
                median = 12.0 if tracer == ref else 7.0
                suv[tracer] = float(np.clip(rng.lognormal(np.log(median), 0.45), 4.0, 40.0))
            else:  # no specific uptake: the lesion looks like its host tissue
                suv[tracer] = float(phantom.uptake[tracer].get(host, 0.8) * rng.uniform(0.85, 1.25))
        lesions.append(Lesion("", region, center, radius, suv, str(category)))
    # IDs in a stable anatomical order (cranio-caudal, then left-right).
    lesions.sort(key=lambda les: (-les.center[2], les.center[0]))
    for i, les in enumerate(lesions):
        les.id = f"T{i + 1:02d}"
    return lesions


def _propose_center(rng, phantom, region, radius):
    lm = phantom.landmarks
    if region == "liver":
        return lm["liver_center"] + _in_unit_ball(rng) * np.maximum(lm["liver_semi"] - radius - 10.0, 1.0)
    if region == "lung":
        c = lm["lung_centers"][rng.integers(2)]
        return c + _in_unit_ball(rng) * np.maximum(lm["lung_semi"] - radius - 10.0, 1.0)
    if region == "bone":
        sx, sy = lm["spine_xy"]
        return np.array([sx + rng.uniform(-3, 3), sy + rng.uniform(-3, 3), rng.uniform(-180, 160)])
    # lymph node stations (anatomy coordinates): mediastinal, hilar, para-aortic, mesenteric
    ax, ay = lm["aorta_xy"]
    stations = [
        (np.array([0.0, -8.0, 125.0]), np.array([14.0, 8.0, 20.0])),
        (np.array([-5.0, 20.0, 100.0]), np.array([8.0, 6.0, 10.0])),
        (np.array([-42.0, 8.0, 75.0]), np.array([6.0, 8.0, 12.0])),
        (np.array([ax + 22.0, ay - 4.0, -70.0]), np.array([4.0, 6.0, 60.0])),
        (np.array([ax - 50.0, ay - 2.0, -80.0]), np.array([6.0, 6.0, 50.0])),
        (np.array([0.0, -50.0, -140.0]), np.array([35.0, 15.0, 25.0])),
    ]
    c, spread = stations[rng.integers(len(stations))]
    return c + rng.uniform(-1, 1, size=3) * spread


def _in_unit_ball(rng):
    while True:
        p = rng.uniform(-1, 1, size=3)
        if p @ p <= 1:
            return p


_HOSTS = {"liver": {LIVER}, "lung": {LUNG}, "bone": {MARROW, BONE}, "lymph node": {MUSCLE, FAT}}


def _site_ok(phantom, region, center, radius):
    """The lesion lies in its host tissue and keeps clear of hot organs and vessels."""
    dirs = _sphere_dirs()
    inner = center + dirs * radius
    if region == "bone":
        inner = center + dirs * min(radius, 8.0)
    labels = phantom.labels_at(np.vstack([center[None], inner]), with_lesions=False)
    if region == "bone":
        if labels[0] not in _HOSTS["bone"]:
            return False
    elif not set(labels.tolist()) <= _HOSTS[region]:
        return False
    outer = phantom.labels_at(center + dirs * (radius + 10.0), with_lesions=False)
    forbidden = set(HOT_ORGANS) | ({BLOOD} if region != "lung" else {BLOOD, MYOCARDIUM})
    return not (set(outer.tolist()) & forbidden)


def _sphere_dirs(n=60):
    """Roughly uniform unit vectors (Fibonacci sphere)."""
    k = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * k / n)
    theta = np.pi * (1 + 5**0.5) * k
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1)


def make_phantom(rng, tracers, n_lesions, z_range):
    """Sample a complete patient phantom."""
    shapes, landmarks, body = make_anatomy(rng)
    phantom = Phantom(shapes=shapes, uptake=sample_uptake(rng, tracers), body_semi=body, landmarks=landmarks)
    phantom.lesions = sample_lesions(rng, phantom, tracers, n_lesions, z_range)
    phantom.shapes += nodal_fat(phantom.lesions)
    return phantom


#: Thickness (mm) of the fat around a lymph node: nodal stations lie in mediastinal,
#: retroperitoneal and mesenteric fat, which the torso's muscle-density interior lacks.
NODAL_FAT_MM = 10.0


def nodal_fat(lesions):
    """Fat pads around the lymph-node lesions (painted over muscle only)."""
    return [
        Shape(FAT, les.center, np.full(3, les.radius + NODAL_FAT_MM), replaces=frozenset({MUSCLE}))
        for les in lesions
        if les.region == "lymph node"
    ]
