"""The phantom's anatomy: a patient-like trunk, drawn per patient.

Anatomy coordinates (see :mod:`dualpet.synth.phantom`): LPS mm, +x the patient's left,
+y posterior, +z cranial; origin on the body axis at the level of the diaphragm. The
shapes are painted in order; what is painted later wins. The numbers are those of
real adults (``domain.md``, "Real anatomy in numbers", cited as *domain*, and standard
anatomy), each drawn per patient within its range:

- spine: cervical, thoracic and lumbar vertebrae, each a body (cortex and marrow) with a
  disc above it, a neural arch around the spinal canal, a spinous process and two
  transverse processes; lordosis and kyphosis (the vertebral bodies lie about 75 mm in
  front of the back's muscle surface in the lumbar spine, about 50 mm in the thoracic);
- back: erector spinae and multifidus behind the spine (between the spinous processes and
  the rib angles), quadratus lumborum beside the lumbar transverse processes, psoas beside
  the lumbar vertebral bodies, growing caudally; trapezius;
- kidneys of 120-170 mL each (*domain*) from T12 to L3, lateral to the psoas, the hilum
  facing anteromedially, each wrapped in perirenal fat painted over the muscles, so that
  a fat plane always separates them from the back muscles of the same density (*domain*);
- aorta (*domain*): ascending 30-35 mm across (anterior, right), arch, descending thoracic
  20-28 mm left-anterior of the vertebral bodies, abdominal 15-24 mm down to the
  bifurcation at L4; venae cavae; pulmonary trunk and arteries, pulmonary veins, trachea
  and main bronchi meeting at the hila, which lie lateral to the mediastinum, outside the
  heart; oesophagus behind the heart, crossing in front of the aorta to its left at the
  hiatus;
- heart of 500-900 mL (*domain*) between the lungs, on the diaphragm, anterior and left:
  left ventricle with a 10 mm myocardial wall around its cavity (open at the base: a
  horseshoe in long-axis views), right ventricle, atria, all blood-filled;
- liver 1,200-1,800 mL, spleen 100-250 mL (*domain*); stomach in the left upper quadrant
  under the left diaphragm with an air-fluid level in most patients (supine: gas
  anterior); small-bowel loops and colon across the abdomen, with and without gas;
- shoulders: scapulae, clavicles, humeral heads with deltoids and the rotator cuff at the
  top of the thorax; arms down beside the trunk or up beside the head; neck muscles;
- brown-fat depots (supraclavicular, axillary, paravertebral), which take up FDG in some
  patients (:func:`dualpet.synth.phantom.sample_uptake`).
"""

from __future__ import annotations

import numpy as np

from dualpet.synth.shapes import (
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
    LIVER,
    LUNG,
    MARROW,
    METAL,
    MUSCLE,
    MYOCARDIUM,
    NECK_MUSCLE,
    OESOPHAGUS,
    RENAL_PELVIS,
    RIB,
    RP_FAT,
    SOFT,
    SPLEEN,
    STOMACH,
    STOMACH_FLUID,
    STOMACH_GAS,
    VEIN,
    VESSEL,
    Shape,
    sweep,
    tube,
)

#: Vertebral levels from the bottom up: (name, semi-width, semi-depth) of the vertebral
#: body (mm; lumbar bodies about 45-50 mm wide, thoracic 28-40, cervical 18-22).
LEVELS = (
    ("L5", 25.0, 17.0),
    ("L4", 24.5, 17.0),
    ("L3", 24.0, 17.0),
    ("L2", 23.0, 16.5),
    ("L1", 22.0, 16.0),
    ("T12", 20.0, 15.5),
    ("T11", 19.0, 15.0),
    ("T10", 18.0, 14.5),
    ("T9", 17.0, 14.0),
    ("T8", 16.5, 14.0),
    ("T7", 16.0, 13.5),
    ("T6", 15.5, 13.0),
    ("T5", 15.0, 13.0),
    ("T4", 14.5, 12.5),
    ("T3", 14.0, 12.0),
    ("T2", 14.0, 11.0),
    ("T1", 14.0, 11.0),
    ("C7", 12.0, 9.0),
    ("C6", 10.5, 8.0),
    ("C5", 10.0, 8.0),
    ("C4", 10.0, 8.0),
    ("C3", 10.0, 8.0),
    ("C2", 9.0, 8.0),
    ("C1", 9.0, 7.0),
)
#: Depth (mm) of the vertebral body's centre in front of the back's muscle surface.
SPINE_DEPTH = {"L5": 80.0, "L4": 79.0, "L3": 77.0, "L2": 75.0, "L1": 72.0, "T12": 66.0, "T11": 62.0, "T10": 58.0}
SPINE_DEPTH_THORACIC = 54.0
#: Spinal canal semi-axes (mm) per region: lumbar 22 x 16, thoracic 17 x 15, cervical 24 x 14 mm.
CANAL_SEMI = {"L": (11.0, 8.0), "T": (8.5, 7.5), "C": (12.0, 7.0)}
#: Organ volumes (mL) drawn per patient, before the shapes painted later take their share:
#: the right kidney, inferior vena cava and heart take 9-18 % of the liver's, the aortic
#: root, pulmonary trunk and veins, venae cavae and oesophagus 9-15 % of the heart's, so
#: that the organs end within the *domain* ranges (liver 1,200-1,800, heart 500-900;
#: spleen 100-250 and kidneys 120-170 mL keep theirs).
LIVER_ML, SPLEEN_ML, KIDNEY_ML, HEART_ML = (1480.0, 1950.0), (130.0, 230.0), (125.0, 165.0), (590.0, 860.0)
#: Aortic diameters (mm, *domain*): ascending, descending thoracic, abdominal (top, above
#: the bifurcation, which lies at L4).
AORTA_MM = {
    "ascending": (30.0, 35.0),
    "descending": (21.0, 27.0),
    "abdominal": (17.0, 23.0),
    "bifurcation": (15.0, 18.0),
}
#: LV myocardial wall thickness (mm).
LV_WALL_MM = 10.0


def make_anatomy(rng):
    """Sample one patient's anatomy.

    Returns the list of shapes in paint order, a dict of landmarks (used for lesion
    placement, the truth and the tests) and the trunk's semi-axes (bx, by).
    """
    b = _body(rng)
    spine = _spine_levels(rng, b)
    lm = {"vertebrae": spine, "shoulder_z": b["S"]}
    shapes = _trunk(rng, b, lm)
    shapes += _back_muscles(b, spine)
    shapes += _lungs_and_mediastinum(rng, b, spine, lm)
    shapes += _upper_abdomen(rng, b, spine, lm)
    shapes += _kidneys(rng, b, spine, lm)
    shapes += _bowel(rng, b, spine, lm)
    shapes += _heart(rng, b, lm)
    shapes += _vessels(rng, b, spine, lm)
    shapes += _airways_and_oesophagus(rng, b, spine, lm)
    shapes.append(lm.pop("aorta_shape"))  # whole: the vessels, airways and oesophagus beside it do not cut it
    shapes += _spine_shapes(b, spine)
    shapes += _pelvis(b, spine)
    shapes += _ribs_and_sternum(rng, b, spine, lm)
    shapes += _shoulders_and_arms(rng, b, lm)
    shapes += _brown_fat(b, spine, lm)
    port = rng.uniform() < 0.3  # a venous port chamber in the right upper chest wall
    if port:
        shapes.append(
            Shape(
                METAL,
                np.array([-70.0, b["front"] + 0.5 * b["fat_t"] - 2.0, b["S"] - 105.0]),
                np.array([12.0, 4.0, 12.0]),
                "cylinder",
            )
        )
    lm["port"] = port
    lm["node_stations"] = node_stations(b, spine, lm)
    return shapes, lm, (b["bx"], b["by"])


# --- body, spine ------------------------------------------------------------------------


def _body(rng):
    """Body size and wall layers; lungs; the shoulders' height S (top of the trunk)."""
    s = rng.uniform(0.92, 1.08, size=3)  # body scale per axis
    bx, by = 165.0 * s[0], 115.0 * s[1]
    fat_t, fat_b, wall = rng.uniform(10.0, 26.0), rng.uniform(7.0, 15.0), rng.uniform(9.0, 14.0)
    b = {"s": s, "bx": bx, "by": by, "fat_t": fat_t, "fat_b": fat_b, "wall": wall}
    # muscle ellipse: subcutaneous fat fat_t at the front and sides, fat_b at the back
    # (compressed on the couch)
    b["mc"] = (fat_t - fat_b) / 2.0
    b["mx"], b["my"] = bx - fat_t, by - (fat_t + fat_b) / 2.0
    b["front"], b["back"] = b["mc"] - b["my"], b["mc"] + b["my"]  # muscle surface front and back (y)
    b["cx"], b["cy"] = b["mx"] - wall, b["my"] - wall  # body cavity (inside the muscle wall)
    # lungs fill the chest to the ribs (a few mm of extrapleural fat) and reach back beside
    # the spine; the mediastinum is painted over their medial parts
    g = rng.uniform(0.92, 1.08, size=3)
    lung_semi = np.array([0.5 * b["cx"], b["cy"], 115.0]) * g
    lung_c = []
    for side in (-1, 1):
        c = np.array([side * 0.48 * b["cx"], b["mc"] + 2.0, 95.0])
        lung_c.append(c + rng.uniform(-6.0, 6.0, size=3) * [0.5, 0.5, 1])
    b["lung_semi"] = lung_semi
    # the rib cage's inside (a few mm of extrapleural fat within the body cavity)
    b["rib_cage"] = Shape(
        0, np.array([0.0, b["mc"], 0.0]), np.array([b["cx"] - rng.uniform(3.0, 6.0), b["cy"] - 4.0, 2000.0]), "cylinder"
    )
    b["lung_c"] = lung_c
    b["S"] = max(c[2] for c in lung_c) + b["lung_semi"][2] + rng.uniform(20.0, 35.0)
    b["neck_y"] = 0.2 * by
    return b


def _spine_levels(rng, b):
    """Vertebrae from L5 up to C1: name, centre of the body, its semi-axes, body height,
    level pitch, canal semi-axes and where the transverse processes end.

    T12 lies 40-60 mm below the diaphragm's level (the kidneys' upper poles are at T12);
    lumbar pitch (body and disc) about 30 mm, thoracic pitch so that T1 is just below the
    shoulders, cervical 16 mm.
    """
    scale = rng.uniform(0.92, 1.08)  # vertebral size
    z12 = -50.0 + rng.uniform(-8.0, 8.0)
    pl = 30.0 * b["s"][2]
    pt = (b["S"] - 12.0 - z12) / 11.0
    pc = 16.0 * b["s"][2]
    out = []
    for i, (name, w, d) in enumerate(LEVELS):
        if name[0] == "L":
            z = z12 - pl * (5 - i)
            pitch = pl
        elif name[0] == "T":
            z = z12 + pt * (i - 5)
            pitch = pt
        else:
            z = z12 + pt * 11 + (pt + pc) / 2.0 + pc * (i - 17)
            pitch = pc
        w, d = w * scale, d * scale
        if name[0] == "C":  # cervical lordosis: forward of the thoracic spine, inside the neck
            y = b["neck_y"] + 14.0 - 10.0 * (i - 17) / 6.0
        else:
            y = b["back"] - SPINE_DEPTH.get(name, SPINE_DEPTH_THORACIC) * np.sqrt(b["s"][1])
        cx, cy = CANAL_SEMI[name[0]]
        out.append(
            {
                "name": name,
                "center": np.array([0.0, y, z]),
                "semi": (w, d),
                "height": 0.78 * pitch,
                "pitch": pitch,
                "canal": (cx * scale, cy * scale),
            }
        )
    return out


def _level(spine, name):
    return next(v for v in spine if v["name"] == name)


def _spine_y(spine, z):
    """Centre (y) of the vertebral bodies at height z (interpolated)."""
    zz = [v["center"][2] for v in spine]
    return float(np.interp(z, zz, [v["center"][1] for v in spine]))


def _spine_front(spine, z):
    """Anterior surface (y) of the vertebral bodies at height z."""
    zz = [v["center"][2] for v in spine]
    return float(np.interp(z, zz, [v["center"][1] - v["semi"][1] for v in spine]))


def _spine_shapes(b, spine):
    """Vertebrae (organ ``vertebrae``: body, arch, processes), discs and the spinal canal."""
    shapes = []
    for i, v in enumerate(spine):
        shapes += _vertebra(b, v)
        if i + 1 < len(spine):  # the disc above, between this body and the next
            shapes.append(_disc(v, spine[i + 1]))
    shapes.append(_spinal_canal(spine))
    return shapes


def _vertebra(b, v):
    """One vertebra: neural arch, spinous and transverse processes, body (cortex and marrow)."""
    c, (w, d), h, pitch = v["center"], v["semi"], v["height"], v["pitch"]
    cx, cy = v["canal"]
    arch_y = c[1] + d + cy + 2.0
    shapes = [
        Shape(
            BONE,
            np.array([0.0, arch_y, c[2]]),
            np.array([cx + 5.5, cy + 5.0, 0.32 * pitch]),
            "cylinder",
            organ="vertebrae",
        )
    ]
    shapes.append(_spinous_process(b, v, arch_y))
    shapes += _transverse_processes(v)
    shapes.append(Shape(BONE, c.copy(), np.array([w, d, h / 2.0]), "cylinder", organ="vertebrae"))
    # the cortical shell as a 3 mm CT grid shows it (1 mm of cortex partial-volumed with marrow), so
    # that point-sampled grids do not lose it where a voxel centre misses a thinner shell
    shapes.append(Shape(MARROW, c.copy(), np.array([w - 3.5, d - 3.5, h / 2.0 - 2.0]), "cylinder", organ="vertebrae"))
    return shapes


def _spinous_process(b, v, arch_y):
    """A vertebra's spinous process, from the back of its arch at ``arch_y``."""
    c, region = v["center"], v["name"][0]
    cy = v["canal"][1]
    # spinous process: posterior and (thoracic) steeply downward; its tip under the back's surface
    tilt = {"L": 8.0, "T": 40.0, "C": 15.0}[region] * (0.6 if v["name"] in ("T1", "T2", "T11", "T12") else 1.0)
    t = np.deg2rad(tilt)
    y0 = arch_y + cy + 3.0
    length = {"L": 32.0, "T": 34.0, "C": 22.0}[region] * (1.5 if v["name"] == "C7" else 1.0)
    limit = (b["back"] - 4.0 - y0) / np.cos(t) if region != "C" else (b["neck_y"] + 48.0 - y0) / np.cos(t)
    length = max(min(length, limit), 8.0)
    return Shape(
        BONE,
        np.array([0.0, y0 + length / 2.0 * np.cos(t), c[2] - length / 2.0 * np.sin(t)]),
        np.array([3.5, length / 2.0, 5.5]),
        rotation=_rot_x(-t),
        organ="vertebrae",
    )


def _transverse_processes(v):
    """A vertebra's two transverse processes; their tips go to ``v["tp_tip"]`` (the ribs start there)."""
    c, d, region = v["center"], v["semi"][1], v["name"][0]
    cx = v["canal"][0]
    # transverse processes: lateral (lumbar), posterolateral (thoracic: they hold the ribs)
    tp_len = {"L": 22.0, "T": 18.0, "C": 10.0}[region]
    back_angle = np.deg2rad({"L": 5.0, "T": 30.0, "C": -10.0}[region])
    shapes = []
    for side in (-1, 1):
        root = np.array([side * (cx + 4.0), c[1] + d + 4.0, c[2]])
        direction = np.array([side * np.cos(back_angle), np.sin(back_angle), 0.0])
        tip = root + direction * tp_len
        v.setdefault("tp_tip", {})[side] = tip
        shapes.append(tube(BONE, [root, tip], [5.0, 4.0], organ="vertebrae"))
    return shapes


def _disc(v, nxt):
    """The intervertebral disc between the body of ``v`` and that of the next level up."""
    c, (w, d), h = v["center"], v["semi"], v["height"]
    zc = (c[2] + h / 2.0 + nxt["center"][2] - nxt["height"] / 2.0) / 2.0
    half = max((nxt["center"][2] - nxt["height"] / 2.0 - c[2] - h / 2.0) / 2.0, 0.5)
    return Shape(
        DISC,
        np.array([0.0, (c[1] + nxt["center"][1]) / 2.0, zc]),
        np.array([w - 1.0, d - 1.0, half]),
        "cylinder",
    )


def _spinal_canal(spine):
    """The spinal canal behind the vertebral bodies, from below L5 to above C1."""
    knots = [(v["center"][2], 0.0, v["center"][1] + v["semi"][1] + v["canal"][1] + 2.0, *v["canal"]) for v in spine]
    knots = [(knots[0][0] - 40.0, *knots[0][1:])] + knots + [(knots[-1][0] + 15.0, *knots[-1][1:])]
    return sweep(CANAL, knots)


def _pelvis(b, spine):
    """Sacrum (organ ``vertebrae``, TotalSegmentator's class 25) and iliac wings."""
    l5 = _level(spine, "L5")
    c5 = l5["center"]
    shapes = []
    sac = np.array([0.0, c5[1] + 18.0, c5[2] - l5["pitch"] / 2.0 - 45.0])
    rot = _rot_x(np.deg2rad(35.0))  # the sacrum slopes backwards as it descends
    shapes.append(Shape(BONE, sac, np.array([40.0, 16.0, 48.0]), rotation=rot, organ="vertebrae"))
    shapes.append(Shape(MARROW, sac, np.array([36.0, 12.0, 44.0]), rotation=rot, organ="vertebrae"))
    for side in (-1, 1):
        c = np.array([side * 75.0 * b["s"][0], c5[1] - 5.0, c5[2] - 30.0])
        rot = _rot_z(side * np.deg2rad(-35.0))
        shapes.append(Shape(BONE, c, np.array([55.0, 7.0, 42.0]), rotation=rot))
        shapes.append(Shape(MARROW, c, np.array([52.0, 3.5, 39.0]), rotation=rot))
        head = np.array([side * 92.0 * b["s"][0], c5[1] - 40.0, c5[2] - 150.0])
        shapes.append(Shape(BONE, head, np.full(3, 24.0)))
        shapes.append(Shape(MARROW, head, np.full(3, 20.0)))
        shapes.append(tube(BONE, [head, head + [side * 15.0, 10.0, -120.0], [side * 110.0, 10.0, -1000.0]], 14.0))
        shapes.append(tube(MARROW, [head, head + [side * 15.0, 10.0, -120.0], [side * 110.0, 10.0, -1000.0]], 8.0))
    return shapes


# --- trunk and muscles ------------------------------------------------------------------


def _trunk(rng, b, lm):
    """Skin fat over a muscle wall around the body cavity's fat (visceral, retroperitoneal
    and, in the chest, mediastinal and extrapleural fat); neck and head."""
    S, low = b["S"], -1000.0  # the trunk runs on below every field of view
    tc, th = (S + low) / 2.0, (S - low) / 2.0
    shapes = [
        Shape(FAT, np.array([0.0, 0.0, tc]), np.array([b["bx"], b["by"], th]), "cylinder"),
        Shape(MUSCLE, np.array([0.0, b["mc"], tc]), np.array([b["mx"], b["my"], th]), "cylinder"),
    ]
    # neck: skin fat over muscle (sternocleidomastoid, scalenes, posterior neck muscles),
    # its visceral compartment (fat around trachea, oesophagus, vessels) in front
    ny = b["neck_y"]
    neck_c = np.array([0.0, ny, S + 60.0])
    shapes.append(Shape(FAT, neck_c, np.array([60.0, 58.0, 80.0]), "cylinder"))
    shapes.append(Shape(NECK_MUSCLE, neck_c, np.array([51.0, 49.0, 80.0]), "cylinder"))
    # upper trapezius: the slope from the neck to the shoulders (inside the trunk the
    # body cavity, painted next, takes its place)
    for side in (-1, 1):
        c = np.array([side * 62.0, ny + 18.0, S])
        shapes.append(Shape(FAT, c, np.array([62.0, 38.0, 36.0]), replaces=frozenset({0})))
        shapes.append(Shape(NECK_MUSCLE, c, np.array([52.0, 28.0, 27.0]), replaces=frozenset({0, FAT, MUSCLE})))
    top = S - 6.0
    shapes.append(
        Shape(
            FAT,
            np.array([0.0, b["mc"], (top + low) / 2.0]),
            np.array([b["cx"], b["cy"], (top - low) / 2.0]),
            "cylinder",
        )
    )
    shapes.append(Shape(FAT, np.array([0.0, ny - 22.0, S + 60.0]), np.array([26.0, 20.0, 80.0]), "cylinder"))
    head_c = np.array([0.0, -5.0, S + 205.0]) + rng.uniform(-4.0, 4.0, size=3)
    head_semi = np.array([76.0, 94.0, 106.0]) * rng.uniform(0.95, 1.05)
    shapes.append(Shape(FAT, head_c, head_semi))
    shapes.append(Shape(BONE, head_c, head_semi - 6.0, organ="skull"))
    shapes.append(Shape(BRAIN, head_c, head_semi - 13.0))
    lm["head_center"], lm["head_semi"] = head_c, head_semi
    return shapes


def _back_muscles(b, spine):
    """Erector spinae and multifidus (BACK_MUSCLE) behind the spine from the sacrum to T1,
    quadratus lumborum from the 12th rib to the iliac crest, psoas beside the lumbar
    bodies (small at T12, 35-40 mm across at L5), trapezius over the upper back."""
    shapes = []
    trunk = [v for v in spine if v["name"][0] in "TL"]
    lumbar = [v for v in spine if v["name"][0] == "L"]
    for side in (-1, 1):
        knots = []
        for v in trunk:
            c, (w, d) = v["center"], v["semi"]
            front, back = c[1] + d + 4.0, b["back"] - 0.5
            ax = {"L": 27.0, "T": 21.0}[v["name"][0]] * (1.1 if v["name"] in ("T12", "T11") else 1.0)
            knots.append((c[2], side * (4.0 + ax), (front + back) / 2.0, ax, (back - front) / 2.0))
        knots.insert(0, (knots[0][0] - 60.0, *knots[0][1:]))
        shapes.append(sweep(BACK_MUSCLE, knots))
        # quadratus lumborum: lateral to the transverse processes' tips, behind the kidney
        knots = []
        for i, v in enumerate(lumbar):  # L5 first: widest at the iliac crest
            c, (w, d) = v["center"], v["semi"]
            aq = 16.0 - 2.0 * i
            knots.append((c[2], side * (w + 18.0 + aq), c[1] + d + 10.0, aq, 10.0 - 0.5 * i))
        t12 = _level(spine, "T12")["center"]
        knots.append((t12[2] - 5.0, side * (_level(spine, "T12")["semi"][0] + 26.0), t12[1] + 20.0, 6.0, 5.0))
        shapes.append(sweep(MUSCLE, knots))
        # psoas: from T12 to L5, then forward into the pelvis (iliopsoas)
        knots = []
        grow = {
            "T12": (4.0, 4.0),
            "L1": (7.0, 7.0),
            "L2": (10.0, 9.0),
            "L3": (13.0, 12.0),
            "L4": (16.0, 14.0),
            "L5": (19.0, 16.0),
        }
        for v in [_level(spine, n) for n in ("L5", "L4", "L3", "L2", "L1", "T12")]:
            c, (w, d) = v["center"], v["semi"]
            ax, ay = grow[v["name"]]
            knots.append((c[2], side * (w + ax - 1.0), c[1] - 2.0 - 0.4 * ax, ax, ay))
        l5 = _level(spine, "L5")["center"]
        knots.insert(0, (l5[2] - 40.0, side * (l5[0] + 48.0), l5[1] - 22.0, 19.0, 16.0))
        knots.insert(0, (l5[2] - 100.0, side * 72.0, l5[1] - 48.0, 17.0, 15.0))
        shapes.append(sweep(MUSCLE, knots))
    # trapezius: a thin sheet over the upper back (NECK_MUSCLE: it takes up FDG with the shoulders)
    knots = []
    for v in trunk:
        z = v["center"][2]
        if v["name"] in ("L1", "L2", "L3", "L4", "L5"):
            continue
        k = (z - _level(spine, "T12")["center"][2]) / max(b["S"] - _level(spine, "T12")["center"][2], 1.0)
        knots.append((z, 0.0, b["back"] - 4.0, 25.0 + 55.0 * min(k * 1.6, 1.0), 5.0))
    knots.append((b["S"] - 2.0, 0.0, b["back"] - 6.0, 85.0, 8.0))
    shapes.append(sweep(NECK_MUSCLE, knots, replaces=frozenset({BACK_MUSCLE, MUSCLE, FAT})))
    return shapes


# --- chest ------------------------------------------------------------------------------


def _lungs_and_mediastinum(rng, b, spine, lm):
    """Lungs; mediastinal fat between them (from the diaphragm to the thoracic inlet);
    the carina and the hila (lateral to the mediastinum) with a fat pad each."""
    shapes = _lungs(b)
    t5, t6 = _level(spine, "T5"), _level(spine, "T6")
    z_c = (t5["center"][2] + t6["center"][2]) / 2.0 + rng.uniform(-5.0, 5.0)  # carina at T5/T6
    sternum_back = b["front"] + b["wall"] + 6.0
    shapes.append(_mediastinal_fat(b, spine, z_c, sternum_back))
    shapes += _paravertebral_fat(spine)
    y_tr = _spine_front(spine, z_c) - 17.0  # trachea's centre: in front of the oesophagus
    hila, hilar_fat = _hila(rng, z_c, y_tr)
    shapes += hilar_fat
    lm.update(
        {
            "carina_z": z_c,
            "trachea_y": y_tr,
            "hila": hila,
            "lung_centers": b["lung_c"],
            "lung_semi": b["lung_semi"],
            "sternum_back": sternum_back,
        }
    )
    return shapes


def _lungs(b):
    """The two lungs, inside the rib cage."""
    shapes = []
    for c in b["lung_c"]:
        shapes.append(
            Shape(LUNG, c, b["lung_semi"], organ="lung_right" if c[0] < 0 else "lung_left", within=b["rib_cage"])
        )
    return shapes


def _mediastinal_fat(b, spine, z_c, sternum_back):
    """Mediastinal fat from the sternum back to the spine, from the diaphragm to the thoracic inlet."""
    knots = []
    for z, half in (
        (8.0, 30.0),
        (60.0, 32.0),
        (z_c - 20.0, 30.0),
        (z_c + 20.0, 26.0),
        (b["S"] - 40.0, 22.0),
        (b["S"] - 8.0, 20.0),
    ):
        front, back = sternum_back, _spine_front(spine, z) + 6.0
        knots.append((z, 4.0, (front + back) / 2.0, half, (back - front) / 2.0))
    return sweep(FAT, knots)


def _paravertebral_fat(spine):
    """Paravertebral fat strips beside the thoracic vertebral bodies."""
    shapes = []
    # paravertebral fat strips beside the thoracic bodies (brown fat lives there)
    for side in (-1, 1):
        knots = [
            (v["center"][2], side * (v["semi"][0] + 6.0), v["center"][1] + 2.0, 7.0, v["semi"][1] + 2.0)
            for v in spine
            if v["name"][0] == "T"
        ]
        shapes.append(sweep(FAT, knots))
    return shapes


def _hila(rng, z_c, y_tr):
    """The hila (right first), lateral to the mediastinum below the carina, and a fat pad at each."""
    half_med = 30.0
    hila, shapes = [], []
    for side in (-1, 1):  # right (-x) first
        h = np.array(
            [
                side * (half_med + rng.uniform(14.0, 22.0)),
                y_tr + rng.uniform(-4.0, 6.0) + (4.0 if side > 0 else 0.0),
                z_c - rng.uniform(14.0, 22.0) + (6.0 if side > 0 else 0.0),
            ]
        )
        hila.append(h)
        shapes.append(Shape(FAT, h + [side * 2.0, -4.0, -8.0], np.array([19.0, 21.0, 32.0])))
    return hila, shapes


def _heart(rng, b, lm):
    """The heart: four chambers, each an ellipsoid with its wall, scaled to a volume of
    HEART_ML (*domain* 500-900 mL), its long axis pointing anteriorly, left and down.

    Left ventricle: myocardium (MYOCARDIUM) LV_WALL_MM thick around the blood-filled
    cavity, which reaches past the wall at the base (valve plane): a ring in short-axis
    views, a horseshoe in long-axis views. Right ventricle (3-4 mm wall) in front and to
    the right of it, atria above and behind (left) and to the right (right). Epicardial
    fat 4 mm around all of them.
    """
    H = np.array([24.0, -32.0, 46.0]) + rng.uniform(-5.0, 5.0, size=3)
    H[1] = max(H[1], lm["sternum_back"] + 52.0)  # the right ventricle behind the sternum
    u = np.array([0.6, -0.62, -0.45]) + rng.uniform(-0.06, 0.06, size=3)
    u /= np.linalg.norm(u)
    e2 = np.cross([0.0, 0.0, 1.0], u)
    e2 /= np.linalg.norm(e2)  # horizontal, left-posterior
    e3 = np.cross(u, e2)
    R = np.column_stack([u, e2, e3])  # shape frame: x along the long axis
    # chambers at unit scale: (name, offset from H, semi-axes, rotation)
    lv_off = np.array([12.0, 6.0, -4.0])
    # (end-diastolic, with walls, at unit scale: LV 90 x 62 mm, its cavity 42 mm across;
    # the LV is scaled by 1.02-1.2, the other chambers make up the drawn volume)
    chambers = [
        ("ra", np.array([-30.0, 0.0, 6.0]), np.array([26.0, 25.0, 26.0]), None),
        ("la", np.array([2.0, 16.0, 16.0]), np.array([30.0, 17.0, 17.0]), None),
        ("rv", lv_off - 26.0 * e2, np.array([48.0, 21.0, 36.0]), R),
        ("lv", lv_off, np.array([45.0, 31.0, 31.0]), R),
    ]
    target = rng.uniform(*HEART_ML)
    lv_scale = rng.uniform(1.02, 1.2)  # the LV keeps a normal size (cavity 43-55 mm across)

    def placed(f):
        return [
            (name, H + (lv_scale if name == "lv" else f) * o, (lv_scale if name == "lv" else f) * s, r)
            for name, o, s, r in chambers
        ]

    f = 1.0
    for _ in range(3):  # the other chambers make up the drawn volume
        f *= (target / _union_ml([(c, s, r) for _, c, s, r in placed(f)], step=4.0)) ** (1.0 / 3.0)
    shapes = []
    for _, c, s, r in placed(f):  # epicardial fat
        shapes.append(Shape(FAT, c, s + 4.0, rotation=r))
    parts = {}
    for name, c, semi, r in placed(f):
        parts[name] = (c, semi, r)
        if name == "lv":
            shapes.append(Shape(MYOCARDIUM, c, semi, rotation=r))
            cav = semi - LV_WALL_MM
            cav[0] = semi[0] - 0.5 * LV_WALL_MM
            cav_c = c - u * (0.5 * LV_WALL_MM + 0.12 * semi[0])  # towards the base: open there
            shapes.append(Shape(BLOOD, cav_c, cav, rotation=r))
            parts["lv_cavity"] = (cav_c, cav, r)
        else:
            wall = 4.0 if name == "rv" else 3.0
            shapes.append(Shape(HEART_WALL, c, semi, rotation=r))
            shapes.append(Shape(BLOOD, c, semi - wall, rotation=r))
    lm["heart"] = {"center": H, "axis": u, "e2": e2, "scale": f, "volume_target_ml": target, "parts": parts}
    return shapes


def _union_ml(ellipsoids, step=3.0):
    """Volume (mL) of a union of ellipsoids ``(centre, semi, rotation)``, counted on a grid."""
    shapes = [Shape(0, c, s, rotation=r) for c, s, r in ellipsoids]
    lo = np.min([sh.bbox()[0] for sh in shapes], axis=0)
    hi = np.max([sh.bbox()[1] for sh in shapes], axis=0)
    axes = [np.arange(a + step / 2.0, z_, step) for a, z_ in zip(lo, hi)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    inside = np.zeros(len(pts), bool)
    for sh in shapes:
        inside |= sh.contains(pts)
    return float(inside.sum()) * step**3 / 1000.0


# --- abdomen ----------------------------------------------------------------------------


def _upper_abdomen(rng, b, spine, lm):
    """Stomach (wall, fluid and, in most patients, gas above an air-fluid level), liver
    (right lobe and a left lobe across the midline in front of the stomach) and spleen."""
    shapes = _stomach(rng, b, lm)
    shapes += _liver(rng, b, lm)
    shapes.append(_spleen(rng, b, lm))
    return shapes


def _stomach(rng, b, lm):
    """The stomach in the left upper quadrant: wall, fluid and, in most patients, gas above it."""
    shapes = []
    k = rng.uniform(0.8, 1.1)  # filling
    cx = b["cx"]
    pts = np.array(
        [
            [0.36 * cx, 16.0, -4.0],
            [0.45 * cx, -8.0, -32.0],
            [0.38 * cx, -30.0, -60.0],
            [0.12 * cx, -46.0, -78.0],
            [-0.08 * cx, -40.0, -76.0],
        ]
    ) + rng.uniform(-5.0, 5.0, size=(5, 3))
    radii = np.array([27.0, 28.0, 24.0, 17.0, 10.0]) * k
    wall = rng.uniform(4.0, 6.0)
    shapes.append(tube(STOMACH, pts, radii, replaces=frozenset({FAT})))
    shapes.append(tube(STOMACH_FLUID, pts, radii - wall, replaces=frozenset({STOMACH})))
    gas = rng.uniform() < 0.75
    level = None
    if gas:  # supine: gas rises anteriorly (-y); the level is a coronal plane, horizontal on axial images
        y_min = float(np.min(pts[:, 1] - (radii - wall)))
        level = y_min + rng.uniform(8.0, 26.0)
        shapes.append(
            tube(
                STOMACH_GAS,
                pts,
                radii - wall,
                replaces=frozenset({STOMACH_FLUID}),
                clip=(np.array([0.0, 1.0, 0.0]), level),
            )
        )
    lm["stomach"] = {"points": pts, "radii": radii, "wall": wall, "gas": gas, "level_y": level}
    return shapes


def _liver(rng, b, lm):
    """The liver (LIVER_ML): right lobe under the right dome, left lobe across the midline."""
    cx = b["cx"]
    # liver: right lobe under the right dome, left lobe across the midline, anterior
    right_c = np.array([-62.0, -4.0, -30.0]) + rng.uniform(-5.0, 5.0, size=3)
    left_c = np.array([-2.0, -44.0, -20.0]) + rng.uniform(-6.0, 6.0, size=3)
    rs, ls = (
        np.array([72.0, 76.0, 70.0]) * rng.uniform(0.93, 1.07, 3),
        np.array([50.0, 27.0, 38.0]) * rng.uniform(0.9, 1.1, 3),
    )
    f = (rng.uniform(*LIVER_ML) / _union_ml([(right_c, rs, None), (left_c, ls, None)])) ** (1.0 / 3.0)
    rs, ls = rs * f, ls * f
    left_c = right_c + (left_c - right_c) * f
    # inside the body wall and clear of the spine: a narrow patient's liver is taller
    # instead of wider (same volume)
    room = cx - 6.0 - 40.0  # from 40 mm right of the midline to the wall
    if 2.0 * rs[0] > room + rs[0] * 0.6:
        new_x = (room + rs[0] * 0.6) / 2.0
        rs[2] *= rs[0] / new_x
        rs[0] = new_x
    right_c[0] = -(cx - 6.0 - rs[0])
    left_c[0] = right_c[0] + 60.0 * f
    shift_y = max(0.0, (left_c[1] - ls[1]) * -1.0 - (b["cy"] - b["mc"] - 6.0))
    right_c[1] += shift_y
    left_c[1] += shift_y
    shapes = [Shape(LIVER, right_c, rs), Shape(LIVER, left_c, ls)]
    lm["liver_center"], lm["liver_semi"] = right_c, rs
    return shapes


def _spleen(rng, b, lm):
    """The spleen (SPLEEN_ML): posterolateral left under the diaphragm, along the 10th rib."""
    ss = np.array([30.0, 22.0, 50.0]) * rng.uniform(0.92, 1.08, 3)
    ss *= (rng.uniform(*SPLEEN_ML) / (4.0 / 3.0 * np.pi * np.prod(ss) / 1000.0)) ** (1.0 / 3.0)
    sc = np.array([b["cx"] - ss[0] - 10.0, b["mc"] + 38.0, -28.0]) + rng.uniform(-5.0, 5.0, size=3)
    rot = _rot_z(np.deg2rad(-35.0)) @ _rot_x(np.deg2rad(15.0))
    spleen = Shape(SPLEEN, sc, ss, rotation=rot)
    lm["spleen_center"] = sc
    return spleen


def _kidneys(rng, b, spine, lm):
    """Kidneys of KIDNEY_ML mL at T12-L3, lateral to the psoas, hilum anteromedial, each in
    perirenal fat (RP_FAT, 7-12 mm) painted over the muscles; renal pelvis at the hilum."""
    shapes = []
    l1, l2 = _level(spine, "L1"), _level(spine, "L2")
    z_left = (l1["center"][2] + l2["center"][2]) / 2.0 + rng.uniform(-6.0, 6.0)
    kidneys = {}
    for side in (1, -1):  # left first: the right lies 10-20 mm lower (under the liver)
        z = z_left if side > 0 else z_left - rng.uniform(10.0, 20.0)
        volume = rng.uniform(*KIDNEY_ML)
        a, c = rng.uniform(24.0, 28.0), rng.uniform(48.0, 56.0)
        bb = volume * 1000.0 / (4.0 / 3.0 * np.pi * a * c)
        semi = np.array([a, bb, c])
        phi = np.deg2rad(rng.uniform(30.0, 40.0))
        hilum = np.array([-side * np.cos(phi), -np.sin(phi), 0.0])  # medial and anterior
        # shape x: lateral-posterior (away from the hilum); z: the long axis, upper pole tilted medially
        rot = _rot_z(np.arctan2(-hilum[1], -hilum[0])) @ _rot_y(np.deg2rad(-10.0))
        fat = rng.uniform(7.0, 12.0)
        psoas_edge = _level(spine, "L2")["semi"][0] + 2.0 * 11.0  # psoas' lateral edge near L1-L2
        centre = np.array([side * (psoas_edge + fat + 0.9 * a + 2.0), _spine_y(spine, z) - rng.uniform(10.0, 18.0), z])
        shapes.append(Shape(RP_FAT, centre, semi + fat, rotation=rot))
        organ = "kidney_right" if side < 0 else "kidney_left"
        shapes.append(Shape(KIDNEY, centre, semi, rotation=rot, organ=organ))
        pelvis_c = centre + hilum * 0.5 * a
        shapes.append(
            Shape(RENAL_PELVIS, pelvis_c, np.array([8.0, 7.0, 14.0]) * rng.uniform(0.8, 1.2), rotation=rot, organ=organ)
        )
        kidneys["right" if side < 0 else "left"] = {
            "center": centre,
            "semi": semi,
            "rotation": rot,
            "hilum": hilum,
            "volume_ml": volume,
            "fat_mm": fat,
        }
    lm["kidneys"] = kidneys
    return shapes


def _bowel(rng, b, spine, lm):
    """Colon (ascending, transverse, descending) and small-bowel loops across the abdomen
    in the visceral fat (painted over fat only), some with gas, some FDG-avid; loops
    without gas look like soft tissue. The mesenteric root (a node station) stays free."""
    shapes = []
    cx = b["cx"]
    l1, l3, l5 = (_level(spine, n)["center"][2] for n in ("L1", "L3", "L5"))
    mes = np.array([0.0, b["mc"] - 0.45 * b["cy"], l3 + 5.0])
    lm["mesenteric_root"] = mes
    y_front = b["mc"] - b["cy"]
    colon = [
        [[-(cx - 32.0), 8.0, l5 - 20.0], [-(cx - 30.0), 0.0, l3], [-(cx - 34.0), -10.0, l1 - 15.0]],
        [
            [-(cx - 34.0), -10.0, l1 - 15.0],
            [-40.0, y_front + 45.0, l1 - 10.0],
            [40.0, y_front + 45.0, l1 - 5.0],
            [cx - 30.0, -5.0, l1 + 5.0],
        ],
        [[cx - 30.0, -5.0, l1 + 5.0], [cx - 26.0, 14.0, l3], [cx - 30.0, 10.0, l5 - 30.0], [30.0, -20.0, l5 - 60.0]],
    ]
    fill = frozenset({FAT, BOWEL, BOWEL_HOT, BOWEL_GAS})
    for seg in colon:
        pts = np.array(seg) + rng.uniform(-5.0, 5.0, size=(len(seg), 3))
        r = rng.uniform(15.0, 22.0)
        label = BOWEL_HOT if rng.uniform() < 0.3 else BOWEL
        shapes.append(tube(label, pts, r, replaces=fill))
        if rng.uniform() < 0.6:
            shapes.append(tube(BOWEL_GAS, pts, r - 3.5, replaces=frozenset({label})))
    n = int(rng.integers(10, 17))
    placed = 0
    for _ in range(200):
        if placed == n:
            break
        # intraperitoneal: in front of the retroperitoneum (aorta, vena cava, kidneys)
        c = np.array(
            [rng.uniform(-cx + 55.0, cx - 55.0), rng.uniform(y_front + 30.0, -12.0), rng.uniform(l5 - 50.0, l1 - 25.0)]
        )
        if np.linalg.norm((c - mes) / [1.0, 1.0, 0.8]) < 55.0:
            continue
        r = rng.uniform(10.0, 16.0)
        d1 = _unit(rng, [1.0, 0.6, 0.5])
        d2 = _unit(rng, [1.0, 0.6, 0.5])
        pts = [c - d1 * rng.uniform(20.0, 35.0), c, c + d2 * rng.uniform(20.0, 35.0)]
        label = BOWEL_HOT if rng.uniform() < 0.3 else BOWEL
        shapes.append(tube(label, pts, r, replaces=fill))
        if rng.uniform() < 0.45:
            shapes.append(tube(BOWEL_GAS, pts, r - 4.0, replaces=frozenset({label})))
        placed += 1
    # bladder (urine) low in the pelvis
    bladder_c = np.array([0.0, -45.0, -215.0]) + rng.uniform(-5.0, 5.0, size=3)
    shapes.append(Shape(BLADDER, bladder_c, np.array([42.0, 32.0, 30.0]) * rng.uniform(0.9, 1.1, size=3)))
    return shapes


def _unit(rng, weights):
    v = rng.normal(size=3) * np.asarray(weights)
    return v / max(np.linalg.norm(v), 1e-9)


# --- vessels, airways, oesophagus ---------------------------------------------------------


def _aorta_point(spine, name, angle_deg, r, gap=3.0):
    """Centre of the aorta beside vertebral body ``name``: in the direction ``angle_deg``
    from the patient's left towards anterior, ``gap`` mm clear of the body's cortex."""
    v = _level(spine, name)
    w, d = v["semi"]
    t = np.deg2rad(angle_deg)
    e = np.array([np.cos(t), -np.sin(t)])
    rho = 1.0 / np.sqrt((e[0] / w) ** 2 + (e[1] / d) ** 2)  # ellipse radius in that direction
    xy = v["center"][:2] + e * (rho + r + gap)
    return np.array([xy[0], xy[1], v["center"][2]])


def _vessels(rng, b, spine, lm):
    """Aorta (:func:`_aorta`), venae cavae and the vessels of the neck and arms
    (:func:`_veins_and_arch_branches`), pulmonary arteries and veins
    (:func:`_pulmonary_vessels`), renal veins and arteries."""
    shapes = _aorta(rng, spine, lm)
    shapes += _veins_and_arch_branches(rng, b, spine, lm)
    shapes += _pulmonary_vessels(rng, lm)
    r_abd = lm["aorta_diameters_mm"]["abdominal"] / 2.0
    for name, k in lm["kidneys"].items():  # renal veins (the left in front of the aorta), arteries
        side = -1 if name == "right" else 1
        hil = k["center"] + k["hilum"] * (k["semi"][0] + 2.0)
        z = hil[2]
        ivc_pt = np.array([-22.0, _spine_front(spine, z) - 14.0, z + 4.0])
        ao = _aorta_point(spine, "L1", 74.0, r_abd)
        ao[2] = z + 8.0
        via = ao + np.array([0.0, -r_abd - 6.0, 0.0]) if side > 0 else ivc_pt
        shapes.append(tube(VEIN, [hil, via, ivc_pt], 5.0))
        shapes.append(tube(VESSEL, [ao, hil + [0.0, 6.0, 6.0]], 3.0))
    return shapes


def _aorta(rng, spine, lm):
    """The aorta's course (one tube, organ ``aorta``, painted last of all vessels, airways
    and oesophagus: see :func:`make_anatomy`): from the valve at the LV's base, ascending
    anterior and right (30-35 mm), over the arch above the carina, descending left-anterior
    of the vertebral bodies (20-28 mm; from T5 to T12 it turns from their left side to
    their front), through the hiatus, abdominal (15-24 mm) to the bifurcation at L4;
    periaortic fat around the descending part; common iliac arteries."""
    d_asc, d_desc, d_abd, d_bif = _aortic_diameters(rng)
    r_asc, r_desc, r_abd, r_bif = d_asc / 2.0, d_desc / 2.0, d_abd / 2.0, d_bif / 2.0
    path, radii, z_arch = _ascending_aorta_and_arch(rng, spine, lm, r_asc, r_desc)
    desc_start = len(path) - 1
    desc_path, desc_radii = _descending_aorta(spine, r_desc, r_abd, r_bif)
    path += desc_path
    radii += desc_radii
    z_bif = _level(spine, "L4")["center"][2] + rng.uniform(-8.0, 8.0)
    bif = _aorta_point(spine, "L4", 70.0, r_bif)
    bif[2] = z_bif
    path.append(bif)
    radii.append(r_bif)
    path, radii = np.array(path), np.array(radii)
    desc = path[desc_start:]
    shapes = [tube(RP_FAT, desc, radii[desc_start:] + rng.uniform(3.0, 6.0), replaces=frozenset({FAT, MUSCLE, LUNG}))]
    shapes += _common_iliac_arteries(spine, bif, z_bif, r_bif)
    lm["aorta_shape"] = tube(AORTA, path, radii, organ="aorta")
    lm["aorta_path"] = (path, radii)
    lm["aorta_descending"] = (desc, radii[desc_start:])
    lm["aorta_diameters_mm"] = {"ascending": d_asc, "descending": d_desc, "abdominal": d_abd, "bifurcation": d_bif}
    t8 = _aorta_point(spine, "T8", 42.0, r_desc)
    lm["aorta_xy"], lm["aorta_radius"], lm["aorta_z"] = t8[:2], r_desc, (float(z_bif), float(z_arch))
    lm["aorta_bifurcation_z"] = float(z_bif)
    return shapes


def _aortic_diameters(rng):
    """Aortic diameters (mm) drawn from AORTA_MM: ascending, descending, abdominal, bifurcation."""
    d_asc, d_desc, d_abd, d_bif = (
        rng.uniform(*AORTA_MM[k]) for k in ("ascending", "descending", "abdominal", "bifurcation")
    )
    d_bif = min(d_bif, d_abd - 1.0)
    return d_asc, d_desc, d_abd, d_bif


def _ascending_aorta_and_arch(rng, spine, lm, r_asc, r_desc):
    """The aorta from its root at the LV's base up and over the arch down to T4: points,
    radii (lists) and the arch's height."""
    heart, z_c = lm["heart"], lm["carina_z"]
    r_arch = (r_asc + r_desc) / 2.0
    lv_c, lv_semi, _ = heart["parts"]["lv"]
    a0 = lv_c - heart["axis"] * 0.8 * lv_semi[0] - heart["e2"] * 10.0
    z_arch = z_c + rng.uniform(28.0, 38.0)
    a4 = _aorta_point(spine, "T4", 20.0, r_desc)
    a4[2] = z_arch - 14.0
    asc_top = np.array([-16.0, a0[1] - 26.0, z_arch - 14.0])
    # the arch runs from anterior-right to posterior-left, left of the trachea
    path = [
        a0,
        (a0 + asc_top) / 2.0 + [-4.0, -4.0, 0.0],
        asc_top,
        np.array([-4.0, (asc_top[1] + a4[1]) / 2.0 - 6.0, z_arch]),
        np.array([22.0, a4[1] - 10.0, z_arch - 4.0]),
        a4,
    ]
    radii = [r_asc, r_asc, r_asc, r_arch, r_arch, r_desc]
    return path, radii, z_arch


def _descending_aorta(spine, r_desc, r_abd, r_bif):
    """The descending aorta beside the vertebral bodies from T5 to L3: points and radii (lists)."""
    angles = {
        "T5": 25.0,
        "T6": 30.0,
        "T7": 35.0,
        "T8": 42.0,
        "T9": 50.0,
        "T10": 58.0,
        "T11": 66.0,
        "T12": 72.0,
        "L1": 74.0,
        "L2": 74.0,
        "L3": 72.0,
    }
    # radius: descending thoracic down to T11, tapering through the hiatus to the
    # abdominal value at L1, then to the bifurcation's at L4
    taper = {
        "T12": (r_desc + r_abd) / 2.0,
        "L1": r_abd,
        "L2": r_abd + (r_bif - r_abd) / 3.0,
        "L3": r_abd + 2.0 * (r_bif - r_abd) / 3.0,
    }
    path, radii = [], []
    for name, ang in angles.items():
        r = taper.get(name, r_desc)
        path.append(_aorta_point(spine, name, ang, r))
        radii.append(r)
    return path, radii


def _common_iliac_arteries(spine, bif, z_bif, r_bif):
    """The common iliac arteries from the aortic bifurcation ``bif`` down into the pelvis."""
    l5 = _level(spine, "L5")["center"]
    shapes = []
    for side in (-1, 1):  # common iliac arteries
        shapes.append(
            tube(
                VESSEL,
                [bif, [side * 35.0, l5[1] - 30.0, z_bif - 50.0], [side * 62.0, l5[1] - 45.0, z_bif - 110.0]],
                [r_bif * 0.7, 5.0, 4.5],
            )
        )
    return shapes


def _veins_and_arch_branches(rng, b, spine, lm):
    """Inferior vena cava right-anterior of the spine, through the liver into the right
    atrium; superior vena cava from the brachiocephalic veins down into it, right of the
    ascending aorta; jugular veins; carotid and subclavian arteries from the arch."""
    heart, y_tr, S = lm["heart"], lm["trachea_y"], b["S"]
    path = lm["aorta_path"][0]
    z_arch = lm["aorta_z"][1]
    ra_c, ra_s, _ = heart["parts"]["ra"]
    t12 = _level(spine, "T12")["center"][2]
    ivc = [
        np.array([-22.0, _spine_front(spine, z) - 14.0 - (8.0 if z > t12 else 0.0), z])
        for z in (_level(spine, n)["center"][2] for n in ("L5", "L3", "L1", "T12", "T11"))
    ]
    ivc.append(ra_c + [0.0, 4.0, -0.75 * ra_s[2]])
    shapes = [tube(VEIN, ivc, rng.uniform(10.0, 12.5))]
    svc_top = np.array([-30.0, y_tr - 18.0, S - 35.0])
    svc = [ra_c + [0.0, -4.0, 0.7 * ra_s[2]], np.array([-30.0, y_tr - 22.0, z_arch]), svc_top]
    shapes.append(tube(VEIN, svc, rng.uniform(8.5, 10.5)))
    for side in (-1, 1):
        start = np.array([side * 55.0, y_tr - 15.0, S - 12.0])
        shapes.append(tube(VEIN, [start, svc_top], 6.5))
        shapes.append(
            tube(
                VEIN,
                [start, [side * 30.0, b["neck_y"] - 14.0, S + 15.0], [side * 30.0, b["neck_y"] - 8.0, S + 130.0]],
                [6.5, 6.0, 5.0],
            )
        )
        origin = path[3] if side < 0 else path[4]
        shapes.append(
            tube(
                VESSEL,
                [origin, [side * 26.0, y_tr - 6.0, S - 20.0], [side * 24.0, b["neck_y"] - 6.0, S + 130.0]],
                [6.0, 4.0, 3.5],
            )
        )
        shapes.append(
            tube(
                VESSEL,
                [
                    origin + [side * 6.0, 6.0, 0.0],
                    [side * 45.0, y_tr, S - 15.0],
                    [side * 80.0, y_tr - 10.0, S - 20.0],
                    [side * (b["bx"] - 10.0), 0.0, S - 40.0],
                ],
                [5.0, 4.5, 4.5, 4.0],
            )
        )
    return shapes


def _pulmonary_vessels(rng, lm):
    """Pulmonary trunk from the right ventricle's outflow (left of the aortic root) up and
    back to its bifurcation below the arch; right and left pulmonary arteries to the hila;
    lobar branches into the lungs; two pulmonary veins per side into the left atrium."""
    heart, hila, y_tr = lm["heart"], lm["hila"], lm["trachea_y"]
    a0 = lm["aorta_path"][0][0]
    pv0 = a0 + np.array([18.0, -16.0, 8.0])
    pb = np.array([10.0, y_tr - 22.0, hila[0][2] + 6.0])
    r_pa = rng.uniform(12.0, 14.0)
    shapes = [tube(VESSEL, [pv0, (pv0 + pb) / 2.0 + [4.0, -4.0, 0.0], pb], r_pa)]
    la_c, la_s, _ = heart["parts"]["la"]
    for side, h in zip((-1, 1), hila):
        via = np.array(
            [side * 16.0, y_tr - 14.0 + (8.0 if side > 0 else 0.0), (pb[2] + h[2]) / 2.0 + (6.0 if side > 0 else 0.0)]
        )
        shapes.append(tube(VESSEL, [pb, via, h], [r_pa * 0.8, r_pa * 0.75, 8.5]))
        for d in ([side * 22.0, 4.0, 42.0], [side * 40.0, 6.0, -8.0], [side * 22.0, 16.0, -48.0]):
            shapes.append(tube(VESSEL, [h, h + np.array(d)], [6.0, 3.0]))
        for lo in ([0.0, 12.0, -24.0], [side * 18.0, 24.0, -44.0]):
            start = h + np.array(lo)
            shapes.append(
                tube(VESSEL, [start + [side * 20.0, 0.0, -6.0], start, la_c + [side * 0.7 * la_s[0], 2.0, 0.0]], 6.0)
            )
    return shapes


def _airways_and_oesophagus(rng, b, spine, lm):
    """Trachea from the neck to the carina (T5/T6), main bronchi to the hila (the right
    short and steep, the left longer, under the arch), lobar bronchi; walls of soft tissue
    around the air. Oesophagus from the neck (behind the trachea) down behind the heart,
    crossing in front of the aorta to its left at the hiatus, into the stomach's cardia;
    a thin air lumen in some patients."""
    S, z_c, y_tr, hila = b["S"], lm["carina_z"], lm["trachea_y"], lm["hila"]
    ny = b["neck_y"]
    shapes = []
    knots = [
        (z_c, 2.0, y_tr, 10.5, 9.5),
        (z_c + 60.0, 0.0, y_tr - 2.0, 10.5, 9.5),
        (S - 10.0, 0.0, ny - 30.0, 10.0, 9.0),
        (S + 130.0, 0.0, ny - 26.0, 10.0, 9.0),
    ]
    shapes.append(sweep(SOFT, knots))
    shapes.append(sweep(AIRWAY, [(z, x, y, ax - 2.0, ay - 2.0) for z, x, y, ax, ay in knots]))
    carina = np.array([2.0, y_tr, z_c])
    for side, h in zip((-1, 1), hila):
        if side < 0:
            path = [carina, h + [-4.0, 9.0, 6.0]]
        else:
            path = [carina, np.array([22.0, y_tr + 6.0, z_c - 12.0]), h + [6.0, 9.0, -4.0]]
        shapes.append(tube(SOFT, path, 8.0))
        shapes.append(tube(AIRWAY, path, 6.0))
        end = path[-1]
        for d in ([side * 20.0, 6.0, 40.0], [side * 30.0, 14.0, -40.0]):
            shapes.append(tube(SOFT, [end, end + np.array(d)], [5.5, 3.5]))
            shapes.append(tube(AIRWAY, [end, end + np.array(d)], [3.8, 2.0]))
    st = lm["stomach"]
    z_t10 = _level(spine, "T10")["center"][2]
    # the cardia on the stomach's medial wall, below the hiatus (T10)
    cardia = st["points"][0] + np.array([-0.7 * st["radii"][0], 0.0, -0.3 * st["radii"][0]])
    cardia[2] = min(cardia[2], z_t10 - 15.0)
    ao, ar = lm["aorta_descending"]
    i10 = np.argmin(np.abs(ao[:, 2] - z_t10))
    knots = [
        (cardia[2], cardia[0], cardia[1], 9.0, 7.0),
        (z_t10, ao[i10][0] + 4.0, ao[i10][1] - ar[i10] - 7.0, 9.0, 7.0),
    ]  # in front of the aorta, to its left
    z9 = _level(spine, "T9")["center"][2]
    knots.append((z9, 8.0, _spine_front(spine, z9) - 9.0, 9.0, 6.5))
    for name in ("T8", "T6", "T4", "T2"):
        z = _level(spine, name)["center"][2]
        knots.append((z, 3.0, _spine_front(spine, z) - 8.0, 9.0, 6.5))
    knots.append((S + 10.0, 4.0, ny - 12.0, 9.0, 6.0))
    knots.append((S + 130.0, 4.0, ny - 10.0, 8.0, 6.0))
    shapes.append(sweep(OESOPHAGUS, knots))
    if rng.uniform() < 0.3:
        shapes.append(sweep(AIRWAY, [(z, x, y, 3.0, 2.0) for z, x, y, _, _ in knots[1:]]))
    lm["oesophagus"] = np.array(knots)
    return shapes


# --- ribs, sternum, shoulders, arms ---------------------------------------------------------


def _ribs_and_sternum(rng, b, spine, lm):
    """Twelve pairs of ribs from the transverse processes (costotransverse joints) back and
    out to the angle, then around the chest wall and down to their anterior ends (the
    upper seven near the sternum, 8-10 at the costal margin, 11-12 floating); sternum."""
    shapes = _ribs(b, spine)
    shapes += _sternum(b, lm)
    shapes += _pectoral_muscles(b)
    return shapes


def _ribs(b, spine):
    """Twelve pairs of ribs (T1 first), each a tube along :func:`_rib_path`."""
    shapes = []
    rx, ry, yc = b["mx"] - b["wall"] + 1.0, b["my"] - b["wall"] + 1.0, b["mc"]
    thoracic = [v for v in spine if v["name"][0] == "T"][::-1]  # T1 first
    for i, v in enumerate(thoracic, start=1):
        scale = {1: 0.62, 2: 0.82, 3: 0.93}.get(i, 1.0)
        drop = {1: 18.0, 2: 30.0, 11: 35.0, 12: 25.0}.get(i, 48.0)
        end_x = 25.0 + 4.0 * i if i <= 7 else (0.55 * rx + 8.0 * (i - 8) if i <= 10 else None)
        r = 4.0 if i == 1 else 5.0
        for side in (-1, 1):
            shapes.append(tube(RIB, _rib_path(v, side, rx * scale, ry * (0.75 + 0.25 * scale), yc, drop, end_x), r))
    return shapes


def _rib_path(v, side, ax, ay, yc, drop, end_x):
    """One rib's points: from its vertebra ``v`` round the chest wall (an ellipse of semi-axes
    ``ax``, ``ay`` about y = ``yc``), dropping by ``drop``, to ``|x| = end_x`` (None: floating)."""
    root = v["tp_tip"][side] + [side * 2.0, 3.0, 0.0] if "tp_tip" in v else v["center"] + [side * 30.0, 20.0, 0.0]
    x_angle = side * min(abs(root[0]) + 24.0, 0.8 * ax)
    y_angle = yc + ay * np.sqrt(max(1.0 - (x_angle / ax) ** 2, 0.0))
    t0 = np.arctan2((y_angle - yc) / ay, x_angle / ax)
    if end_x is None:  # floating ribs end at the flank
        t1 = np.arctan2(0.1, side * 1.0)
    else:
        xe = side * min(end_x, 0.9 * ax)
        t1 = np.arctan2(-np.sqrt(max(1.0 - (xe / ax) ** 2, 0.0)), xe / ax)
    # go round through the flank (t from t0 to t1 via angle 0 or pi)
    if side > 0:
        ts = np.linspace(t0, t1 if t1 < t0 else t1 - 2 * np.pi, 7)
    else:
        ts = np.linspace(t0, t1 if t1 > t0 else t1 + 2 * np.pi, 7)
    pts = [root]
    for k, t in enumerate(ts):
        frac = k / (len(ts) - 1)
        pts.append(np.array([ax * np.cos(t), yc + ay * np.sin(t), v["center"][2] - 4.0 - drop * frac**1.2]))
    return pts


def _sternum(b, lm):
    """The sternum (cortex and marrow) in the front wall, from the xiphoid up to the manubrium."""
    # sternum: manubrium (wider) above the body, in the front wall, from the xiphoid up
    y_st = b["front"] + 0.5 * b["wall"] + 2.0
    z_x = lm["heart"]["center"][2] - 30.0
    knots = [
        (z_x, 0.0, y_st, 11.0, 6.0),
        (b["S"] - 70.0, 0.0, y_st, 15.0, 7.0),
        (b["S"] - 55.0, 0.0, y_st, 24.0, 7.0),
        (b["S"] - 20.0, 0.0, y_st + 2.0, 26.0, 7.0),
    ]
    return [sweep(BONE, knots), sweep(MARROW, [(z, x, y, ax - 2.5, ay - 2.5) for z, x, y, ax, ay in knots])]


def _pectoral_muscles(b):
    """Pectoral muscles over the upper anterior chest wall (painted over fat)."""
    shapes = []
    # pectoral muscles: thicker anterior chest wall at the top of the thorax
    for side in (-1, 1):
        shapes.append(
            Shape(
                MUSCLE,
                np.array([side * 75.0, b["front"] + 2.0, b["S"] - 75.0]),
                np.array([62.0, 14.0, 55.0]),
                replaces=frozenset({FAT}),
            )
        )
    return shapes


def _shoulders_and_arms(rng, b, lm):
    """Shoulder girdles and arms. Both: scapulae on the posterior chest wall with the
    rotator cuff around them, clavicles from the sternum to the acromion, humeral heads at
    the glenoid under a deltoid (shoulder muscles: NECK_MUSCLE). Arms down: upper arm and
    forearm beside the trunk. Arms up: the shoulder girdle rotated up, the upper arms
    beside the head, forearms above it."""
    S, bx = b["S"], b["bx"]
    arms = "down" if rng.uniform() < 0.5 else "up"
    lift = 18.0 if arms == "up" else 0.0
    shapes = []
    for side in (-1, 1):
        shapes += _shoulder_girdle(b, side, arms, lift)
        joints = _arm_joints(b, side, arms, lift, lm["head_semi"][0])
        shapes += _arm(rng, side, *joints)
        # axillary fat between the arm and the chest wall (brown fat lives there)
        ax_c = np.array([side * (bx - 22.0), 8.0, S - 55.0 + (30.0 if arms == "up" else 0.0)])
        shapes.append(Shape(FAT, ax_c, np.array([22.0, 30.0, 38.0]), replaces=frozenset({0, MUSCLE, FAT})))
    lm["arms"] = arms
    return shapes


def _shoulder_girdle(b, side, arms, lift):
    """One side's scapula (with the rotator cuff), its spine to the acromion, and clavicle."""
    S, bx = b["S"], b["bx"]
    # scapula: a thin plate following the back's curve; rotator cuff around it
    sc = np.array([side * 78.0 * b["s"][0], b["back"] - 24.0, S - 78.0 + lift])
    rot = _rot_z(side * np.deg2rad(-28.0)) @ _rot_y(side * np.deg2rad(20.0 if arms == "up" else 0.0))
    shapes = [
        Shape(
            NECK_MUSCLE,
            sc,
            np.array([52.0, 16.0, 74.0]),
            rotation=rot,
            replaces=frozenset({FAT, MUSCLE, BACK_MUSCLE, NECK_MUSCLE}),
        )
    ]
    shapes.append(Shape(BONE, sc, np.array([46.0, 4.0, 68.0]), rotation=rot))
    acromion = np.array([side * (bx - 14.0), 4.0, S + 2.0 + lift * 0.6])
    shapes.append(tube(BONE, [sc + [-side * 30.0, 10.0, 35.0], acromion], [5.0, 6.0]))
    clav = [
        np.array([side * 20.0, b["front"] + 12.0, S - 20.0]),
        np.array([side * 70.0, b["front"] + 6.0, S - 10.0 + lift * 0.4]),
        acromion + [0.0, -8.0, 0.0],
    ]
    shapes.append(tube(BONE, clav, 7.0))
    shapes.append(tube(MARROW, clav, 3.5))
    return shapes


def _arm_joints(b, side, arms, lift, head_x):
    """One arm's humeral head (at the glenoid), top of the arm, elbow and wrist, for arms down or up."""
    S, bx = b["S"], b["bx"]
    hh = np.array([side * (bx - 16.0), 10.0, S - 28.0 + lift])  # humeral head at the glenoid
    if arms == "down":
        elbow = np.array([side * (bx + 48.0), 14.0, S - 300.0])
        wrist = np.array([side * (bx + 44.0), 4.0, S - 550.0])
        arm_top = np.array([side * (bx + 36.0), 10.0, S - 40.0])
    else:
        elbow = np.array([side * (head_x + 60.0), -6.0, S + 270.0])
        wrist = np.array([side * 40.0, -30.0, S + 440.0])
        arm_top = np.array([side * (bx - 6.0), 10.0, S + 10.0])
    return hh, arm_top, elbow, wrist


def _arm(rng, side, hh, arm_top, elbow, wrist):
    """One arm: deltoid over the humeral head, the arm's fat and muscle, humerus, radius and ulna."""
    ra = rng.uniform(40.0, 48.0)
    # deltoid over the humeral head (with its fat), then the arm
    shapes = [tube(FAT, [hh + [side * 10.0, 0.0, 8.0], arm_top], ra + 4.0, replaces=frozenset({0}))]
    shapes.append(
        tube(
            NECK_MUSCLE,
            [hh + [side * 8.0, 0.0, 6.0], hh + (arm_top - hh) * 0.8],
            ra - 6.0,
            replaces=frozenset({0, FAT, MUSCLE}),
        )
    )
    shapes.append(tube(FAT, [arm_top, elbow, wrist], [ra, ra - 8.0, 28.0], replaces=frozenset({0, FAT})))
    fat_arm = rng.uniform(6.0, 12.0)
    shapes.append(
        tube(MUSCLE, [arm_top, elbow, wrist], [ra - fat_arm, ra - 8.0 - fat_arm, 20.0], replaces=frozenset({FAT}))
    )
    shapes.append(Shape(BONE, hh, np.full(3, 23.0)))
    shapes.append(Shape(MARROW, hh, np.full(3, 19.0)))
    shapes.append(tube(BONE, [hh, elbow], 11.0))
    shapes.append(tube(MARROW, [hh, elbow], 6.0))
    for off, r in ((np.array([0.0, 9.0, 0.0]), 7.0), (np.array([0.0, -9.0, 0.0]), 6.0)):  # radius and ulna
        shapes.append(tube(BONE, [elbow + off, wrist + off], r))
    return shapes


def _brown_fat(b, spine, lm):
    """Brown-fat depots (painted over fat only): supraclavicular, axillary, paravertebral
    (the sites of the domain notes; symmetric)."""
    S = b["S"]
    shapes = []
    up = 30.0 if lm["arms"] == "up" else 0.0
    for side in (-1, 1):
        shapes.append(
            Shape(
                BROWN_FAT,
                np.array([side * 60.0, b["neck_y"] + 5.0, S + 12.0]),
                np.array([30.0, 30.0, 26.0]),
                replaces=frozenset({FAT}),
            )
        )
        shapes.append(
            Shape(
                BROWN_FAT,
                np.array([side * (b["bx"] - 22.0), 8.0, S - 55.0 + up]),
                np.array([20.0, 26.0, 32.0]),
                replaces=frozenset({FAT}),
            )
        )
        for v in spine:  # paravertebral: small depots at the costovertebral junctions of T1-T10
            if v["name"][0] == "T" and v["name"] not in ("T11", "T12"):
                c = v["center"] + [side * (v["semi"][0] + 6.0), 2.0, 0.0]
                shapes.append(Shape(BROWN_FAT, c, np.array([6.0, 9.0, 0.3 * v["pitch"]]), replaces=frozenset({FAT})))
    return shapes


# --- lymph-node stations ---------------------------------------------------------------------


def node_stations(b, spine, lm):
    """Lymph-node stations (centre, spread, weight): mediastinal (lower paratracheal,
    aortopulmonary window, prevascular, subcarinal), hilar on both sides, retrocrural and
    abdominal (para-aortic, aortocaval, mesenteric root)."""
    z_c, y_tr, hila = lm["carina_z"], lm["trachea_y"], lm["hila"]
    desc, rd = lm["aorta_descending"]
    l2 = _level(spine, "L2")["center"][2]
    l3 = _level(spine, "L3")["center"][2]
    ao_l2 = desc[np.argmin(np.abs(desc[:, 2] - l2))]
    r_l2 = rd[np.argmin(np.abs(desc[:, 2] - l2))]
    ao_l3 = desc[np.argmin(np.abs(desc[:, 2] - l3))]
    t12 = _level(spine, "T12")["center"][2]
    ao_t12 = desc[np.argmin(np.abs(desc[:, 2] - t12))]
    r_t12 = rd[np.argmin(np.abs(desc[:, 2] - t12))]
    la_c, la_s, _ = lm["heart"]["parts"]["la"]
    la_top = la_c[2] + la_s[2]

    def station(name, c, spread, weight):
        return {"name": name, "center": np.asarray(c, float), "spread": np.asarray(spread, float), "weight": weight}

    return [
        station("paratracheal", [-20.0, y_tr - 4.0, z_c + 12.0], [5.0, 6.0, 12.0], 0.6),
        station("aortopulmonary", [20.0, y_tr - 6.0, z_c + 6.0], [4.0, 5.0, 6.0], 0.6),
        station("prevascular", [0.0, lm["sternum_back"] + 22.0, z_c + 10.0], [10.0, 6.0, 15.0], 0.6),
        station("subcarinal", [2.0, y_tr - 2.0, (z_c - 20.0 + la_top) / 2.0], [4.0, 3.0, 3.0], 0.8),
        station("hilar", hila[0] + [-6.0, -12.0, -8.0], [5.0, 5.0, 6.0], 0.8),
        station("hilar", hila[1] + [6.0, -12.0, -8.0], [5.0, 5.0, 6.0], 0.8),
        station("retrocrural", ao_t12 + [0.7 * r_t12 + 6.0, r_t12 + 4.0, 0.0], [3.0, 4.0, 14.0], 0.5),
        station("para-aortic", ao_l2 + [r_l2 + 14.0, 0.0, -10.0], [4.0, 8.0, 36.0], 1.2),
        station("aortocaval", [(ao_l3[0] - 22.0) / 2.0, ao_l3[1] - 4.0, l3], [3.0, 6.0, 25.0], 0.6),
        station("mesenteric", lm["mesenteric_root"], [30.0, 12.0, 18.0], 1.2),
    ]


# --- rotations ---------------------------------------------------------------------------------


def _rot_x(t):
    return np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])


def _rot_y(t):
    return np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]])


def _rot_z(t):
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
