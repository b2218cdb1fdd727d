"""Analytic torso phantom: anatomy, physiological uptake and lesions.

The anatomy lives in its own frame ("anatomy coordinates"): LPS-oriented, mm, origin on
the body axis at the level of the diaphragm. A study places it in the scanner with a rigid
pose ``world = R @ a + t`` (world = that study's DICOM patient coordinates, LPS mm).

Shapes are painted in order (later shapes overwrite earlier ones), so a label map can be
evaluated at any set of points (:meth:`Phantom.labels_at`), which is what both the
renderer (on voxel centres) and the lesion placement (on test points) use. The anatomy
itself (which shapes, where, how large) is drawn in :mod:`dualpet.synth.torso`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dualpet.synth.shapes import (
    AIR,
    AIRWAY,
    AORTA,
    BACK_MUSCLE,
    BLADDER,
    BLOOD,
    BONE,
    BOWEL,
    BOWEL_GAS,
    BOWEL_HOT,
    BRAIN,
    BROWN_FAT,
    CANAL,
    DISC,
    FAT,
    HEART_WALL,
    KIDNEY,
    LESION_BASE,
    LIVER,
    LUNG,
    MARROW,
    METAL,
    MUSCLE,
    MYOCARDIUM,
    NECK_MUSCLE,
    OESOPHAGUS,
    PAD,
    RENAL_PELVIS,
    RIB,
    RP_FAT,
    SOFT,
    SPLEEN,
    STOMACH,
    STOMACH_FLUID,
    STOMACH_GAS,
    TABLE,
    VEIN,
    VESSEL,
    Shape,
)

TISSUES = {
    AIR: "air",
    FAT: "fat",
    MUSCLE: "muscle",
    LUNG: "lung",
    LIVER: "liver",
    SPLEEN: "spleen",
    KIDNEY: "kidney",
    BLADDER: "bladder",
    MYOCARDIUM: "myocardium",
    BLOOD: "blood",
    BONE: "bone",
    MARROW: "marrow",
    TABLE: "table",
    PAD: "pad",
    AORTA: "aorta",
    RENAL_PELVIS: "renal pelvis",
    BOWEL: "bowel",
    BOWEL_HOT: "bowel (FDG-avid)",
    BOWEL_GAS: "bowel gas",
    BRAIN: "brain",
    METAL: "metal",
    RIB: "rib",
    BACK_MUSCLE: "back muscle",
    NECK_MUSCLE: "neck and shoulder muscle",
    BROWN_FAT: "brown fat",
    DISC: "intervertebral disc",
    CANAL: "spinal canal",
    OESOPHAGUS: "oesophagus",
    STOMACH: "stomach wall",
    STOMACH_FLUID: "gastric fluid",
    STOMACH_GAS: "gastric gas",
    VESSEL: "blood vessel",
    VEIN: "vena cava",
    AIRWAY: "airway gas",
    SOFT: "soft tissue",
    HEART_WALL: "atrial and right-ventricular wall",
    RP_FAT: "retroperitoneal fat",
}

#: CT numbers (HU) per tissue on a non-contrast CT; lesions get their own (see :class:`Lesion`).
#: Blood, muscle, fat, liver, spleen and kidney are drawn per patient within the ranges of
#: real patients (:func:`sample_ct_numbers`); these are the population values.
HU = {
    AIR: -1000.0,
    FAT: -100.0,
    MUSCLE: 45.0,
    LUNG: -840.0,
    LIVER: 62.0,
    SPLEEN: 50.0,
    KIDNEY: 32.0,
    BLADDER: 8.0,
    MYOCARDIUM: 45.0,
    BLOOD: 40.0,
    BONE: 750.0,
    MARROW: 230.0,
    TABLE: 250.0,
    PAD: -300.0,
    AORTA: 40.0,
    RENAL_PELVIS: 8.0,
    BOWEL: 35.0,
    BOWEL_HOT: 35.0,
    BOWEL_GAS: -1000.0,
    BRAIN: 35.0,
    METAL: 3000.0,
    RIB: 450.0,
    BACK_MUSCLE: 45.0,
    NECK_MUSCLE: 45.0,
    BROWN_FAT: -80.0,
    DISC: 80.0,
    CANAL: 25.0,
    OESOPHAGUS: 40.0,
    STOMACH: 40.0,
    STOMACH_FLUID: 15.0,
    STOMACH_GAS: -1000.0,
    VESSEL: 40.0,
    VEIN: 40.0,
    AIRWAY: -995.0,
    SOFT: 40.0,
    HEART_WALL: 45.0,
    RP_FAT: -100.0,
}
#: Contrast-enhanced CT (late arterial to portal-venous phase): the tissues whose CT
#: numbers rise, as (lowest, highest) HU over studies. One enhancement level per study
#: (dose, timing, cardiac output) sets them all, so that they move together as in patients
#: (kidney cortex > spleen >= liver); the blood pool (aorta, heart cavities and the other
#: arteries: one value) varies most; the venae cavae fill later (portal venous 120-200 HU).
CONTRAST_HU = {
    BLOOD: (150.0, 400.0),
    LIVER: (95.0, 130.0),
    SPLEEN: (100.0, 140.0),
    KIDNEY: (150.0, 240.0),
    MYOCARDIUM: (80.0, 120.0),
    BOWEL: (60.0, 90.0),
    BOWEL_HOT: (60.0, 90.0),
    HEART_WALL: (80.0, 120.0),
    VEIN: (110.0, 190.0),
    STOMACH: (60.0, 100.0),
    OESOPHAGUS: (55.0, 85.0),
}
#: Labels that share the blood pool's enhanced CT number.
BLOOD_POOL = (AORTA, VESSEL)
#: The couch (fixed in the scanner): a curved carbon-fibre shell (TABLE) under a thin,
#: compressed mattress (PAD) on which the patient's back rests, as on real PET/CT couches.
COUCH = {"pad_mm": 3.0, "shell_mm": 6.0, "curvature_radius_mm": 600.0, "half_width_mm": 230.0}

#: Physiological uptake (SUVbw of the tissue, before partial volume), population medians.
#: FDG: liver ~2, brain high, myocardium from blood level to intense (drawn per patient),
#: renal excretion into kidneys, renal pelves and bladder, bowel and stomach wall 2-6
#: (domain notes), mild oesophagus; muscle and brown fat are drawn per patient
#: (:func:`sample_uptake`). Pentixafor (CXCR4): spleen and marrow high, renal excretion,
#: low myocardium and brain, low in muscle and brown fat.
UPTAKE = {
    "fdg": {
        FAT: 0.35,
        MUSCLE: 0.8,
        LUNG: 0.45,
        LIVER: 2.2,
        SPLEEN: 1.8,
        KIDNEY: 3.8,
        BLADDER: 25.0,
        MYOCARDIUM: 5.0,
        BLOOD: 1.7,
        AORTA: 1.7,
        BONE: 0.5,
        MARROW: 1.6,
        RENAL_PELVIS: 15.0,
        BOWEL: 1.3,
        BOWEL_HOT: 4.0,
        BRAIN: 8.0,
        RIB: 0.6,
        BACK_MUSCLE: 0.8,
        NECK_MUSCLE: 0.8,
        BROWN_FAT: 0.35,
        DISC: 0.4,
        CANAL: 0.9,
        OESOPHAGUS: 1.8,
        STOMACH: 3.0,
        STOMACH_FLUID: 0.5,
        VESSEL: 1.7,
        VEIN: 1.7,
        SOFT: 0.8,
        HEART_WALL: 2.0,
        RP_FAT: 0.35,
    },
    "pentixafor": {
        FAT: 0.3,
        MUSCLE: 0.7,
        LUNG: 0.5,
        LIVER: 1.6,
        SPLEEN: 5.5,
        KIDNEY: 4.0,
        BLADDER: 18.0,
        MYOCARDIUM: 1.5,
        BLOOD: 1.8,
        AORTA: 1.8,
        BONE: 0.5,
        MARROW: 2.3,
        RENAL_PELVIS: 12.0,
        BOWEL: 1.2,
        BOWEL_HOT: 1.5,
        BRAIN: 0.25,
        RIB: 0.9,
        BACK_MUSCLE: 0.7,
        NECK_MUSCLE: 0.7,
        BROWN_FAT: 0.3,
        DISC: 0.4,
        CANAL: 0.3,
        OESOPHAGUS: 1.0,
        STOMACH: 1.4,
        STOMACH_FLUID: 0.4,
        VESSEL: 1.8,
        VEIN: 1.8,
        SOFT: 0.7,
        HEART_WALL: 1.6,
        RP_FAT: 0.3,
    },
}

#: Organ names (those of :data:`dualpet.anatomy.ORGANS`) of the truth organ map, per
#: tissue label; a shape can name its organ itself (left and right lung, kidneys, the
#: vertebrae, the skull). The stomach is part of ``bowel`` (TotalSegmentator's class 6 is
#: read as bowel too); the heart is its myocardium, walls and chambers. Tissues without an
#: organ of dualpet's (muscles, oesophagus, venae cavae, pulmonary vessels, brown fat) are
#: ``body``.
TISSUE_ORGAN = {
    LIVER: "liver",
    SPLEEN: "spleen",
    BLADDER: "urinary_bladder",
    MYOCARDIUM: "heart",
    BLOOD: "heart",
    HEART_WALL: "heart",
    AORTA: "aorta",
    BOWEL: "bowel",
    BOWEL_HOT: "bowel",
    BOWEL_GAS: "bowel",
    BRAIN: "brain",
    STOMACH: "bowel",
    STOMACH_FLUID: "bowel",
    STOMACH_GAS: "bowel",
}

#: Radionuclide of each tracer the generator knows.
TRACER_NUCLIDE = {"fdg": "F-18", "pentixafor": "Ga-68"}

#: Lesion tissue on CT (HU) per region; a necrotic core is near water.
LESION_HU = {"liver": 38.0, "lymph node": 35.0, "bone": 420.0, "lung": 30.0}
NECROSIS_HU = 15.0

#: Hot organs a lesion must keep clear of (mm), so that truth is not confounded by spill-in
#: (brown fat and the gastro-intestinal wall are hot in some patients).
HOT_ORGANS = (
    KIDNEY,
    BLADDER,
    MYOCARDIUM,
    SPLEEN,
    RENAL_PELVIS,
    BOWEL,
    BOWEL_HOT,
    BOWEL_GAS,
    BRAIN,
    HEART_WALL,
    STOMACH,
    STOMACH_FLUID,
    STOMACH_GAS,
    OESOPHAGUS,
    BROWN_FAT,
)


@dataclass
class LesionPart:
    """One sphere of a lesion: ``offset`` from the lesion's centre (mm), its radius and
    uptake per tracer; ``necrotic`` parts are cold (necrosis) and near water on CT."""

    offset: np.ndarray
    radius: float
    suv: dict
    necrotic: bool = False


@dataclass
class Lesion:
    """A lesion: a sphere with per-tracer uniform uptake (SUVbw), or (``parts``) a larger
    lesion made of several spheres painted in order: a lobulated mass (overlapping lobes
    of different uptake, so several peaks) or one with a necrotic core. Its ``center`` and
    ``radius`` are those of a sphere enclosing it (the truth's VOIs use it); ``suv`` is the
    uptake of its hottest part."""

    id: str
    region: str
    center: np.ndarray  # anatomy coordinates, mm
    radius: float  # mm
    suv: dict  # tracer -> true SUVbw of the lesion tissue
    category: str  # "both", "reference_only", "index_only"
    target_suvmax: dict | None = None  # a preset's drawn SUVmax per positive tracer (noiseless image peak)
    form: str = "sphere"  # or "lobulated", "necrotic"
    parts: list = field(default_factory=list)  # LesionPart, in paint order (empty: one sphere)
    station: str = ""  # where it was placed (e.g. "hilar", "perihilar", "subcarinal")
    pair: object = None  # the lesion placed close beside it on purpose (10-20 mm edge to edge)

    def spheres(self):
        """``(centre, radius, suv, necrotic)`` of each sphere, in paint order."""
        if not self.parts:
            return [(self.center, self.radius, self.suv, False)]
        return [(self.center + p.offset, p.radius, p.suv, p.necrotic) for p in self.parts]

    def volume_ml(self):
        """Volume (mL): exact for a sphere, counted on a 1 mm grid for several parts."""
        if not self.parts:
            return 4.0 / 3.0 * np.pi * self.radius**3 / 1000.0
        ax = np.arange(-self.radius, self.radius + 0.5, 1.0)
        pts = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
        inside = np.zeros(len(pts), bool)
        for p in self.parts:
            inside |= np.sum((pts - p.offset) ** 2, axis=1) <= p.radius**2
        return float(inside.sum()) / 1000.0


@dataclass
class Phantom:
    """One patient's anatomy, physiology and lesions."""

    shapes: list
    uptake: dict  # tracer -> {label: SUV}
    lesions: list = field(default_factory=list)
    body_semi: tuple = (165.0, 115.0)
    landmarks: dict = field(default_factory=dict)
    hu: dict = field(default_factory=dict)  # this patient's CT numbers (label -> HU) over HU
    physiology: dict = field(default_factory=dict)  # what was drawn for the physiological uptake
    _boxes: tuple = field(default=None, repr=False)

    def lesion_shapes(self):
        """Spheres of the lesions, labelled LESION_BASE + index (necrotic parts
        LESION_BASE + number of lesions + index)."""
        n = len(self.lesions)
        return [
            Shape(LESION_BASE + (n + i if necrotic else i), c, np.full(3, r))
            for i, les in enumerate(self.lesions)
            for c, r, _, necrotic in les.spheres()
        ]

    def all_shapes(self, with_lesions=True):
        return self.shapes + (self.lesion_shapes() if with_lesions else [])

    def _pieces(self):
        """The shapes' pieces in paint order with their bounding boxes (cached)."""
        if self._boxes is None or self._boxes[0] != len(self.shapes):
            pieces = [p for s in self.shapes for p in s.pieces()]
            b = [p.bbox() for p in pieces]
            self._boxes = (len(self.shapes), pieces, np.array([x[0] for x in b]), np.array([x[1] for x in b]))
        return self._boxes[1:]

    def labels_at(self, a, with_lesions=True):
        """Tissue label at anatomy points ``a`` (N, 3)."""
        a = np.asarray(a, dtype=float).reshape(-1, 3)
        lab = np.zeros(len(a), dtype=np.int16)
        pieces, lo, hi = self._pieces()
        plo, phi = a.min(axis=0), a.max(axis=0)
        near = np.flatnonzero(np.all(lo <= phi, axis=1) & np.all(hi >= plo, axis=1))
        boxes = [(pieces[i], lo[i], hi[i]) for i in near]
        boxes += [(les, *les.bbox()) for les in (self.lesion_shapes() if with_lesions else [])]
        for shape, slo, shi in boxes:
            idx = np.flatnonzero(((a >= slo) & (a <= shi)).all(axis=1))
            if idx.size:
                idx = idx[shape.contains(a[idx])]
                if shape.replaces is not None:
                    idx = idx[np.isin(lab[idx], list(shape.replaces))]
                lab[idx] = shape.label
        return lab

    def suv_of_labels(self, labels, tracer):
        """True SUV per tissue label for ``tracer`` (lesion labels: their solid uptake)."""
        n = len(self.lesions)
        lut = np.zeros(LESION_BASE + 2 * max(n, 1), dtype=np.float32)
        for lab, val in self.uptake[tracer].items():
            lut[lab] = val
        for i, les in enumerate(self.lesions):
            lut[LESION_BASE + i] = les.suv[tracer]
            lut[LESION_BASE + n + i] = min(p.suv[tracer] for p in les.parts) if les.parts else les.suv[tracer]
        return lut[labels]


def sample_uptake(rng, tracers):
    """Per-patient physiological SUVs, and what was drawn (for the truth).

    Population medians x a patient-wide factor (body habitus, glucose, uptake time;
    log-normal, sigma 0.15) x an organ factor (log-normal, sigma 0.08), both truncated at
    2 sigma so that organ ratios such as liver/blood stay physiological. FDG then draws
    what varies most between patients (domain notes): the myocardium from blood level
    (about a third of patients: fasting, low insulin) to intense (> 10), a horseshoe of the
    LV wall (the atrial and right-ventricular walls take up a fifth of the LV's excess);
    symmetric uptake in the neck and shoulder muscles in some patients (SUV 1.5-4); active
    brown fat in some (SUV 2-10, all depots alike: supraclavicular, axillary,
    paravertebral); gastric wall 2-6, oesophagus mild, avid bowel segments. Pentixafor
    stays low in muscle and brown fat.
    """

    def factor(sigma):
        return float(np.exp(np.clip(rng.normal(0.0, sigma), -2 * sigma, 2 * sigma)))

    out = {}
    physiology = {}
    for tracer in tracers:
        base = UPTAKE[tracer]
        patient_factor = factor(0.15)
        u = {lab: v * patient_factor * factor(0.08) for lab, v in base.items()}
        u[AORTA] = u[VESSEL] = u[VEIN] = u[BLOOD]
        u[RP_FAT] = u[BROWN_FAT] = u[FAT]
        u[NECK_MUSCLE] = u[BACK_MUSCLE] = u[MUSCLE]
        if tracer == "fdg":
            kind = str(rng.choice(["none", "moderate", "intense"], p=[0.3, 0.35, 0.35]))
            lo, hi = {"none": (0.9 * u[BLOOD], 1.3 * u[BLOOD]), "moderate": (2.0, 6.0), "intense": (6.0, 14.0)}[kind]
            u[MYOCARDIUM] = float(rng.uniform(lo, hi))
            u[HEART_WALL] = u[BLOOD] + 0.2 * max(u[MYOCARDIUM] - u[BLOOD], 0.0)
            u[BOWEL_HOT] = float(rng.uniform(2.5, 8.0))
            u[STOMACH] = float(rng.uniform(2.0, 6.0))
            u[OESOPHAGUS] = float(rng.uniform(1.2, 2.8))
            muscles = rng.uniform() < 0.25
            if muscles:
                u[NECK_MUSCLE] = float(rng.uniform(1.5, 4.0))
            brown = rng.uniform() < 0.2
            if brown:
                u[BROWN_FAT] = float(rng.uniform(2.0, 10.0))
            physiology = {
                "myocardial_fdg": kind,
                "neck_shoulder_muscle_fdg": bool(muscles),
                "brown_fat_fdg": bool(brown),
            }
        u[RENAL_PELVIS] = float(rng.uniform(0.3, 2.0) * base[RENAL_PELVIS])
        out[tracer] = u
    return out, physiology


def sample_ct_numbers(rng):
    """This patient's CT numbers (HU) where real patients differ (domain notes): unenhanced
    blood 35-55 (haematocrit), muscle 40-60 with the back muscles lower in some (fatty
    infiltration with age), fat -115 to -85, liver 50-65 with the spleen 8-10 below it,
    kidneys 30-40."""
    blood = float(rng.uniform(35.0, 55.0))
    muscle = float(rng.uniform(40.0, 60.0))
    infiltration = float(rng.uniform(5.0, 25.0) if rng.uniform() < 0.4 else rng.uniform(0.0, 5.0))
    fat = float(rng.uniform(-115.0, -85.0))
    liver = float(rng.uniform(50.0, 65.0))
    return {
        BLOOD: blood,
        AORTA: blood,
        VESSEL: blood,
        VEIN: blood,
        MYOCARDIUM: blood + float(rng.uniform(2.0, 8.0)),
        HEART_WALL: blood + 4.0,
        MUSCLE: muscle,
        NECK_MUSCLE: muscle,
        BACK_MUSCLE: muscle - infiltration,
        FAT: fat,
        RP_FAT: fat,
        BROWN_FAT: fat + 20.0,
        LIVER: liver,
        SPLEEN: liver - float(rng.uniform(8.0, 10.0)),
        KIDNEY: float(rng.uniform(30.0, 40.0)),
        STOMACH_FLUID: float(rng.uniform(5.0, 25.0)),
    }


#: Lesion mix like the motivating study: FDG-avid most, about 40 % Pentixafor-negative,
#: a few Pentixafor-only.
CATEGORY_P = {"both": 0.48, "reference_only": 0.42, "index_only": 0.10}
REGION_P = {"liver": 0.35, "lymph node": 0.35, "bone": 0.15, "lung": 0.15}
#: Tumours as readers see them: this share of the liver and lung lesions are large masses
#: (radius LARGE_RADIUS_MM, 30-60 mm across) where one fits, half of them lobulated (a central lobe
#: and 2-3 peripheral lobes of different uptake: several peaks) and half with a necrotic
#: (cold) core; each is still one lesion. PAIR_P of the lesions are placed as a close pair
#: with the lesion before them (PAIR_GAP_MM edge to edge), two lesions.
LARGE_P, LARGE_RADIUS_MM, LOBULATED_MIN_RADIUS_MM = 0.15, (15.0, 30.0), 20.0
LARGE_REGIONS, LARGE_TRIES = ("liver", "lung"), 60
PAIR_P, PAIR_GAP_MM = 0.1, (10.0, 20.0)
#: Necrosis takes up neither tracer (SUV of the necrotic core).
NECROSIS_SUV = (0.2, 0.5)


def sample_lesions(rng, phantom, tracers, n_lesions, z_range, population=None):
    """Place ``n_lesions`` non-overlapping lesions and draw their uptake.

    Lesions stay inside their host tissue, at least 8 mm apart from each other and at
    least 10 mm from hot physiological organs (kidneys, bladder, heart, spleen, stomach,
    bowel, brown fat), and within ``z_range`` (anatomy z, mm) so that both studies' fields
    of view hold them. Hilar and mediastinal lesions may touch the great vessels and
    airways; the others keep 10 mm from vessels too.

    ``population`` (a replication preset's, see :func:`preset_population`) replaces the
    default mix: its ``categories`` are the lesions (``n_lesions`` is not used); each
    lesion first draws the SUVmax of the tracers it is positive on (lognormal with the
    preset's mean and SD), then a region whose host tissue lets it be seen (the SUVmax at
    least :data:`POSITIVE_MIN_CONTRAST` x the host's uptake; a draw no region allows is
    drawn again), then its site; its uptake is what makes the noiseless image peak that
    SUVmax (:func:`peak_recovery`; for a large lesion of several parts, its blurred image).
    Lesions negative on a tracer look like their host tissue on it, as in the default mix.
    A lesion without a site after 3,500 tries (ten regions) is left out.
    """
    ref = tracers[0]
    lesions = []
    if population is None:
        attempts = 0
        while len(lesions) < n_lesions and attempts < 20:
            attempts += 1
            site = _find_site(rng, phantom, REGION_P, lesions, z_range)
            if site is None:
                continue
            category = str(rng.choice(list(CATEGORY_P), p=list(CATEGORY_P.values())))
            host = phantom.labels_at(site["center"][None], with_lesions=False)[0]
            suv = {}
            for tracer in tracers:
                if _positive(category, tracer, ref):
                    median = 12.0 if tracer == ref else 7.0
                    suv[tracer] = float(np.clip(rng.lognormal(np.log(median), 0.45), 4.0, 40.0))
                else:
                    suv[tracer] = _negative_suv(rng, phantom, tracer, host)
            lesions.append(_make_lesion(rng, phantom, site, suv, category, host, ref))
    else:
        for category in population["categories"]:
            positive = [t for t in tracers if _positive(category, t, ref)]
            region_p = {}
            while not region_p:
                target = {t: float(rng.lognormal(*lognormal_params(*population["suvmax"][t]))) for t in positive}
                region_p = {
                    r: p
                    for r, p in REGION_P.items()
                    if all(
                        target[t] >= POSITIVE_MIN_CONTRAST * max(phantom.uptake[t][h] for h in _HOSTS[r])
                        for t in positive
                    )
                }
            total = sum(region_p.values())
            region_p = {r: p / total for r, p in region_p.items()}
            site = _find_site(rng, phantom, region_p, lesions, z_range)
            if site is None:
                continue
            host = phantom.labels_at(site["center"][None], with_lesions=False)[0]
            suv = {t: target[t] if t in target else _negative_suv(rng, phantom, t, host) for t in tracers}
            les = _make_lesion(
                rng, phantom, site, suv, category, host, ref, targets=target, psf=population["psf_fwhm_mm"]
            )
            lesions.append(les)
    # IDs in a stable anatomical order (cranio-caudal, then left-right).
    lesions.sort(key=lambda les: (-les.center[2], les.center[0]))
    for i, les in enumerate(lesions):
        les.id = f"T{i + 1:02d}"
    return lesions


def _make_lesion(rng, phantom, site, suv, category, host, ref, targets=None, psf=None):
    """The lesion of a site. ``suv``: per tracer, the lesion tissue's uptake, or for the
    tracers in ``targets`` (a preset's, with ``psf``) the noiseless image peak to reach."""
    region, radius, center, geometry = site["region"], site["radius"], site["center"], site["geometry"]
    necrosis = float(rng.uniform(*NECROSIS_SUV))
    final = dict(suv)
    for t in targets or {}:
        u = phantom.uptake[t][host]
        if geometry:
            final[t] = _solve_parts_suv(geometry, u, suv[t], necrosis, psf[t])
        else:
            final[t] = float(u + (suv[t] - u) / peak_recovery(radius, psf[t]))
    parts = []
    for offset, r, factor, necrotic in geometry:
        part_suv = {}
        for t, value in final.items():
            u = phantom.uptake[t][host]
            positive = _positive(category, t, ref)  # a negative lesion looks like its host in every part
            part_suv[t] = necrosis if necrotic else (float(u + factor * (value - u)) if positive else value)
        parts.append(LesionPart(np.asarray(offset, float), float(r), part_suv, bool(necrotic)))
    les = Lesion(
        "",
        region,
        center,
        radius,
        final,
        category,
        target_suvmax=targets,
        form=site["form"],
        parts=parts,
        station=site["station"],
    )
    if site.get("near") is not None:
        les.pair, site["near"].pair = site["near"], les
    return les


def _positive(category, tracer, ref):
    """Whether a lesion of ``category`` has specific uptake of ``tracer``."""
    return category == "both" or (category == "reference_only") == (tracer == ref)


def _negative_suv(rng, phantom, tracer, host):
    """No specific uptake: the lesion looks like its host tissue."""
    return float(phantom.uptake[tracer].get(host, 0.8) * rng.uniform(0.85, 1.25))


def _find_site(rng, phantom, region_p, lesions, z_range, tries=350, regions=10):
    """A lesion site: beside the last lesion (a close pair, with probability PAIR_P, if
    its region is allowed and it is a single sphere without a pair yet), else in a region
    drawn from ``region_p`` (up to ``tries`` proposals in it, so that each region keeps
    its share however hard its sites are to find; then another region (one whose sites
    are all taken), ``regions`` times). None if nothing was found."""
    last = lesions[-1] if lesions else None
    if last is not None and last.pair is None and not last.parts and last.region in region_p and rng.uniform() < PAIR_P:
        for _ in range(30):
            site = _propose_site(rng, phantom, last.region, lesions, z_range, near=last)
            if site is not None:
                return site
    for attempt in range(regions):
        region = str(rng.choice(list(region_p), p=list(region_p.values())))
        # a large mass is decided before its site is sought (it is harder to place): a
        # liver or lung mass; if none fits in LARGE_TRIES, a single sphere there instead
        large = attempt == 0 and region in LARGE_REGIONS and rng.uniform() < LARGE_P
        form = "sphere" if not large else ("lobulated" if rng.uniform() < 0.5 else "necrotic")
        for i in range(tries):
            site = _propose_site(rng, phantom, region, lesions, z_range, form=form if i < LARGE_TRIES else "sphere")
            if site is not None:
                return site
    return None


def _propose_site(rng, phantom, region, lesions, z_range, near=None, form="sphere"):
    """One try at a lesion site in ``region`` for a lesion of ``form`` (a dict: region,
    radius, centre, station, form, geometry of its parts), or None if the drawn site is not
    allowed (see :func:`sample_lesions`). ``near``: a lesion to place this one 10-20 mm
    (edge to edge) beside."""
    if form == "lobulated":  # lobes large enough for their peaks to survive the PSF
        radius = float(rng.uniform(LOBULATED_MIN_RADIUS_MM, LARGE_RADIUS_MM[1]))
    elif form == "necrotic":
        radius = float(rng.uniform(*LARGE_RADIUS_MM))
    else:
        radius = float(4.0 + 16.0 * rng.beta(1.6, 3.0))
    if near is None:
        for _ in range(20):  # cheap: a centre within the z range before any tissue test
            center, station, near_vessels = _propose_center(rng, phantom, region, radius, z_range)
            if z_range[0] + radius <= center[2] <= z_range[1] - radius:
                break
    else:
        direction = _in_unit_ball(rng)
        direction /= max(np.linalg.norm(direction), 1e-9)
        center = near.center + direction * (near.radius + radius + rng.uniform(*PAIR_GAP_MM))
        station, near_vessels = near.station, near.station in VESSEL_STATIONS
    if not (z_range[0] + radius <= center[2] <= z_range[1] - radius):
        return None
    if any(np.linalg.norm(center - o.center) < radius + o.radius + 8.0 for o in lesions):
        return None
    if not _site_ok(phantom, region, center, radius, near_vessels):
        return None
    return {
        "region": region,
        "radius": radius,
        "center": center,
        "station": station,
        "form": form,
        "geometry": _large_geometry(rng, form, radius),
        "near": near,
    }


def _large_geometry(rng, form, radius):
    """Parts of a large lesion inside its enclosing sphere of ``radius``: ``(offset,
    radius, uptake factor, necrotic)`` in paint order (empty for a single sphere).

    Lobulated: a central lobe (about half the radius, 60-80 % of the peak uptake) and 2-3
    peripheral lobes (0.35-0.42 of the radius) touching the enclosing sphere in directions
    at least 100 degrees apart (so they do not touch each other), each overlapping the
    central lobe (so the mass is one connected lesion), the first at full uptake, the
    others at 70-95 %: several peaks with dips between them. Necrotic: the whole sphere with a cold core of 35-55 % of its radius
    whose rim stays at least 6 mm thick.
    """
    if form == "sphere":
        return []
    if form == "necrotic":
        core = radius * float(rng.uniform(0.35, 0.55))
        d = _in_unit_ball(rng) * max(radius - core - 6.0, 0.0) * 0.8
        return [(np.zeros(3), radius, 1.0, False), (d, core, 0.0, True)]
    parts = [(np.zeros(3), radius * float(rng.uniform(0.45, 0.55)), float(rng.uniform(0.6, 0.8)), False)]
    n_lobes, dirs = int(rng.integers(2, 4)), []
    for _ in range(500):
        if len(dirs) == n_lobes:
            break
        v = _in_unit_ball(rng)
        v /= max(np.linalg.norm(v), 1e-9)
        if all(v @ w < np.cos(np.deg2rad(100.0)) for w in dirs):
            dirs.append(v)
    for i, v in enumerate(dirs):
        r = radius * float(rng.uniform(0.35, 0.42))
        parts.append((v * (radius - r), r, 1.0 if i == 0 else float(rng.uniform(0.7, 0.95)), False))
    return parts


def _solve_parts_suv(geometry, host, target, necrosis, fwhm_mm, voxel_mm=None):
    """The uptake of a large lesion's hottest part that makes its noiseless image peak
    ``target``: the parts painted on a 1 mm grid, blurred with the Gaussian of
    :func:`peak_recovery` (PSF and voxel averaging), solved by bisection (the peak grows
    with the uptake)."""
    voxel_mm = PET_VOXEL_MM if voxel_mm is None else voxel_mm
    s = np.sqrt((fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0)))) ** 2 + 2.0 * voxel_mm**2 / 12.0)
    reach = max(np.linalg.norm(o) + r for o, r, _, _ in geometry) + 3.0 * s
    ax = np.arange(-reach, reach + 0.5, 1.0)
    pts = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1)
    factor = np.zeros(pts.shape[:3], np.float32)
    core = np.zeros(pts.shape[:3], np.float32)
    for o, r, f, necrotic in geometry:
        inside = np.sum((pts - o) ** 2, axis=-1) <= r * r
        factor[inside] = 0.0 if necrotic else f
        core[inside] = 1.0 if necrotic else 0.0
    from scipy import ndimage

    bf = ndimage.gaussian_filter(factor, s, mode="constant")
    bc = ndimage.gaussian_filter(core, s, mode="constant")

    def peak(v):
        return float(np.max(host + (v - host) * bf + (necrosis - host) * bc))

    lo, hi = host, host + (target - host) * 4.0 + 1.0
    while peak(hi) < target:
        hi = host + (hi - host) * 2.0
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if peak(mid) < target else (lo, mid)
    return float(hi)


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


def _propose_center(rng, phantom, region, radius, z_range=(-np.inf, np.inf)):
    """A candidate centre for a lesion of ``region``: ``(centre, station, near_vessels)``.

    Liver: the right lobe. Lung: anywhere in either lung, or (a quarter) perihilar: lateral
    to a hilum, beside its vessels and bronchi. Bone: a vertebral body in the lesions' z
    range. Lymph node: a station of :func:`dualpet.synth.torso.node_stations` (mediastinal,
    hilar, para-aortic, mesenteric), those next to the heart and great vessels included.
    """
    lm = phantom.landmarks
    if region == "liver":
        return (
            lm["liver_center"] + _in_unit_ball(rng) * np.maximum(lm["liver_semi"] - radius - 10.0, 1.0),
            "liver",
            False,
        )
    if region == "lung":
        side = int(rng.integers(2))
        if rng.uniform() < PERIHILAR_P:
            hilum = lm["hila"][side]
            sign = -1.0 if side == 0 else 1.0  # hila[0] is the right (patient's right: -x)
            d = np.array([sign, rng.uniform(-0.5, 0.5), rng.uniform(-0.6, 0.6)])
            d /= np.linalg.norm(d)
            return hilum + d * (radius + rng.uniform(14.0, 26.0)), "perihilar", True
        c = lm["lung_centers"][side]
        return c + _in_unit_ball(rng) * np.maximum(lm["lung_semi"] - radius - 10.0, 1.0), "lung", False
    if region == "bone":
        levels = [v for v in lm["vertebrae"] if v["name"][0] in "TL" and z_range[0] < v["center"][2] < z_range[1]]
        levels = levels or [v for v in lm["vertebrae"] if v["name"][0] in "TL"]
        v = levels[rng.integers(len(levels))]
        jitter = rng.uniform(-0.3, 0.3, size=3) * np.array([v["semi"][0], v["semi"][1], v["height"] / 2.0])
        return np.asarray(v["center"]) + jitter, v["name"], False
    stations = [
        s
        for s in lm["node_stations"]
        if z_range[0] < s["center"][2] + s["spread"][2] and s["center"][2] - s["spread"][2] < z_range[1]
    ]
    stations = stations or lm["node_stations"]
    w = np.array([s["weight"] for s in stations])
    s = stations[rng.choice(len(stations), p=w / w.sum())]
    return (
        np.asarray(s["center"]) + rng.uniform(-1, 1, size=3) * np.asarray(s["spread"]),
        s["name"],
        s["name"] in VESSEL_STATIONS,
    )


#: Share of lung lesions proposed beside a hilum.
PERIHILAR_P = 0.25
#: Stations whose lesions may touch great vessels and airways (not the heart's walls): the
#: nodes that lie beside them in patients.
VESSEL_STATIONS = (
    "perihilar",
    "hilar",
    "subcarinal",
    "paratracheal",
    "aortopulmonary",
    "prevascular",
    "para-aortic",
    "aortocaval",
    "retrocrural",
)


def _in_unit_ball(rng):
    while True:
        p = rng.uniform(-1, 1, size=3)
        if p @ p <= 1:
            return p


_HOSTS = {"liver": {LIVER}, "lung": {LUNG}, "bone": {MARROW, BONE}, "lymph node": {MUSCLE, FAT, RP_FAT}}


def _site_ok(phantom, region, center, radius, near_vessels=False):
    """The lesion lies in its host tissue and keeps clear of hot organs (and, unless
    ``near_vessels``, of vessels and airways)."""
    dirs = _sphere_dirs()
    if phantom.labels_at(center[None], with_lesions=False)[0] not in _HOSTS[region]:
        return False  # the centre alone first: most proposals fail here, cheaply
    inner = center + dirs * radius
    if region == "bone":
        inner = center + dirs * min(radius, 8.0)
    both = phantom.labels_at(np.vstack([center[None], inner, center + dirs * (radius + 10.0)]), with_lesions=False)
    labels, outer = both[: len(inner) + 1], both[len(inner) + 1 :]
    if region == "bone":
        if labels[0] not in _HOSTS["bone"]:
            return False
    elif not set(labels.tolist()) <= _HOSTS[region] or region == "lymph node" and labels[0] == MUSCLE:
        return False
    forbidden = set(HOT_ORGANS) | {BLOOD} | (set() if near_vessels else {AORTA, VESSEL, VEIN, AIRWAY})
    return not (set(outer.tolist()) & forbidden)


def _sphere_dirs(n=60):
    """Roughly uniform unit vectors (Fibonacci sphere)."""
    k = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * k / n)
    theta = np.pi * (1 + 5**0.5) * k
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1)


def make_anatomy(rng):
    """One patient's anatomy: see :func:`dualpet.synth.torso.make_anatomy`."""
    from dualpet.synth.torso import make_anatomy as _make

    return _make(rng)


def make_phantom(rng, tracers, n_lesions, z_range, population=None):
    """Sample a complete patient phantom (``population``: see :func:`sample_lesions`)."""
    shapes, landmarks, body = make_anatomy(rng)
    uptake, physiology = sample_uptake(rng, tracers)
    phantom = Phantom(shapes=shapes, uptake=uptake, body_semi=body, landmarks=landmarks, physiology=physiology)
    phantom.hu = sample_ct_numbers(rng)
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
