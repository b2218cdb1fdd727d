"""Analytic torso phantom: anatomy, physiological uptake and lesions.

The anatomy lives in its own frame ("anatomy coordinates"): LPS-oriented, mm, origin on
the body axis at the level of the diaphragm. A study places it in the scanner with a rigid
pose ``world = R @ a + t`` (world = that study's DICOM patient coordinates, LPS mm).

Shapes are painted in order (later shapes overwrite earlier ones), so a label map can be
evaluated at any set of points (:meth:`Phantom.labels_at`), which is what both the
renderer (on voxel centres) and the lesion placement (on test points) use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# Tissue labels. Lesions get LESION_BASE + index.
AIR, FAT, MUSCLE, LUNG, LIVER, SPLEEN, KIDNEY, BLADDER = 0, 1, 2, 3, 4, 5, 6, 7
MYOCARDIUM, BLOOD, BONE, MARROW, TABLE, PAD = 8, 9, 10, 11, 12, 13
AORTA, RENAL_PELVIS, BOWEL, BOWEL_HOT, BOWEL_GAS, BRAIN, METAL, RIB = 14, 15, 16, 17, 18, 19, 20, 21
LESION_BASE = 100
TISSUES = {
    AIR: "air", FAT: "fat", MUSCLE: "muscle", LUNG: "lung", LIVER: "liver",
    SPLEEN: "spleen", KIDNEY: "kidney", BLADDER: "bladder", MYOCARDIUM: "myocardium",
    BLOOD: "blood", BONE: "bone", MARROW: "marrow", TABLE: "table", PAD: "pad",
    AORTA: "aorta", RENAL_PELVIS: "renal pelvis", BOWEL: "bowel", BOWEL_HOT: "bowel (FDG-avid)",
    BOWEL_GAS: "bowel gas", BRAIN: "brain", METAL: "metal",
    RIB: "rib",
}  # fmt: skip

#: CT numbers (HU) per tissue on a non-contrast CT; lesions get their own (see :class:`Lesion`).
HU = {
    AIR: -1000.0, FAT: -100.0, MUSCLE: 45.0, LUNG: -840.0, LIVER: 62.0, SPLEEN: 50.0,
    KIDNEY: 32.0, BLADDER: 8.0, MYOCARDIUM: 45.0, BLOOD: 40.0, BONE: 750.0,
    MARROW: 230.0, TABLE: 250.0, PAD: -300.0, AORTA: 40.0, RENAL_PELVIS: 8.0, BOWEL: 35.0,
    BOWEL_HOT: 35.0, BOWEL_GAS: -1000.0, BRAIN: 35.0, METAL: 3000.0, RIB: 450.0,
}  # fmt: skip
#: Contrast-enhanced CT (late arterial to portal-venous phase): the tissues whose CT
#: numbers rise, as (lowest, highest) HU over studies. One enhancement level per study
#: (dose, timing, cardiac output) sets them all, so that they move together as in patients
#: (kidney cortex > spleen >= liver); the blood pool (aorta and heart cavities) varies most.
CONTRAST_HU = {
    BLOOD: (150.0, 400.0), LIVER: (95.0, 130.0), SPLEEN: (100.0, 140.0), KIDNEY: (150.0, 240.0),
    MYOCARDIUM: (80.0, 120.0), BOWEL: (60.0, 90.0), BOWEL_HOT: (60.0, 90.0),
}  # fmt: skip
#: The couch (fixed in the scanner): a curved carbon-fibre shell (TABLE) under a thin,
#: compressed mattress (PAD) on which the patient's back rests, as on real PET/CT couches.
COUCH = {"pad_mm": 3.0, "shell_mm": 6.0, "curvature_radius_mm": 600.0, "half_width_mm": 230.0}

#: Physiological uptake (SUVbw of the tissue, before partial volume), population medians.
#: FDG: liver ~2, brain high, myocardium variable (drawn per patient, 1.2-10), renal
#: excretion into kidneys, renal pelves and bladder, bowel from faint to avid.
#: Pentixafor (CXCR4): spleen and marrow high, renal excretion, low myocardium and brain.
UPTAKE = {
    "fdg": {
        FAT: 0.35, MUSCLE: 0.8, LUNG: 0.45, LIVER: 2.2, SPLEEN: 1.8, KIDNEY: 3.8,
        BLADDER: 25.0, MYOCARDIUM: 5.0, BLOOD: 1.7, AORTA: 1.7, BONE: 0.5, MARROW: 1.6,
        RENAL_PELVIS: 15.0, BOWEL: 1.3, BOWEL_HOT: 4.0, BRAIN: 8.0, RIB: 0.6,
    },
    "pentixafor": {
        FAT: 0.3, MUSCLE: 0.7, LUNG: 0.5, LIVER: 1.6, SPLEEN: 5.5, KIDNEY: 4.0,
        BLADDER: 18.0, MYOCARDIUM: 1.5, BLOOD: 1.8, AORTA: 1.8, BONE: 0.5, MARROW: 2.3,
        RENAL_PELVIS: 12.0, BOWEL: 1.2, BOWEL_HOT: 1.5, BRAIN: 0.25, RIB: 0.9,
    },
}  # fmt: skip

#: Organ names (those of :data:`dualpet.anatomy.ORGANS`) of the truth organ map, per
#: tissue label; a shape can name its organ itself (left and right lung, kidneys).
TISSUE_ORGAN = {
    LIVER: "liver", SPLEEN: "spleen", BLADDER: "urinary_bladder", MYOCARDIUM: "heart", BLOOD: "heart",
    AORTA: "aorta", BOWEL: "bowel", BOWEL_HOT: "bowel", BOWEL_GAS: "bowel", BRAIN: "brain",
}  # fmt: skip

#: Radionuclide of each tracer the generator knows.
TRACER_NUCLIDE = {"fdg": "F-18", "pentixafor": "Ga-68"}

#: Lesion tissue on CT (HU) per region.
LESION_HU = {"liver": 38.0, "lymph node": 35.0, "bone": 420.0, "lung": 30.0}

#: Hot organs a lesion must keep clear of (mm), so that truth is not confounded by spill-in.
HOT_ORGANS = (KIDNEY, BLADDER, MYOCARDIUM, SPLEEN, RENAL_PELVIS, BOWEL, BOWEL_HOT, BOWEL_GAS, BRAIN)


@dataclass
class Shape:
    """A solid in anatomy coordinates: ellipsoid or z-aligned elliptic cylinder."""

    label: int
    center: np.ndarray
    semi: np.ndarray  # semi-axes (mm); for a cylinder semi[2] is the half length
    kind: str = "ellipsoid"  # or "cylinder"
    rotation: np.ndarray | None = None  # 3x3, shape frame -> anatomy frame
    replaces: frozenset | None = None  # paint only over these labels (None: over anything)
    organ: str | None = None  # truth organ name if not that of the label (TISSUE_ORGAN)

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
    target_suvmax: dict | None = None  # a preset's drawn SUVmax per positive tracer (noiseless image peak)


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

    A trunk (skin fat over a muscle wall around a fat-filled abdominal cavity holding bowel
    loops, mediastinal fat in the chest), the organs, the spine, shoulders, neck and head
    (skull and brain), arms down beside the trunk or up beside the head, and in some
    patients a metal port in the chest wall.

    Returns the list of shapes in paint order and a dict of landmarks used for lesion
    placement and for truth (aorta axis, spine axis, liver centre).
    """
    s = rng.uniform(0.92, 1.08, size=3)  # body scale per axis
    j = lambda scale=8.0: rng.uniform(-scale, scale, size=3)  # noqa: E731 organ position jitter
    g = lambda: rng.uniform(0.9, 1.1, size=3)  # noqa: E731 organ size factor

    bx, by = 165.0 * s[0], 115.0 * s[1]
    lung_semi = np.array([58.0, 72.0, 115.0]) * g()
    # the lungs' outer edges stay 28-40 mm inside the skin (chest wall: fat, muscle, ribs)
    lung_c = [np.array([side * (bx - rng.uniform(28.0, 40.0) - lung_semi[0]), 8.0, 95.0]) + j() * [0, 1, 1] for side in (-1, 1)]
    lung_semi = _inside_chest_wall(lung_c, lung_semi, bx - 25.0, by - 25.0)
    shoulder = max(c[2] for c in lung_c) + lung_semi[2] + rng.uniform(20.0, 35.0)
    low = -1000.0  # the trunk runs on below every field of view
    trunk_c, trunk_h = (shoulder + low) / 2.0, (shoulder - low) / 2.0
    shapes = [
        Shape(FAT, np.array([0.0, 0.0, trunk_c]), np.array([bx, by, trunk_h]), "cylinder"),
        Shape(MUSCLE, np.array([0.0, 0.0, trunk_c]), np.array([bx - 16, by - 14, trunk_h]), "cylinder"),
        # mediastinal fat (the heart, aorta and lungs are painted over it)
        Shape(FAT, np.array([0.0, -12.0, 95.0]), np.array([42.0, 62.0, 105.0]), "cylinder"),
    ]
    # Ribs: 10 mm bone hoops in the chest wall every 25 mm from below the lungs' bases (the
    # lower ribs cover liver and spleen) to the shoulders, open at the back (they join the
    # spine beside it) and at the front (costal cartilage).
    lung_base = min(c[2] for c in lung_c) - lung_semi[2]
    for zr in np.arange(lung_base - 60.0, shoulder - 10.0, 25.0):
        shapes += [
            Shape(RIB, np.array([0.0, 0.0, zr]), np.array([bx - 18.0, by - 16.0, 5.0]), "cylinder", replaces=frozenset({MUSCLE})),
            Shape(MUSCLE, np.array([0.0, 0.0, zr]), np.array([bx - 25.0, by - 23.0, 5.0]), "cylinder", replaces=frozenset({RIB})),
            Shape(MUSCLE, np.array([0.0, by - 20.0, zr]), np.array([40.0, 30.0, 5.0]), "cylinder", replaces=frozenset({RIB})),
            Shape(MUSCLE, np.array([0.0, 20.0 - by, zr]), np.array([22.0, 30.0, 5.0]), "cylinder", replaces=frozenset({RIB})),
        ]  # fmt: skip
    # Neck and head: scalp over the skull over the brain.
    neck_c = np.array([0.0, 22.0, shoulder + 55.0])
    shapes.append(Shape(FAT, neck_c, np.array([60.0, 58.0, 75.0]), "cylinder"))
    shapes.append(Shape(MUSCLE, neck_c, np.array([50.0, 48.0, 75.0]), "cylinder"))
    head_c = np.array([0.0, -5.0, shoulder + 205.0]) + j(4)
    head_semi = np.array([76.0, 94.0, 106.0]) * rng.uniform(0.95, 1.05)
    shapes.append(Shape(FAT, head_c, head_semi))
    shapes.append(Shape(BONE, head_c, head_semi - 6.0, organ="skull"))
    shapes.append(Shape(BRAIN, head_c, head_semi - 13.0))
    # Body cavity: fat inside the muscle wall, from the pelvis to the lungs' apices: visceral
    # (mesenteric, retroperitoneal) fat around the bowel below, mediastinal and extrapleural
    # fat between lungs, heart and chest wall above (the thorax is not solid muscle).
    cavity_top = shoulder - 15.0
    cav = np.array([bx - 36.0, by - 42.0, (cavity_top + 300.0) / 2.0])
    shapes.append(Shape(FAT, np.array([0.0, -15.0, cavity_top - cav[2]]), cav, "cylinder"))
    shapes += _bowel_loops(rng, bx, by)
    for c in lung_c:
        shapes.append(Shape(LUNG, c, lung_semi, "ellipsoid", organ="lung_right" if c[0] < 0 else "lung_left"))
    liver_c = np.array([-58.0, 5.0, -35.0]) + j()
    liver_semi = np.array([88.0, 76.0, 72.0]) * g()
    shapes.append(Shape(LIVER, liver_c, liver_semi))
    spleen_c = np.array([92.0, 48.0, -30.0]) + j(6)
    shapes.append(Shape(SPLEEN, spleen_c, np.array([34.0, 26.0, 50.0]) * g()))
    kid_semi = np.array([27.0, 24.0, 52.0]) * g()
    for side in (-1, 1):  # LPS: -x is the patient's right
        c = np.array([side * 68.0, 62.0, -105.0 + (8 if side < 0 else 0)]) + j(5)
        organ = "kidney_right" if side < 0 else "kidney_left"
        shapes.append(Shape(FAT, c, kid_semi + 9.0))  # perirenal fat
        shapes.append(Shape(KIDNEY, c, kid_semi, organ=organ))
        # collecting system at the hilum (medial): excreted tracer in water-dense urine
        pelvis_c = c + np.array([-side * 0.45 * kid_semi[0], -4.0, 0.0])
        shapes.append(Shape(RENAL_PELVIS, pelvis_c, np.array([9.0, 8.0, 16.0]) * rng.uniform(0.8, 1.2), organ=organ))
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
    shapes.append(Shape(AORTA, np.array([*aorta_xy, -25.0]), np.array([aorta_r, aorta_r, 175.0]), "cylinder"))
    # Spine: cortical vertebral bodies with marrow (into the neck), posterior arch.
    spine_top = shoulder + 110.0
    sc, sh = (spine_top + low) / 2.0, (spine_top - low) / 2.0
    shapes.append(Shape(BONE, np.array([*spine_xy, sc]), np.array([19.0, 17.0, sh]), "cylinder", organ="vertebrae"))
    shapes.append(Shape(MARROW, np.array([*spine_xy, sc]), np.array([15.5, 13.5, sh]), "cylinder", organ="vertebrae"))
    shapes.append(Shape(BONE, np.array([spine_xy[0], spine_xy[1] + 30.0, trunk_c]), np.array([9.0, 12.0, trunk_h]),
                        "cylinder", organ="vertebrae"))  # fmt: skip
    # Bladder (urine) low in the pelvis.
    bladder_c = np.array([0.0, -45.0, -205.0]) + j(5)
    shapes.append(Shape(BLADDER, bladder_c, np.array([42.0, 32.0, 30.0]) * g()))
    arms = "down" if rng.uniform() < 0.5 else "up"
    for side in (-1, 1):
        semi = np.array([40.0, 46.0]) * rng.uniform(0.9, 1.1, size=2)
        if arms == "down":  # beside the trunk
            c = np.array([side * (bx + rng.uniform(4.0, 18.0) + semi[0]), rng.uniform(-10.0, 15.0), -80.0])
        else:  # raised beside the head (above a torso field of view)
            c = np.array([side * (head_semi[0] + rng.uniform(8.0, 20.0) + semi[0]), rng.uniform(-20.0, 10.0), shoulder + 290.0])
        shapes.append(Shape(FAT, c, np.array([*semi, 330.0]), "cylinder"))
        shapes.append(Shape(MUSCLE, c, np.array([*(semi - 8.0), 330.0]), "cylinder"))
        bone_c = c + np.array([side * -6.0, 0.0, 0.0])
        shapes.append(Shape(BONE, bone_c, np.array([12.0, 12.0, 330.0]), "cylinder"))
        shapes.append(Shape(MARROW, bone_c, np.array([7.0, 7.0, 330.0]), "cylinder"))
    port = rng.uniform() < 0.3  # a venous port chamber in the right upper chest wall
    if port:
        shapes.append(Shape(METAL, np.array([-70.0, -by + 7.0, shoulder - 105.0]), np.array([12.0, 4.0, 12.0]), "cylinder"))
    landmarks = {
        "arms": arms,
        "port": port,
        "shoulder_z": shoulder,
        "head_center": head_c,
        "aorta_xy": aorta_xy,
        "aorta_radius": aorta_r,
        "aorta_z": (-200.0, 150.0),
        "spine_xy": spine_xy,
        "liver_center": liver_c,
        "liver_semi": liver_semi,
        "lung_centers": lung_c,
        "lung_semi": lung_semi,
    }
    return shapes, landmarks, (bx, by)


def _inside_chest_wall(centres, semi, ax, ay):
    """Lung semi-axes shrunk in-plane (3 % steps) until both lungs lie inside the ellipse
    (ax, ay) in every axial plane: the rib cage, not the skin, bounds a lung."""
    dirs = _sphere_dirs(200)
    semi = np.array(semi, dtype=float)
    for _ in range(40):
        pts = np.concatenate([c + dirs * semi for c in centres])
        if np.all((pts[:, 0] / ax) ** 2 + (pts[:, 1] / ay) ** 2 <= 1.0):
            break
        semi[:2] *= 0.97
    return semi


def _bowel_loops(rng, bx, by):
    """Bowel loops in the lower abdomen: tubes of bowel wall, lying mostly across the body,
    some with a gas-filled lumen, some FDG-avid (as colon and small bowel often are)."""
    shapes = []
    for _ in range(int(rng.integers(8, 15))):
        r = rng.uniform(10.0, 17.0)
        centre = np.array([rng.uniform(-bx + 65.0, bx - 65.0), rng.uniform(-by + 45.0, 15.0), rng.uniform(-245.0, -115.0)])
        rot = _rot_z(rng.uniform(0, np.pi)) @ _rot_x(np.pi / 2 + rng.uniform(-0.5, 0.5))
        semi = np.array([r, r, rng.uniform(25.0, 55.0)])
        label = BOWEL_HOT if rng.uniform() < 0.35 else BOWEL
        shapes.append(Shape(label, centre, semi, "cylinder", rotation=rot, replaces=frozenset({FAT, MUSCLE, BOWEL, BOWEL_HOT})))
        if rng.uniform() < 0.5:
            shapes.append(Shape(BOWEL_GAS, centre, semi - np.array([4.0, 4.0, 6.0]), "cylinder", rotation=rot,
                                replaces=frozenset({label})))  # fmt: skip
    return shapes


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
        out[tracer][AORTA] = out[tracer][BLOOD]
        if tracer == "fdg":  # myocardial FDG uptake varies a lot with diet and insulin
            out[tracer][MYOCARDIUM] = float(rng.uniform(1.2, 10.0))
            out[tracer][BOWEL_HOT] = float(rng.uniform(2.5, 8.0))
        out[tracer][RENAL_PELVIS] = float(rng.uniform(0.3, 2.0) * base[RENAL_PELVIS])
    return out


#: Lesion mix like the motivating study: FDG-avid most, about 40 % Pentixafor-negative,
#: a few Pentixafor-only.
CATEGORY_P = {"both": 0.48, "reference_only": 0.42, "index_only": 0.10}
REGION_P = {"liver": 0.35, "lymph node": 0.35, "bone": 0.15, "lung": 0.15}


def sample_lesions(rng, phantom, tracers, n_lesions, z_range, population=None):
    """Place ``n_lesions`` non-overlapping lesions and draw their uptake.

    Lesions stay inside their host tissue, at least 8 mm apart from each other and at
    least 10 mm from hot physiological organs (kidneys, bladder, heart, spleen), and
    within ``z_range`` (anatomy z, mm) so that both studies' fields of view hold them.

    ``population`` (a replication preset's, see :func:`preset_population`) replaces the
    default mix: its ``categories`` are the lesions (``n_lesions`` is not used); each
    lesion first draws the SUVmax of the tracers it is positive on (lognormal with the
    preset's mean and SD), then a region whose host tissue lets it be seen (the SUVmax at
    least :data:`POSITIVE_MIN_CONTRAST` x the host's uptake; a draw no region allows is
    drawn again), then its site; its uptake is what makes the noiseless image peak that
    SUVmax (:func:`peak_recovery`). Lesions negative on a tracer look like their host
    tissue on it, as in the default mix. A lesion without a site after 1000 tries is left out.
    """
    ref, idx = tracers
    lesions = []
    if population is None:
        attempts = 0
        while len(lesions) < n_lesions and attempts < 5000:
            attempts += 1
            site = _propose_site(rng, phantom, REGION_P, lesions, z_range)
            if site is None:
                continue
            region, radius, center = site
            category = rng.choice(list(CATEGORY_P), p=list(CATEGORY_P.values()))
            host = phantom.labels_at(center[None], with_lesions=False)[0]
            suv = {}
            for tracer in tracers:
                if _positive(category, tracer, ref):
                    median = 12.0 if tracer == ref else 7.0
                    suv[tracer] = float(np.clip(rng.lognormal(np.log(median), 0.45), 4.0, 40.0))
                else:
                    suv[tracer] = _negative_suv(rng, phantom, tracer, host)
            lesions.append(Lesion("", region, center, radius, suv, str(category)))
    else:
        for category in population["categories"]:
            positive = [t for t in tracers if _positive(category, t, ref)]
            region_p = {}
            while not region_p:
                target = {t: float(rng.lognormal(*lognormal_params(*population["suvmax"][t]))) for t in positive}
                region_p = {r: p for r, p in REGION_P.items()
                            if all(target[t] >= POSITIVE_MIN_CONTRAST * max(phantom.uptake[t][h] for h in _HOSTS[r])
                                   for t in positive)}  # fmt: skip
            total = sum(region_p.values())
            region_p = {r: p / total for r, p in region_p.items()}
            site = next((s for s in (_propose_site(rng, phantom, region_p, lesions, z_range) for _ in range(1000)) if s), None)
            if site is None:
                continue
            region, radius, center = site
            host = phantom.labels_at(center[None], with_lesions=False)[0]
            suv = {}
            for tracer in tracers:
                if tracer in target:
                    u = phantom.uptake[tracer][host]
                    suv[tracer] = float(u + (target[tracer] - u) / peak_recovery(radius, population["psf_fwhm_mm"][tracer]))
                else:
                    suv[tracer] = _negative_suv(rng, phantom, tracer, host)
            lesions.append(Lesion("", region, center, radius, suv, category, target_suvmax=target))
    # IDs in a stable anatomical order (cranio-caudal, then left-right).
    lesions.sort(key=lambda les: (-les.center[2], les.center[0]))
    for i, les in enumerate(lesions):
        les.id = f"T{i + 1:02d}"
    return lesions


def _positive(category, tracer, ref):
    """Whether a lesion of ``category`` has specific uptake of ``tracer``."""
    return category == "both" or (category == "reference_only") == (tracer == ref)


def _negative_suv(rng, phantom, tracer, host):
    """No specific uptake: the lesion looks like its host tissue."""
    return float(phantom.uptake[tracer].get(host, 0.8) * rng.uniform(0.85, 1.25))


def _propose_site(rng, phantom, region_p, lesions, z_range):
    """One try at a lesion site: ``(region, radius, centre)`` with the region drawn from
    ``region_p``, or None if the drawn site is not allowed (see :func:`sample_lesions`)."""
    region = str(rng.choice(list(region_p), p=list(region_p.values())))
    radius = float(4.0 + 16.0 * rng.beta(1.6, 3.0))
    center = _propose_center(rng, phantom, region, radius)
    if center is None or not (z_range[0] + radius <= center[2] <= z_range[1] - radius):
        return None
    if any(np.linalg.norm(center - o.center) < radius + o.radius + 8.0 for o in lesions):
        return None
    if not _site_ok(phantom, region, center, radius):
        return None
    return region, radius, center


#: Replication presets (``dualpet synth --preset NAME``): a published cohort's lesion
#: population. Every block of ``patients`` consecutive patients holds exactly ``counts``
#: lesions by category, shared out among them at random (:func:`preset_categories`); the
#: SUVmax of a lesion positive on a tracer is drawn lognormal with that tracer's
#: ``suvmax`` mean and SD.
PRESETS = {
    "weich2021": {
        "description": "Weich et al. 2021, CXCR4-directed [68Ga]Pentixafor vs [18F]FDG PET/CT in 11 patients with "
        "neuroendocrine carcinoma: 102 FDG-positive and 42 Pentixafor-positive lesions, 37 of them on both "
        "(107 in all); SUVmax FDG 12.8 +- 9.8, Pentixafor 5.2 +- 3.7",
        "tracers": ("fdg", "pentixafor"),
        "patients": 11,
        "counts": {"both": 37, "reference_only": 65, "index_only": 5},
        "suvmax": {"fdg": (12.8, 9.8), "pentixafor": (5.2, 3.7)},
    },
}
#: A preset patient holds at most this many lesions (the phantom's sites hold 30 readily).
PRESET_MAX_LESIONS = 25
#: A preset lesion's SUVmax on a tracer it is positive on is at least this many times its
#: host tissue's uptake (a clear margin over the reader's 1.5 of the visibility rule).
POSITIVE_MIN_CONTRAST = 2.0
#: PET voxel edge (mm) of both sizes, for :func:`peak_recovery`.
PET_VOXEL_MM = 4.0


def preset_categories(name, seed, n):
    """Categories of patient ``n``'s lesions (1-based) under preset ``name``.

    Patients 1..P, P+1..2P, ... (P the preset's ``patients``) form blocks; each block's
    lesions (exactly the preset's ``counts``) go to its patients in proportion to
    gamma-distributed weights (shape 1.5: metastatic burden varies a lot between patients),
    every patient getting 1 to :data:`PRESET_MAX_LESIONS`. Drawn from ``(seed, block)``
    alone, so that a patient depends only on ``(seed, n)`` and not on the cohort's size.
    """
    p = PRESETS[name]
    block, i = divmod(n - 1, p["patients"])
    rng = np.random.default_rng([seed, block, 5])
    cats = rng.permutation(np.repeat(list(p["counts"]), list(p["counts"].values())))
    while True:
        w = rng.gamma(1.5, size=p["patients"])
        who = rng.choice(p["patients"], size=len(cats), p=w / w.sum())
        per = np.bincount(who, minlength=p["patients"])
        if per.min() >= 1 and per.max() <= PRESET_MAX_LESIONS:
            return [str(c) for c in cats[who == i]]


def preset_population(name, seed, n, psf_fwhm_mm):
    """The ``population`` of :func:`sample_lesions` for patient ``n`` under preset ``name``;
    ``psf_fwhm_mm``: {tracer: PET resolution (FWHM, mm)}."""
    return {**PRESETS[name], "categories": preset_categories(name, seed, n), "psf_fwhm_mm": dict(psf_fwhm_mm)}


def lognormal_params(mean, sd):
    """``(mu, sigma)`` of the lognormal distribution with this mean and SD."""
    sigma2 = np.log1p((sd / mean) ** 2)
    return float(np.log(mean) - sigma2 / 2.0), float(np.sqrt(sigma2))


def peak_recovery(radius, fwhm_mm, voxel_mm=PET_VOXEL_MM):
    """Share of a sphere's uptake above its surroundings that the noiseless PET peak keeps.

    The centre value of a uniform sphere blurred by a Gaussian of SD ``s``:
    erf(x / sqrt 2) - sqrt(2 / pi) x exp(-x^2 / 2) with x = radius / s, where ``s``
    combines the PSF with the voxel averaging and the peak voxel's offset from the centre
    (each taken as a box of ``voxel_mm``: s^2 = (FWHM / 2.355)^2 + 2 voxel^2 / 12). Against
    the noiseless peak :func:`~dualpet.synth.render.render_pet_truth` gives (PSF 6.5 and
    7 mm, 4 mm voxels, 3 or 4 mm slices, radii 4-20 mm, 12 placements in the voxel grid
    each): within 0.03 on average, within 0.08 for every sphere (radii 5-7 mm the worst).
    """
    s = np.sqrt((fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0)))) ** 2 + 2.0 * voxel_mm**2 / 12.0)
    x = radius / s
    return float(math.erf(x / np.sqrt(2.0)) - np.sqrt(2.0 / np.pi) * x * np.exp(-(x**2) / 2.0))


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
    forbidden = set(HOT_ORGANS) | ({BLOOD, AORTA} if region != "lung" else {BLOOD, AORTA, MYOCARDIUM})
    return not (set(outer.tolist()) & forbidden)


def _sphere_dirs(n=60):
    """Roughly uniform unit vectors (Fibonacci sphere)."""
    k = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * k / n)
    theta = np.pi * (1 + 5**0.5) * k
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1)


def make_phantom(rng, tracers, n_lesions, z_range, population=None):
    """Sample a complete patient phantom (``population``: see :func:`sample_lesions`)."""
    shapes, landmarks, body = make_anatomy(rng)
    phantom = Phantom(shapes=shapes, uptake=sample_uptake(rng, tracers), body_semi=body, landmarks=landmarks)
    phantom.lesions = sample_lesions(rng, phantom, tracers, n_lesions, z_range, population)
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
