"""Anatomy from the CT: one organ label map per study, and the CT numbers its rules use.

The map (:func:`anatomy_study`: classical rules of :func:`segment_ct`, TotalSegmentator,
or the studies sheet's ``organ_mask``) carries TotalSegmentator v2 numbers
(:data:`ORGANS`, read through :data:`ORGAN_CLASSES`); the background, the rejection of
physiological uptake and the region labels read it. Each CT window is named after what it
selects (values in HU, after the light smoothing the rules apply).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dualpet.geometry import box_around
from dualpet.settings import default

#: Body (patient and anything touching it) versus air.
BODY_HU_MIN = -400.0
#: Aerated lung inside the body: below this (and the body's outline filled).
LUNG_HU_MAX = -500.0
#: Aerated lung as a window: outside air and bowel gas (about -1000 HU) stay below it.
LUNG_HU = (-950.0, -500.0)
#: Fat (subcutaneous, mediastinal, retroperitoneal, mesenteric, nodal).
FAT_HU = (-190.0, -30.0)
#: Non-contrast soft tissue and blood (muscle, vessels, unenhanced organs).
SOFT_TISSUE_HU = (-50.0, 100.0)
#: Water density: urine in the bladder, ureters and renal pelves.
WATER_HU = (-20.0, 20.0)
#: Bone (cortex and dense marrow) from this value up.
BONE_HU_MIN = 150.0

#: The organ label map's values: TotalSegmentator v2 ("total" task) class numbers. Where
#: dualpet finds an organ TotalSegmentator splits (lung lobes, vertebral levels, bowel
#: segments), the whole organ carries the first number of its classes; readers of a label
#: map go through :data:`ORGAN_CLASSES`, so a TotalSegmentator map (with lobes and levels)
#: and dualpet's own are read alike. ``body`` (the patient's remaining tissue) is not a
#: TotalSegmentator class and takes 200.
ORGANS = {
    "spleen": 1,
    "kidney_right": 2,
    "kidney_left": 3,
    "liver": 5,
    "lung_left": 10,
    "lung_right": 12,
    "bowel": 18,
    "urinary_bladder": 21,
    "vertebrae": 26,
    "heart": 51,
    "aorta": 52,
    "brain": 90,
    "skull": 91,
    "body": 200,
}
#: TotalSegmentator v2 classes each organ stands for.
ORGAN_CLASSES = {
    "spleen": (1,),
    "kidney_right": (2,),
    "kidney_left": (3,),
    "liver": (5,),
    "lung_left": (10, 11),
    "lung_right": (12, 13, 14),
    "bowel": (6, 18, 19, 20),
    "urinary_bladder": (21,),
    "vertebrae": tuple(range(25, 51)),
    "heart": (51,),
    "aorta": (52,),
    "brain": (90,),
    "skull": (91,),
    "body": (200,),
}

#: Contrast-enhanced blood (aorta, heart cavities): from this value up on the smoothed CT.
ENHANCED_BLOOD_HU = (130.0, 600.0)
#: Gas (bowel, stomach, airways): below this on the smoothed CT.
GAS_HU_MAX = -900.0
#: Aerated lung has a median CT number above this (about -850 HU, emphysema -900 to -950);
#: gas in bowel and airways (about -1000 HU) below, however much partial volume its walls add.
LUNG_MEDIAN_HU_MIN = -970.0
#: ... and lung parenchyma has its 10th percentile above this, while a gas pocket has a
#: core of air (small lung parts qualify by this; large ones by their median).
LUNG_P10_HU_MIN = -975.0
#: Soft tissue inside the skull (brain and CSF).
BRAIN_HU = (-15.0, 90.0)
#: Solid abdominal organs (liver, spleen): fatty liver down to about -50, plain 40-65,
#: enhanced up to about 160 HU; bone and enhanced blood pool above.
PARENCHYMA_HU = (-50.0, 200.0)
#: The erector spinae: within this distance (mm) of the midline and more than this far
#: behind the vertebral body's centre (measured on real CT: centres 35-40 mm out and 50-70
#: mm back; the liver's and spleen's posterior parts lie further out).
BACK_MUSCLES_MM = (75.0, 30.0)
#: The spleen keeps this far (mm) inside the body's outline: skin, fat, ribs and muscle of
#: the body wall lie between (on plain CT its muscle has nearly the spleen's density).
SPLEEN_WALL_MM = 20.0
#: The heart keeps this far (mm) inside the body's outline (sternum, ribs, chest-wall muscle).
HEART_WALL_MM = 25.0
#: Radii (mm) of the balls whose reach is the heart, the next tried while it is larger than
#: a heart: the chambers are 40-50 mm deep; the great and hilar vessels have radii of
#: 10-17 mm (ascending aorta 15-17, pulmonary trunk 12-15).
HEART_CORES_MM = (18.0, 22.0, 26.0)
#: On contrast-enhanced CT the renal cortex is at least this much (HU) denser than the
#: liver, the spleen is not (portal-venous: liver 100-120, spleen 110-130, kidney 150-250).
KIDNEY_OVER_LIVER_HU = 30.0
#: Kidney parenchyma on plain CT: 30-40 HU, read lower where the sinus fat and the
#: perirenal fat share its voxels (measured 14-20 HU median on a real unenhanced CT); and
#: the enhanced cortex (150-250 HU).
KIDNEY_HU = (0.0, 50.0)
KIDNEY_ENHANCED_HU = (120.0, 400.0)
#: Where a kidney lies, from the vertebral body's centre (mm): lateral to the psoas
#: (centres 45-90 mm out) and level with the bodies (the erector spinae lie 50-70 mm behind
#: the body's centre, behind the transverse processes; measured on real CT).
KIDNEY_ZONE_MM = {"lateral": (35.0, 115.0), "posterior": (-50.0, 30.0)}
#: ... and where its centre lies (mm): kidneys 50-90 mm out; the spleen's centre lies
#: further out (about 105 mm on real CT), behind the ribs.
KIDNEY_CENTRE_MM = {"lateral": (40.0, 100.0), "posterior": (-60.0, 30.0)}
#: A kidney keeps this far (mm) inside the body's outline in every axial plane (measured
#: 53-55 mm on real CT: the back muscles and the abdominal wall lie between); the spleen
#: reaches the ribs and diaphragm (20 mm there).
KIDNEY_WALL_MM = 25.0
#: ... and this far (mm) from the vertebral body's centre (the psoas, of kidney density on
#: plain CT, lies against the body, 20-25 mm from its centre; a kidney's hilum 35-45 mm).
KIDNEY_MEDIAL_MM = 30.0
#: A kidney is grown within this distance (mm) of its seed (an adult kidney is 10-13 cm long).
KIDNEY_REACH_MM = 90.0
#: Seeds of a kidney lie between these distances (mm) above and below the lungs' lowest
#: point (the posterior costophrenic recess reaches T12-L1, the kidneys T12-L3), and this
#: far above the iliac crests (the lower pole lies 3-5 cm above them).
KIDNEY_BELOW_LUNG_MM = (-20.0, 170.0)
KIDNEY_ABOVE_CREST_MM = 30.0
#: Iliac wings: on each side a bone plate of at least this area (cm2) per slice, lateral to
#: the column (ribs cut across are 1-2 cm2).
ILIAC_WING_CM2 = 8.0
#: A kidney sits in perirenal fat: at most this fraction of its surface touches bone (a psoas or
#: quadratus lumborum grown instead leans on the vertebral bodies and processes).
KIDNEY_BONE_CONTACT = 0.15
#: Half-windows (HU) a kidney is grown with, the next while it is larger than plausible
#: (plain parenchyma varies by a few HU; noise after denoising is 4-8 HU).
KIDNEY_HALF_WINDOW_HU = (15.0, 11.0, 8.0)
#: Seeds tried per kidney before it is reported not found.
KIDNEY_TRIES = 3
#: Bowel loops without gas: soft tissue (wall and fluid or chyme; enhanced wall up to about
#: 100 HU) in tubes at most BOWEL_RADIUS_MM thick and BOWEL_LENGTH_MM long, at least
#: BOWEL_WALL_MM inside the body's outline (the abdominal wall's muscle is a thin sheet too).
BOWEL_HU = (-20.0, 130.0)
BOWEL_RADIUS_MM, BOWEL_LENGTH_MM, BOWEL_WALL_MM = 20.0, 50.0, 15.0
#: Window (HU) around an organ's own median in which it is grown: this many noise standard
#: deviations of the denoised CT, but at least ORGAN_WINDOW_HU[0] and at most [1] (plain
#: liver 55-65 HU borders muscle and spleen 40-50 HU; noise decides how close it may come).
ORGAN_WINDOW_SD = 2.5
ORGAN_WINDOW_HU = (10.0, 25.0)
#: An organ's seed lies in one tissue: the robust SD (HU) of the denoised CT in its 10 mm
#: ball is at most this (plain liver and spleen 4-8 HU with vessels; a ball across liver,
#: kidney and muscle 12-20 HU); the SEED_TRIES deepest places are tried.
SEED_SD_HU, SEED_TRIES = 10.0, 30
#: Bridges thinner than twice this (mm) between an organ and touching tissue of the same
#: density (body-wall muscle, spleen on plain CT) are cut before the organ is taken.
ORGAN_BRIDGE_MM = 6.0

#: Unenhanced blood (35-55 HU, by haematocrit), widened for noise and partial volume.
BLOOD_HU = (15.0, 85.0)
#: Aorta: lumen radius (mm; abdominal 15-24 mm across, descending thoracic 20-28,
#: ascending 30-35), searched within AORTA_SEARCH_MM of the configured offset from the
#: vertebral body; followed from slice to slice (gaps of up to AORTA_GAP_MM: two 3 mm slices;
#: longer gaps let the course jump to other round structures; centre
#: steps of at most AORTA_STEP_MM plus half the z step); round if at most AORTA_ANNULUS_MAX
#: of a ring just outside its lumen has its density.
AORTA_RADIUS_MM = (6.0, 20.0)
AORTA_SEARCH_MM = 30.0
AORTA_GAP_MM, AORTA_STEP_MM = 7.0, 4.0
#: Below the lungs' bases the aorta lies in front of the vertebral body: its centre at
#: least this angle (degrees, from the patient's left towards anterior, seen from the
#: body's centre; measured on the real slab 65-80, generated 72-74); the psoas beside the
#: body, as round and as dense on plain CT, lies at 10-20. Above, the descending aorta
#: runs beside the bodies (generated 20-50).
AORTA_ABDOMINAL_MIN_DEG = 45.0
AORTA_ANNULUS_MAX = 0.5
#: Holes of a round structure's window up to this area (mm²) are noise, closed first.
SMALL_HOLE_MM2 = 30.0
#: Cortical bone around a round structure: denser than CORTEX_HU and CORTEX_OVER_LUMEN
#: times the structure's centre (HU on the smoothed work CT, where a thin cortex of 700+ HU
#: reads 350-450), on at least CORTEX_SHARE of its 4 mm edge (a calcified plaque takes a
#: little of an aorta's edge; a cortex most of a vertebral body's marrow).
CORTEX_HU, CORTEX_OVER_LUMEN, CORTEX_SHARE = 300.0, 1.4, 0.5
#: ... or inside its own outer 4 mm (where the cortex reads within the enhanced window): the
#: upper quarter of that edge at least this times its centre (a cortex ring: 1.4-1.6; a
#: lumen with noise: 1.05).
CORTEX_RING_OVER_CENTRE = 1.3
#: An aorta's course is at least this long (mm), or this share of a shorter field of view.
AORTA_MIN_COURSE_MM, AORTA_MIN_COURSE_SHARE = 60.0, 0.6
#: A contrast-filled aorta is first searched without the spine: within ENHANCED_SEARCH_MM
#: of a point ENHANCED_LEFT_MM left of the trunk's midline and ENHANCED_DEPTH of the way
#: from its back to its front (the aorta lies 35-50 % of the way, the vertebral bodies 25-35 %).
ENHANCED_SEARCH_MM, ENHANCED_LEFT_MM, ENHANCED_DEPTH = 45.0, 15.0, 0.42

#: On contrast-enhanced CT the column is traced in bone above this (HU): the blood of the
#: heart, the great vessels and the aorta pressed against the bodies (150-400) is not
#: bone; a vertebra's cortex (above 400 on a 3 mm grid) still outlines it.
SPINE_BONE_ENHANCED_HU = 420.0
#: ... and completed on each slice by the bone above BONE_HU_MIN joined to it, where that
#: adds at most this area (cm2; a lumbar body is about 15 cm2 across).
VERTEBRA_FILL_MAX_CM2 = 25.0
#: The dense trace is trusted only where the cortex reads above the blood's density: at
#: least this share of the column it finds (a thin cortex on a coarse grid does not: the
#: real slab's column is 3-5 % above SPINE_BONE_ENHANCED_HU, a generated one 25-30 %); else
#: the column above BONE_HU_MIN, the aorta's lumen left out, is kept.
DENSE_CORTEX_SHARE = 0.15
#: Vertebral column: a vertebral body's cross-section is at least this large (cm2; cervical
#: 2-4, thoracic 6-12, lumbar 12-20); its course keeps the per-slice centres within
#: VERTEBRA_STRAY_MM of the median over +-VERTEBRA_WINDOW_MM; the column's bone lies
#: within VERTEBRA_EXTENT_MM (lateral, anterior, posterior) of the body's centre
#: (transverse processes reach 40-50 mm out, the spinous process 60-75 mm back).
VERTEBRA_MIN_CM2 = 3.0
#: ... made of pieces of at least this area (cm2) at BONE_HU_MIN (an osteopenic vertebra
#: falls apart into its cortex and processes).
VERTEBRA_PIECE_CM2 = 0.3
#: Depth (mm, antero-posterior) of a vertebral body: cervical 15-18, thoracic 25-30, lumbar 30-35.
VERTEBRA_BODY_MM = 35.0
#: Gaps in a vertebral body's cortex (osteopenia, partial volume) up to twice this (mm) are closed.
VERTEBRA_CLOSING_MM = 5.0
VERTEBRA_WINDOW_MM, VERTEBRA_STRAY_MM = 30.0, 12.0
VERTEBRA_EXTENT_MM = (45.0, 30.0, 80.0)

#: The grid the organ rules work on: about this voxel size (mm), by block averaging.
WORK_MM = 3.0

#: Plausible organ volumes (mL) when the organ lies wholly in the field of view; an organ
#: cut by either end of the field of view only needs the lower bound of ``TRUNCATED_ML``.
PLAUSIBLE_ML = {
    "liver": (600.0, 4000.0),
    "spleen": (40.0, 1200.0),
    "kidney_right": (60.0, 320.0),
    "kidney_left": (60.0, 320.0),
    "urinary_bladder": (15.0, 1200.0),
    "heart": (250.0, 1600.0),
    "brain": (700.0, 2000.0),
    "lung_left": (700.0, 5000.0),
    "lung_right": (800.0, 5500.0),
}
TRUNCATED_ML = {
    "liver": 80.0,
    "brain": 100.0,
    "lung_left": 50.0,
    "lung_right": 50.0,
    "heart": 80.0,
    "spleen": 15.0,
    "kidney_right": 15.0,
    "kidney_left": 15.0,
}


def organ_voxels(labels, *names):
    """Voxels of a label map in any of the named organs' classes (ORGAN_CLASSES):
    ``np.isin`` without its flattened copy of the map (F-ordered from NIfTI, 78 M voxels
    on a clinical CT grid)."""
    values = [v for name in names for v in ORGAN_CLASSES[name]]
    out = labels == values[0]
    for v in values[1:]:
        out |= labels == v
    return out


def work_grid(hu, affine, target_mm=WORK_MM):
    """Block average of a CT to about ``target_mm`` voxels (slices only when thinner than
    2 mm): (work CT, its voxel->LPS affine, block factors)."""
    from dualpet.geometry import voxel_spacing

    sp = voxel_spacing(affine)
    f = [max(int(round(target_mm / sp[a])), 1) for a in (0, 1)] + [
        max(int(round(target_mm / sp[2])), 1) if sp[2] < 2.0 else 1
    ]
    if f == [1, 1, 1]:
        return np.asarray(hu, dtype=np.float32), np.asarray(affine, dtype=float), f
    n = [hu.shape[a] // f[a] * f[a] for a in range(3)]
    blocks = np.asarray(hu)[: n[0], : n[1], : n[2]]
    if not (blocks.dtype.kind in "iu" and blocks.dtype.itemsize <= 2 and np.prod(f) <= 2**8):
        blocks = np.asarray(blocks, dtype=np.float32)
    # Whole numbers of at most 16 bits, at most 256 to a block, sum exactly in float32 in
    # any order: averaging the stored integers (a view) equals averaging a float32 copy
    # of the CT, without making that copy (78 M voxels on a clinical grid).
    blocks = blocks.reshape(n[0] // f[0], f[0], n[1] // f[1], f[1], n[2] // f[2], f[2])
    out = blocks.mean(axis=(1, 3, 5), dtype=np.float32)
    scale = np.diag([f[0], f[1], f[2], 1.0])
    scale[:3, 3] = [(f[a] - 1) / 2.0 for a in range(3)]
    return out, np.asarray(affine, dtype=float) @ scale, f


def to_full_grid(labels, factors, shape):
    """Nearest-neighbour expansion of a work-grid label map back to the CT's grid: each work
    voxel repeated over its block, the last ones also over the CT's few voxels past the
    last whole block. In Fortran order, NIfTI's own, so that it is written without a
    reordering copy (78 M voxels on a clinical grid)."""
    index = [np.minimum(np.arange(s) // f, n - 1) for s, f, n in zip(shape, factors, labels.shape)]
    return labels.T[np.ix_(index[2], index[1], index[0])].T


def _disk(radius_mm, spacing):
    r = np.maximum(np.rint(radius_mm / np.asarray(spacing[:2])).astype(int), 1)
    yy, xx = np.ogrid[-r[0] : r[0] + 1, -r[1] : r[1] + 1]
    return (yy / max(r[0], 1e-9)) ** 2 + (xx / max(r[1], 1e-9)) ** 2 <= 1.0


def _per_slice(fn, mask, dtype=None):
    """``fn`` applied to each axial slice of ``mask`` that has voxels (others stay 0)."""
    out = np.zeros(mask.shape, dtype=dtype or mask.dtype)
    for k in np.flatnonzero(mask.any(axis=(0, 1))):
        out[:, :, k] = fn(mask[:, :, k])
    return out


def _plane_box(c, xy, reach_mm):
    """The in-plane box (a pair of slices) of the work grid's columns within ``reach_mm``
    (x, y) of the point ``xy`` (LPS x, y) along x and along y; empty slices beyond the plane."""
    out = []
    for v, w, reach in ((c.x, xy[0], reach_mm[0]), (c.y, xy[1], reach_mm[1])):
        near = np.flatnonzero(np.abs(v - w) <= reach)
        out.append(slice(int(near[0]), int(near[-1]) + 1) if near.size else slice(0, 0))
    return tuple(out)


def _reach_box(c, xy, reach_mm):
    """:func:`_plane_box` within ``reach_mm`` of ``xy``, widened by the extent of a small
    hole (SMALL_HOLE_MM2) and two voxels."""
    holes = int(np.ceil(SMALL_HOLE_MM2 / (c.spacing[0] * c.spacing[1])))
    return _plane_box(c, xy, [reach_mm + (holes + 2) * sp for sp in c.spacing[:2]])


def _plane_distance(c, xy, box=np.s_[:, :]):
    """In-plane distance (mm) of every voxel column of the work grid (or of its in-plane
    ``box``, a pair of slices) from the point ``xy`` (LPS x, y): shape (i, j)."""
    return np.hypot(c.x[box[0], None] - xy[0], c.y[None, box[1]] - xy[1])


def _largest(mask, structure=None):
    lab, n = ndimage.label(mask, structure=structure)
    if n == 0:
        return mask & False
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _median3(volume):
    """The 3x3x3 median of a volume, edges replicated: ``ndimage.median_filter(volume,
    size=3)`` to the bit (its 'reflect' edge repeats the edge voxel for a 3-wide window),
    by ITK's median in one thread (2.3x faster on a 170 x 170 x 300 work CT)."""
    import SimpleITK as sitk

    median = sitk.MedianImageFilter()
    median.SetRadius(1)
    median.SetNumberOfThreads(1)
    return sitk.GetArrayFromImage(median.Execute(sitk.GetImageFromArray(volume)))


class _Context:
    """What the organ rules share: the smoothed work CT, its geometry and the organs found so far."""

    def __init__(self, hu, affine):
        from dualpet.geometry import apply_affine, voxel_spacing

        self.affine = affine
        self.spacing = voxel_spacing(affine)
        self.voxel_ml = float(np.prod(self.spacing)) / 1000.0
        # light smoothing: low-dose CT noise (20-40 HU per 1 mm pixel) must not break organs
        self.g = ndimage.gaussian_filter(hu, sigma=(0.7, 0.7, 0.5)).astype(np.float32)
        n = hu.shape
        self.x = apply_affine(affine, np.stack([np.arange(n[0]), np.zeros(n[0]), np.zeros(n[0])], 1))[:, 0]
        self.y = apply_affine(affine, np.stack([np.zeros(n[1]), np.arange(n[1]), np.zeros(n[1])], 1))[:, 1]
        self.z = apply_affine(affine, np.stack([np.zeros(n[2]), np.zeros(n[2]), np.arange(n[2])], 1))[:, 2]
        self.labels = np.zeros(n, dtype=np.uint8)
        self.report = {}
        self._denoised = None
        self._raw = hu
        self.levels = {}  # organ: the CT level (HU) it was grown at
        self.body_depth = None  # see _depth_in_plane
        self.diaphragm = None  # see _above_diaphragm
        self.columns_from = np.zeros(2, int)  # (i, j) of this grid's first column on the work grid

    def cropped(self, box):
        """The same context on an in-plane box of its grid (all slices): the smoothed CT cut
        from this one's, the coordinates and affine shifted with it; nothing found yet."""
        out = object.__new__(_Context)
        out.__dict__.update(self.__dict__)
        start = np.array([box[0].start, box[1].start, 0, 1.0])
        out.affine = self.affine.copy()
        out.affine[:, 3] = self.affine @ start
        out.g, out._raw = self.g[box], self._raw[box]
        out.x, out.y = self.x[box[0]], self.y[box[1]]
        out.columns_from = self.columns_from + [box[0].start, box[1].start]
        out.labels = self.labels[box].copy()
        out.report, out.levels, out._denoised = dict(self.report), dict(self.levels), None
        return out

    def column_x(self, ii):
        """x (mm) of the column at the mean of the indices ``ii`` (axis 0), rounded in the
        whole work grid's numbering: a context cut to the body's columns picks the same
        column (Python rounds halves to even, so the numbering matters)."""
        i0 = int(self.columns_from[0])
        return self.x[int(round(float(np.mean(ii)) + i0)) - i0]

    @property
    def denoised(self):
        """The work CT for telling soft-tissue organs apart (a few HU apart on plain CT):
        a 3x3x3 median, then the light Gaussian; made on first use."""
        if self._denoised is None:
            self._denoised = ndimage.gaussian_filter(_median3(self._raw), sigma=0.7).astype(np.float32)
        return self._denoised

    def volume(self, mask):
        return float(mask.sum()) * self.voxel_ml

    def truncated(self, mask):
        """Whether a mask touches the first or last plane of the field of view."""
        planes = np.flatnonzero(mask.any(axis=(0, 1)))
        return bool(planes.size and (planes[0] == 0 or planes[-1] == mask.shape[2] - 1))

    def accept(self, name, mask, method, checks=None, **extra):
        """Record an organ: painted (over body only) if plausible, reported either way."""
        entry = {"found": False, "volume_ml": round(self.volume(mask), 1), "method": method, **extra}
        entry["truncated_by_field_of_view"] = bool(self.truncated(mask)) if mask.any() else False
        lo, hi = PLAUSIBLE_ML.get(name, (0.0, np.inf))
        if entry["truncated_by_field_of_view"]:
            lo, hi = TRUNCATED_ML.get(name, lo), hi
        ok = bool(mask.any()) and lo <= entry["volume_ml"] <= hi
        entry["checks"] = {
            f"volume {entry['volume_ml']:g} mL within {lo:g}-{hi:g} mL": ok,
            **{k: bool(v) for k, v in (checks or {}).items()},
        }
        entry["found"] = bool(mask.any()) and all(entry["checks"].values())
        if entry["found"]:
            self.labels[mask & ((self.labels == 0) | (self.labels == ORGANS["body"]))] = ORGANS[name]
        self.report[name] = entry
        return entry["found"]

    def mask(self, *names):
        return np.isin(self.labels, [ORGANS[n] for n in names])


def _body(c):
    """The patient (trunk, arms, head) without the couch: CT above BODY_HU_MIN with holes
    (lungs, gas) filled slice by slice, opened in-plane with a 5 mm disk (the couch's thin
    shell and mattress fall apart from the patient), components of at least 50 mL kept and
    regrown into what the opening removed."""
    filled = _per_slice(ndimage.binary_fill_holes, c.g > BODY_HU_MIN)
    disk = _disk(5.0, c.spacing)
    opened = _per_slice(lambda m: ndimage.binary_opening(m, structure=disk), filled)
    lab, n = ndimage.label(opened)
    sizes = np.bincount(lab.ravel()) * c.voxel_ml
    core = np.isin(lab, [i for i in range(1, n + 1) if sizes[i] >= 50.0])
    return _per_slice(lambda m: ndimage.binary_dilation(m, structure=disk), core) & filled


def _lungs(c, body):
    """Aerated lung: inside the body, below LUNG_HU_MAX, in 3-D components of at least
    20 mL whose median is lung-like (gas in bowel and airways is darker); split into left and
    right at the body's midline where one component holds both."""
    air = body & (c.g < LUNG_HU_MAX)
    lab, n = ndimage.label(air)
    if n == 0:
        return air, air
    idx = np.arange(1, n + 1)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:] * c.voxel_ml
    medians = np.full(n, -1000.0)
    big = idx[sizes >= 20.0]
    boxes = ndimage.find_objects(lab)
    # each component's median and 10th percentile from its own box (ndimage.median(c.g, lab,
    # big) gives the same medians but sorts the whole grid: 1.8 s on a clinical CT)
    values = {i: c.g[sl][lab[sl] == i] for i, sl in zip(idx, boxes) if sizes[i - 1] >= 20.0}
    if big.size:
        medians[big - 1] = [np.median(values[i].astype(np.float64)) for i in big]
    p10 = np.array([np.percentile(values[i], 10) if i in values else -1000.0 for i in idx])
    like = (sizes >= 20.0) & (medians > LUNG_MEDIAN_HU_MIN) & ((p10 > LUNG_P10_HU_MIN) | (sizes >= 300.0))
    if not like.any():
        return air & False, air & False
    # the main lung, and what lies at its levels (the other lung, a separate lobe or base)
    planes = {i: np.flatnonzero((lab == i).any(axis=(0, 1))) for i in idx[like]}
    main = idx[like][int(np.argmax(sizes[like]))]
    lo, hi = planes[main].min(), planes[main].max()
    keep = [i for i in idx[like] if np.mean((planes[i] >= lo) & (planes[i] <= hi)) >= 0.5]
    lung = np.isin(lab, keep)
    mid = float(np.mean(c.x[np.nonzero(body)[0]]))
    left_cols = c.x > mid  # LPS: +x is the patient's left
    left = lung & left_cols[:, None, None]
    return left, lung & ~left


def _brain(c, body):
    """Brain: on slices where bone (> BONE_HU_MIN) encloses at least 20 cm2 of soft tissue
    (the skull's ring), the enclosed brain-density tissue; its largest 3-D component."""
    bone = body & (c.g > BONE_HU_MIN)
    brain = np.zeros_like(body)
    skull = np.zeros_like(body)
    px = c.spacing[0] * c.spacing[1] / 100.0  # cm2 per pixel
    for k in np.flatnonzero(bone.any(axis=(0, 1))):
        filled = ndimage.binary_fill_holes(bone[:, :, k])
        inside = filled & ~bone[:, :, k]
        if inside.sum() * px < 20.0:
            continue
        soft = inside & (c.g[:, :, k] > BRAIN_HU[0]) & (c.g[:, :, k] < BRAIN_HU[1])
        if soft.sum() >= 0.8 * inside.sum():
            brain[:, :, k] = soft
            ring, _ = ndimage.label(bone[:, :, k])
            skull[:, :, k] = np.isin(
                ring, np.unique(ring[ndimage.binary_dilation(inside, iterations=2) & bone[:, :, k]])
            )
    brain = _largest(brain)
    return brain, skull & ndimage.binary_dilation(brain, iterations=4)


def _spine(c, body, exclude, bone_min=BONE_HU_MIN):
    """Vertebral column: the course of the vertebral bodies' centres and the column's bone.

    Bone is CT above ``bone_min`` (BONE_HU_MIN; on contrast-enhanced CT SPINE_BONE_ENHANCED_HU,
    above the blood of heart and vessels) with, slice by slice, the inside of its outlines (closed
    by VERTEBRA_CLOSING_MM: an osteopenic cortex is broken, its cancellous bone reads
    100-200 HU). The column is the bone connected in 3-D to the posterior midline (laminae,
    spinous processes); an enhanced aorta or a calcified plaque in front of the bodies is
    as dense (a contrast-filled aorta pressed against the bodies is taken out first:
    ``exclude``). On each slice the body's centre lies VERTEBRA_BODY_MM / 2 behind the
    column's anterior surface at the midline. At disc levels the centre strays:
    the course keeps the centres within VERTEBRA_STRAY_MM of the median of their neighbours
    (+-VERTEBRA_WINDOW_MM in z) and interpolates between them. The column's mask is its
    bone within VERTEBRA_EXTENT_MM of the course (transverse and spinous processes
    included, ribs cut off). Returns (mask, {slice: (x, y) of the body's centre})."""
    bone = body & (c.g > bone_min) & ~exclude
    disk = _disk(VERTEBRA_CLOSING_MM, c.spacing)
    filled_bone, near, posterior, mids = _spine_slices(c, body, bone, body & ~exclude, disk)
    # the column: the bone (in 3-D) that reaches the posterior midline, where the laminae and
    # spinous processes are; an enhanced aorta or a calcified plaque in front of the bodies
    # is bone-dense too, but never joins them
    lab3, n3 = ndimage.label(filled_bone)
    back = np.bincount(lab3[posterior & (lab3 > 0)], minlength=n3 + 1)
    column3 = np.isin(lab3, np.flatnonzero(back >= 3))
    if bone_min > BONE_HU_MIN:  # enhanced CT: the marrow and a thin cortex read below bone_min
        column3 |= _column_completed(c, body & ~exclude, column3, near, disk)
    found = _body_centres(c, column3, near, mids)
    spine, centre = np.zeros_like(body), {}
    if len(found) < 3:
        return spine, centre
    kept = _steady_centres(c, found)
    if kept is None:
        return spine, centre
    kk, pp = kept
    for k in range(int(kk.min()), int(kk.max()) + 1):
        centre[k] = np.array([np.interp(k, kk, pp[:, 0]), np.interp(k, kk, pp[:, 1])])
        d_x = (c.x - centre[k][0])[:, None]
        d_y = (c.y - centre[k][1])[None, :]
        box = (np.abs(d_x) < VERTEBRA_EXTENT_MM[0]) & (d_y > -VERTEBRA_EXTENT_MM[1]) & (d_y < VERTEBRA_EXTENT_MM[2])
        spine[:, :, k] = column3[:, :, k] & box
    return spine, centre


def _spine_slices(c, body, bone, trunk, disk):
    """Per slice for :func:`_spine`: filled bone, the column's search area, the posterior midline, the mid x."""
    filled_bone, near, posterior = (np.zeros_like(body) for _ in range(3))
    mids = {}
    for k in np.flatnonzero(bone.any(axis=(0, 1))):
        big = _largest(trunk[:, :, k])  # the trunk, not the arms
        if not big.any():
            continue
        ii, jj = np.nonzero(big)
        mids[k] = mid_x = c.column_x(ii)
        ys = c.y[jj]
        span = ys.max() - ys.min()  # LPS: +y posterior
        # an osteopenic body's cortex is broken at 3 mm: closed by VERTEBRA_CLOSING_MM first
        # (only to find its inside: the closing's bridges to nearby dense tissue, an enhanced
        # aorta a few mm in front, are not kept)
        closed = ndimage.binary_closing(bone[:, :, k], structure=disk, border_value=0)
        inside = ndimage.binary_fill_holes(closed) & ~closed
        filled_bone[:, :, k] = (bone[:, :, k] | inside) & ndimage.binary_dilation(big, iterations=2)
        near[:, :, k] = (np.abs(c.x - mid_x) < 35.0)[:, None] & (c.y > ys.min() + 0.4 * span)[None, :]
        posterior[:, :, k] = (np.abs(c.x - mid_x) < 20.0)[:, None] & (c.y > ys.max() - 0.3 * span)[None, :]
    return filled_bone, near, posterior, mids


def _body_centres(c, column3, near, mids):
    """The vertebral body's centre on each slice where the column is large enough: {slice: (x, y)}."""
    px = c.spacing[0] * c.spacing[1] / 100.0  # cm2 per pixel
    found = {}
    for k, mid_x in mids.items():
        bl, nb = ndimage.label(column3[:, :, k] & near[:, :, k])
        if nb == 0:
            continue
        # its pieces on this slice (an osteopenic vertebra falls apart into cortex and processes)
        area = np.bincount(bl.ravel(), minlength=nb + 1) * px
        keep = np.flatnonzero(area >= VERTEBRA_PIECE_CM2)
        keep = keep[keep > 0]
        if not keep.size or area[keep].sum() < VERTEBRA_MIN_CM2:
            continue
        column = np.isin(bl, keep)
        # the body is the column's front: its anterior surface at the midline, and
        # VERTEBRA_BODY_MM / 2 behind it
        bi, bj = np.nonzero(column & (np.abs(c.x - mid_x) < 15.0)[:, None])
        if not bi.size:
            continue
        front = c.y[bj].min()  # LPS: anterior is -y
        ci = np.nonzero(column & (c.y < front + VERTEBRA_BODY_MM)[None, :])[0]
        found[int(k)] = np.array([float(np.mean(c.x[ci])), front + VERTEBRA_BODY_MM / 2.0])
    return found


def _steady_centres(c, found):
    """Slices and centres within VERTEBRA_STRAY_MM of their neighbours' median; None if under 3."""
    ks = np.array(sorted(found))
    pts = np.array([found[k] for k in ks])
    win = max(int(round(VERTEBRA_WINDOW_MM / c.spacing[2])), 1)
    keep = []
    for n_, k in enumerate(ks):
        near = np.abs(ks - k) <= win
        med = np.median(pts[near], axis=0)
        if np.linalg.norm(pts[n_] - med) <= VERTEBRA_STRAY_MM:
            keep.append(n_)
    if len(keep) < 3:
        return None
    return ks[keep], pts[keep]


def _column_completed(c, allowed, column, near, disk):
    """On contrast-enhanced CT, the rest of each slice's vertebra: bone above BONE_HU_MIN
    (outlines closed and filled as in :func:`_spine`) joined on the slice to the column
    traced above SPINE_BONE_ENHANCED_HU, where that adds at most VERTEBRA_FILL_MAX_CM2 (a
    vertebral body's marrow and thin cortex; enhanced blood joined to it would add a heart
    or a vessel's length, and the aorta is already out of ``allowed``)."""
    px = c.spacing[0] * c.spacing[1] / 100.0
    out = np.zeros_like(column)
    for k in np.flatnonzero(column.any(axis=(0, 1))):
        low = ndimage.binary_closing(allowed[:, :, k] & (c.g[:, :, k] > BONE_HU_MIN), structure=disk, border_value=0)
        low = ndimage.binary_fill_holes(low) & allowed[:, :, k] & near[:, :, k]
        lab, _ = ndimage.label(low)
        for piece in np.setdiff1d(np.unique(lab[column[:, :, k]]), [0]):
            add = (lab == piece) & ~column[:, :, k]
            if add.sum() * px <= VERTEBRA_FILL_MAX_CM2:
                out[:, :, k] |= add
    return out


def _courses_part(course, dense, dz_mm):
    """Whether the column's ``course`` (slice -> body centre) strays more than
    VERTEBRA_STRAY_MM from the ``dense`` one (traced above SPINE_BONE_ENHANCED_HU) on a
    tenth of their common slices, or the dense one covers half as many slices again: enhanced
    blood the aorta's lumen did not hold (the heart, another vessel) joined the bone.
    A dense course shorter than 30 mm is no evidence."""
    if len(dense) * dz_mm < 30.0:
        return False
    if len(dense) > 1.5 * len(course):
        return True
    far = [np.linalg.norm(course[k] - dense[k]) > VERTEBRA_STRAY_MM for k in sorted(set(course) & set(dense))]
    return bool(far) and float(np.mean(far)) > 0.1


def _round_candidates(c, k, target, window, exclude, search_mm, radius_mm):
    """Round structures of a CT window on slice k within ``search_mm`` of ``target``:
    the centres of maximal inscribed disks (local maxima of the in-plane distance to the
    window's edge, small noise holes closed first) of radius within ``radius_mm``, that
    are round (at most AORTA_ANNULUS_MAX of a ring 3-9 mm outside the disk lies in the
    window: an elongated band or a large organ continues there, a vessel in fat or lung
    does not) and not held in bone (less than CORTEX_SHARE of the 4 mm just outside denser
    than CORTEX_HU and CORTEX_OVER_LUMEN x its centre, and the upper quarter of its own
    outer 4 mm not CORTEX_RING_OVER_CENTRE x its centre: a vertebral body's marrow, as
    dense as contrast-filled blood, is held in a cortex; a vessel's edge is its lumen, or
    darker). Returns [(centre (x, y), radius)], widest first, and the window mask of the
    plane's box that holds everything the candidates reach (False beyond it).

    All of it is computed in that box (:func:`_reach_box`), not in the whole plane: a
    candidate's inscribed disk, its ring and its outer 4 mm lie within ``search_mm`` +
    ``radius_mm[1]`` + 9 mm of the target, a distance up to ``radius_mm[1]`` sees no
    farther, and a noise hole cut by the box's edge (closed in the plane, not in the box)
    lies within a hole's size of that edge."""
    reach = _reach_box(c, target, search_mm + radius_mm[1] + 9.0)
    plane = c.g[:, :, k][reach]
    win = (plane > window[0]) & (plane < window[1]) & ~exclude[:, :, k][reach]
    holes, n = ndimage.label(ndimage.binary_fill_holes(win) & ~win)
    if n:
        small = np.flatnonzero(np.bincount(holes.ravel()) * c.spacing[0] * c.spacing[1] <= SMALL_HOLE_MM2)
        win |= np.isin(holes, small[small > 0])
    m = np.zeros(c.g.shape[:2], bool)
    m[reach] = win
    if win.all():  # no edge within the box: every distance exceeds the widest radius
        return [], m
    dist = ndimage.distance_transform_edt(win, sampling=c.spacing[:2])
    peaks = (dist >= radius_mm[0]) & (dist <= radius_mm[1]) & (_plane_distance(c, target, reach) <= search_mm)
    peaks &= dist >= ndimage.maximum_filter(dist, size=3) - 1e-6  # (the box's edge is beyond the search)
    i0, j0 = reach[0].start, reach[1].start
    out = []
    for pi, pj in sorted(zip(*np.nonzero(peaks)), key=lambda ij: -dist[ij]):
        i, j, r = pi + i0, pj + j0, float(dist[pi, pj])
        xy = np.array([c.x[i], c.y[j]])
        if any(np.linalg.norm(xy - o[0]) < o[1] for o in out):
            continue  # on the same disk as a wider one
        # what follows lies within r + 9 mm of the centre: the plane's box around it (a voxel wider)
        box = _plane_box(c, xy, [r + 9.0 + c.spacing.max()] * 2)
        d = _plane_distance(c, xy, box)
        g, mb = c.g[:, :, k][box], m[box]
        ring = (d > r + 3.0) & (d <= r + 9.0)
        # a vertebral body's marrow is round too, but held in a cortex: just outside the disk
        # (plain CT) or, where the cortex reads within the window, in the disk's outer 4 mm
        centre = float(np.median(g[d <= max(r - 4.0, c.spacing[0])]))
        rim = g[(d > r) & (d <= r + 4.0)]
        inner = g[(d > r - 4.0) & (d <= r) & mb]
        bony = np.mean(rim > max(CORTEX_HU, CORTEX_OVER_LUMEN * centre)) >= CORTEX_SHARE
        bony |= inner.size > 0 and float(np.percentile(inner, 75)) >= CORTEX_RING_OVER_CENTRE * centre and centre > 0
        if ring.any() and mb[ring].mean() <= AORTA_ANNULUS_MAX and not bony:
            out.append((xy, r))
    return out, m


def _longest_course(cands, spacing_z):
    """The longest chain through per-slice candidates {k: [(centre, radius), ...]}: from
    one slice to the next (gaps of up to AORTA_GAP_MM) the centre moves at most
    AORTA_STEP_MM plus 0.5 mm per mm of z, and the radius changes by at most a third.
    Returns {k: (centre, radius)}."""
    ks = sorted(k for k in cands if cands[k])
    best = {}  # (k, i): (length in slices, previous node)
    for k in ks:
        for i, (xy, r) in enumerate(cands[k]):
            score, prev = 1, None
            for g in range(1, int(AORTA_GAP_MM / spacing_z) + 2):
                for j, (xy0, r0) in enumerate(cands.get(k - g, ())):
                    if (k - g, j) not in best:
                        continue
                    if np.linalg.norm(xy - xy0) > AORTA_STEP_MM + 0.5 * g * spacing_z or not 0.75 <= r / r0 <= 1.33:
                        continue
                    if best[(k - g, j)][0] + g > score:
                        score, prev = best[(k - g, j)][0] + g, (k - g, j)
            best[(k, i)] = (score, prev)
    if not best:
        return {}
    node = max(best, key=lambda n: best[n][0])
    course = {}
    while node is not None:
        course[node[0]] = cands[node[0]][node[1]]
        node = best[node][1]
    return course


def _min_course_mm(c):
    """The shortest aorta course accepted: AORTA_MIN_COURSE_MM, or AORTA_MIN_COURSE_SHARE of
    a shorter field of view."""
    return round(min(AORTA_MIN_COURSE_MM, AORTA_MIN_COURSE_SHARE * len(c.z) * c.spacing[2]), 1)


def _enhanced_aorta(c, body, lungs):
    """A contrast-filled aorta found without the spine (whose bone it may touch and match in
    density): the longest course (:func:`_longest_course`) of round structures in the
    enhanced window (ENHANCED_BLOOD_HU) within ENHANCED_SEARCH_MM of a point left of the
    trunk's midline, ENHANCED_DEPTH of the way from its back to its front. Vertebral bodies
    are as dense and as round where their cortex is thin, but bone, not fat, surrounds
    them (:func:`_round_candidates`); the vena cava lies right of the midline. Returns
    {slice: (centre, radius)} of a course at least :func:`_min_course_mm` long, else {}."""
    exclude = lungs | ~body | (c.g > ENHANCED_BLOOD_HU[1])
    cands = {}
    for k in range(body.shape[2]):
        big = _largest(body[:, :, k])
        if not big.any():
            continue
        ii, jj = np.nonzero(big)
        if ii.size * c.spacing[0] * c.spacing[1] < 10000.0:  # not the trunk (head, neck, arms)
            continue
        ys = c.y[jj]
        mid = c.column_x(ii)
        target = np.array([mid + ENHANCED_LEFT_MM, ys.max() - ENHANCED_DEPTH * (ys.max() - ys.min())])
        cands[k], _ = _round_candidates(c, k, target, ENHANCED_BLOOD_HU, exclude, ENHANCED_SEARCH_MM, AORTA_RADIUS_MM)
    course = _longest_course(cands, c.spacing[2])
    return course if len(course) * c.spacing[2] >= _min_course_mm(c) else {}


def _aorta(c, body, lungs, spine, spine_centre, offset_mm):
    """Descending aorta (thoracic and abdominal): on every slice with a vertebral body, the
    round structures (:func:`_round_candidates`) of lumen radius AORTA_RADIUS_MM within
    AORTA_SEARCH_MM of ``offset_mm`` from the body's centre (left-anterior of it), in the
    window of unenhanced blood (BLOOD_HU) and in that of enhanced blood
    (ENHANCED_BLOOD_HU); the longest continuous course (:func:`_longest_course`) of either
    is the aorta, and its window tells whether the CT is contrast-enhanced.
    Returns (mask, contrast-enhanced? or None, {slice: (centre, radius)})."""
    if len(spine_centre) < 3:
        return np.zeros_like(body), None, {}
    exclude = ndimage.binary_dilation(spine, iterations=1) | lungs | ~body | (c.g > ENHANCED_BLOOD_HU[1])
    base = _lung_base_z(c)
    courses = {}
    for mode, window in (("enhanced", ENHANCED_BLOOD_HU), ("plain", BLOOD_HU)):
        cands, masks = {}, {}
        for k, sc in spine_centre.items():
            found, masks[k] = _round_candidates(
                c, k, sc + np.asarray(offset_mm), window, exclude, AORTA_SEARCH_MM, AORTA_RADIUS_MM
            )
            if base is None or c.z[k] < base:  # the abdomen: in front of the body, not beside it
                found = [
                    (xy, r)
                    for xy, r in found
                    if np.degrees(np.arctan2(sc[1] - xy[1], xy[0] - sc[0])) >= AORTA_ABDOMINAL_MIN_DEG
                ]
            cands[k] = found
        course = _longest_course(cands, c.spacing[2])
        courses[mode] = (course, masks)
    mode = max(courses, key=lambda m: len(courses[m][0]))
    course, masks = courses[mode]
    # the lumen out to its partial-volume edge: one voxel beyond the inscribed disk, where
    # the CT is still above halfway between the window's floor and fat
    window = ENHANCED_BLOOD_HU if mode == "enhanced" else BLOOD_HU
    edge = (window[0] + FAT_HU[1]) / 2.0
    if len(course) < 3:
        return np.zeros_like(body), None, {}
    # the slices the course skipped (up to AORTA_GAP_MM where the aorta was not round) are
    # bridged: centre and radius interpolated between their neighbours
    ks = np.array(sorted(course))
    for k in range(int(ks[0]) + 1, int(ks[-1])):
        if k not in course:
            w = (k - ks[ks < k].max()) / (ks[ks > k].min() - ks[ks < k].max())
            lo, hi = course[int(ks[ks < k].max())], course[int(ks[ks > k].min())]
            course[k] = ((1 - w) * lo[0] + w * hi[0], (1 - w) * lo[1] + w * hi[1])
    course = dict(sorted(course.items()))
    mask = np.zeros_like(body)
    for k, (xy, r) in course.items():
        disk = _plane_distance(c, xy) <= r + 1.0 * c.spacing[0]
        lumen = (c.g[:, :, k] > edge) & (c.g[:, :, k] < window[1]) & ~exclude[:, :, k]
        mask[:, :, k] = disk & (lumen | masks[k]) if k in masks else disk & lumen
    return mask, mode == "enhanced", course


def _organ_from_seed(c, seed, allowed, limit_mm=None, level=None, half=None):
    """The tissue connected to ``seed`` within a window around the denoised CT's median in a
    10 mm ball there (ORGAN_WINDOW_SD noise deviations, clipped to ORGAN_WINDOW_HU), inside
    ``allowed``; bridges thinner than 2 x ORGAN_BRIDGE_MM cut (opening by a ball, the
    seed's component regrown by the same radius inside the window), then closed and
    hole-filled slice by slice (hypodense lesions and vessels belong to their organ);
    optionally within ``limit_mm`` of the seed. ``level`` (HU) replaces the ball's median
    (an organ regrown at the median of a first growth: :func:`_regrown`), ``half`` the
    half-window. Returns (mask, level, half-window)."""
    g = c.denoised
    ijk = tuple(int(v) for v in seed)
    r = np.maximum(np.ceil(10.0 / c.spacing).astype(int), 1)
    sl = tuple(slice(max(i - ri, 0), i + ri + 1) for i, ri in zip(ijk, r))  # the 10 mm ball (a box)
    vals = g[sl][allowed[sl]] if allowed[sl].any() else g[sl].ravel()
    level = float(np.median(vals)) if level is None else float(level)
    sd = 1.4826 * float(np.median(np.abs(vals - level)))
    half = float(np.clip(ORGAN_WINDOW_SD * sd, *ORGAN_WINDOW_HU)) if half is None else float(half)
    m = allowed & (np.abs(g - level) <= half)
    if limit_mm is not None:
        d = np.sqrt(
            ((c.x - c.x[ijk[0]]) ** 2)[:, None, None]
            + ((c.y - c.y[ijk[1]]) ** 2)[None, :, None]
            + ((c.z - c.z[ijk[2]]) ** 2)[None, None, :]
        )
        m &= d <= limit_mm
    if not m.any():
        return np.zeros_like(m), level, half
    ball_se = _ball(ORGAN_BRIDGE_MM, c.spacing)
    disk = _disk(6.0, c.spacing)
    # everything below happens within the window's box, with room for the rim and the
    # closing around it (the same masks as on the whole grid: nothing lies outside)
    box = box_around(m, max(ball_se.shape) // 2 + 2 * max(disk.shape) + 3)
    m, allowed_b, g_b = m[box], allowed[box], g[box]
    sl = tuple(slice(max(s.start - b.start, 0), max(s.stop - b.start, 0)) for s, b in zip(sl, box))

    def main_in_ball(mask):
        """Label of the component of ``mask`` with most voxels in the seed's ball (the seed
        voxel itself may be noise or lie on an edge), or 0."""
        lab, _ = ndimage.label(mask)
        counts = np.bincount(lab[sl].ravel())
        counts[0] = 0
        return lab, int(np.argmax(counts)) if counts.size > 1 and counts.max() > 0 else 0

    lab, i = main_in_ball(ndimage.binary_opening(m, structure=ball_se))
    if i:
        organ = ndimage.binary_dilation(lab == i, structure=ball_se) & m
    else:  # the organ is thin at the seed: its plain component
        lab, i = main_in_ball(m)
        if not i:
            return np.zeros_like(allowed), level, half
        organ = lab == i
    # the partial-volume rim: edge voxels, half organ and half neighbour, within twice the window
    rim = ndimage.binary_dilation(organ) & allowed_b & (np.abs(g_b - level) <= 2.0 * half)
    if limit_mm is not None:
        rim &= d[box] <= limit_mm
    organ |= rim
    organ = _per_slice(
        lambda s: ndimage.binary_fill_holes(ndimage.binary_closing(s, structure=disk, border_value=0)), organ
    )
    out = np.zeros_like(allowed)
    out[box] = organ & allowed_b
    return out, level, half


def _regrown(c, seed, allowed, limit_mm):
    """An organ grown from ``seed`` (:func:`_organ_from_seed`), then grown again at the
    median of what the first growth took (the seed's 10 mm ball may hold a vessel, the
    renal sinus fat or a lesion). Returns (mask, level, half-window)."""
    organ, level, half = _organ_from_seed(c, seed, allowed, limit_mm=limit_mm)
    if organ.sum() < 10:
        return organ, level, half
    return _organ_from_seed(c, seed, allowed, limit_mm=limit_mm, level=float(np.median(c.denoised[organ])))


def _deepest(c, region, homogeneous=False):
    """Voxel of ``region`` deepest inside it (3-D distance, mm) and that depth. With
    ``homogeneous``, the deepest voxel whose 10 mm ball is of one tissue (robust SD of the
    denoised CT at most SEED_SD_HU; a ball straddling liver, kidney and muscle is not), of
    the SEED_TRIES deepest places at least 15 mm apart (a box); (None, 0) if none is."""
    if not region.any():
        return None, 0.0
    # within the region's bounding box, padded by one empty voxel (the same distances)
    box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in ndimage.find_objects(region.astype(np.uint8))[0])
    depth = ndimage.distance_transform_edt(np.pad(region[box], 1), sampling=c.spacing)[1:-1, 1:-1, 1:-1]
    if not homogeneous:
        k = np.unravel_index(int(np.argmax(depth)), depth.shape)
        return tuple(int(i + b.start) for i, b in zip(k, box)), float(depth[k])
    r = np.maximum(np.ceil(10.0 / c.spacing).astype(int), 1)
    near = np.maximum(np.ceil(15.0 / c.spacing).astype(int), 1)
    depth = depth.copy()
    for _ in range(SEED_TRIES):
        f = int(np.argmax(depth))
        if depth.flat[f] <= 0:
            break
        k = np.unravel_index(f, depth.shape)
        ijk = tuple(int(i + b.start) for i, b in zip(k, box))
        sl = tuple(slice(max(i - ri, 0), i + ri + 1) for i, ri in zip(ijk, r))
        vals = c.denoised[sl][region[sl]]
        if 1.4826 * float(np.median(np.abs(vals - np.median(vals)))) <= SEED_SD_HU:
            return ijk, float(depth[k])
        depth[tuple(slice(max(i - n, 0), i + n + 1) for i, n in zip(k, near))] = 0.0  # the next place 15 mm away
    return None, 0.0


def _side_mask(c, body, side):
    """Columns on the patient's right (side -1) or left (+1) of the body's midline."""
    mid = float(np.mean(c.x[np.nonzero(body)[0]]))
    return ((c.x - mid) * side > 10.0)[:, None, None] & np.ones(body.shape, bool)


def _under_dome(c, lung, below_mm):
    """Planes from just under a lung's lowest point to ``below_mm`` below it; on a CT with
    no lung at all (an abdomen-only field of view starting below the domes), the top
    ``below_mm`` of the field of view. Returns (planes, how they were found or None)."""
    planes = np.flatnonzero(lung.any(axis=(0, 1)))
    if not planes.size:  # this side's base is not in the field of view: the other's, if any
        planes = np.flatnonzero(c.mask("lung_left", "lung_right").any(axis=(0, 1)))
    if not planes.size:
        return c.z > c.z.max() - below_mm, "in the top of the field of view (no lungs in it)"
    dome = c.z[planes].min()
    return (c.z < dome + 15.0) & (c.z > dome - below_mm), None


def _depth_in_plane(c, body):
    """Distance (mm) of each body voxel from the body's outline, slice by slice; computed
    once per context (a CT has one body)."""
    if c.body_depth is None:
        c.body_depth = _per_slice(lambda m: ndimage.distance_transform_edt(m, sampling=c.spacing[:2]), body, np.float32)
    return c.body_depth


def _lung_base_z(c):
    """z (mm) of the lowest lung voxel found so far, or None without lungs."""
    planes = np.flatnonzero(c.mask("lung_left", "lung_right").any(axis=(0, 1)))
    return float(c.z[planes].min()) if planes.size else None


def _soft(c, body):
    """Parenchyma-dense tissue (PARENCHYMA_HU) of the denoised CT."""
    return body & (c.denoised > PARENCHYMA_HU[0]) & (c.denoised < PARENCHYMA_HU[1])


def _above_diaphragm(c, body, margin_mm=0.0):
    """The thorax: voxels above the diaphragm, whose surface is the lungs' lower surface
    (the lowest lung voxel of each column) interpolated linearly across the columns that
    hold no lung (the heart's and the mediastinum's, where the domes meet at the central
    tendon), nearest-extended beyond the lungs' outline, shifted up by ``margin_mm``
    (negative: down). No lungs in the field of view: nothing (an abdomen-only CT). The
    surface is computed once per context."""
    if c.diaphragm is None:
        c.diaphragm = _diaphragm_surface(c)
    if c.diaphragm is False:
        return np.zeros_like(body)
    return c.z[None, None, :] > c.diaphragm[:, :, None] + margin_mm


def _diaphragm_surface(c):
    """z (mm) of the diaphragm per (i, j) column (see :func:`_above_diaphragm`), or False."""
    from scipy.interpolate import griddata

    lungs = c.mask("lung_left", "lung_right")
    if lungs.any():
        cols = lungs.any(axis=2)
        zb = np.where(lungs, c.z[None, None, :], np.inf).min(axis=2)  # each column's lowest lung voxel
        # columns numbered on the whole work grid, also in a context cut to the body's
        # columns: the triangulation (and so the surface) is the same either way. The whole
        # grid's extra query points lie beyond the lungs' hull, which scipy rejects before
        # its walk through the triangles, so the walk (and every value) is the same too.
        pts = np.argwhere(cols) + c.columns_from
        ii, jj = np.indices(cols.shape) + c.columns_from[:, None, None]
        surf = griddata(pts, zb[cols], (ii, jj), method="linear")
        near = griddata(pts, zb[cols], (ii, jj), method="nearest")
        return np.where(np.isfinite(surf), surf, near)
    return False


def _back_muscles(c, spine_centre, shape):
    """Where the erector spinae lie: within BACK_MUSCLES_MM[0] of the midline and more than
    BACK_MUSCLES_MM[1] behind the vertebral body's centre (behind the transverse processes).
    Thick and, on plain CT, as dense as liver, spleen and kidneys: never an organ's seed."""
    dx, dy = _spine_frame(c, spine_centre, shape)
    return (np.abs(dx) < BACK_MUSCLES_MM[0]) & (dy > BACK_MUSCLES_MM[1])


def _liver(c, body, lung_right, spine_centre):
    """Liver: the thickest soft tissue on the patient's right within 150 mm under the right
    lung's base (or the top of an abdomen-only field of view), clear of the back muscles,
    grown within its own density (ORGAN_WINDOW_SD, ORGAN_WINDOW_HU) so that plain (55-65
    HU) and enhanced (100-130 HU) livers are found alike, limited to 230 mm from its seed,
    below the diaphragm, and grown again at its own median (:func:`_regrown`)."""
    if not spine_centre:
        return None, "no vertebral column on the CT to place a liver by"
    band, where = _under_dome(c, lung_right, 150.0)
    where = where or "under the right lung"
    allowed = _soft(c, body) & ~c.mask("aorta", "vertebrae", "heart", "lung_left", "lung_right")
    # the liver lies under the diaphragm: the heart, of similar density on plain CT, sits on
    # it beside the right dome and must not be grown into
    allowed &= ~_above_diaphragm(c, body)
    # nor into the erector spinae, as dense on plain CT and joined to it through the diaphragm
    allowed &= ~_back_muscles(c, spine_centre, body.shape)
    region = allowed & _side_mask(c, body, -1)
    region[:, :, ~band] = False
    seed, depth = _deepest(c, region, homogeneous=True)
    if seed is None or depth < 15.0:
        return None, f"no soft tissue {where} deep enough for a liver"
    organ, level, half = _regrown(c, seed, allowed, 230.0)
    c.levels["liver"] = level
    return organ, f"grown from the thickest tissue on the right {where} at {level:.0f} +/- {half:.0f} HU"


def _spleen(c, body, lung_left, spine_centre):
    """Spleen: the thickest soft tissue on the patient's left, in the posterior half, within
    120 mm under the left lung's base (or the top of an abdomen-only field of view), clear of
    the back muscles, grown within its own density within 80 mm and SPLEEN_WALL_MM inside
    the body's outline."""
    if not spine_centre:
        return None, "no vertebral column on the CT to place a spleen by"
    band, where = _under_dome(c, lung_left, 120.0)
    where = where or "under the left lung"
    ys = c.y[np.nonzero(body)[1]]
    posterior = (c.y > np.percentile(ys, 45))[None, :, None]
    region = (
        _soft(c, body)
        & ~c.mask("aorta", "vertebrae", "heart", "liver", "kidney_left")
        & _side_mask(c, body, +1)
        & posterior
    )
    region[:, :, ~band] = False
    region &= ~ndimage.binary_dilation(c.mask("vertebrae"), iterations=8) & ~_back_muscles(c, spine_centre, body.shape)
    seed, depth = _deepest(c, region, homogeneous=True)
    if seed is None or depth < 10.0:
        return None, f"no soft tissue {where} deep enough for a spleen"
    allowed = _soft(c, body) & ~c.mask("aorta", "vertebrae", "heart", "liver", "lung_left", "lung_right", "kidney_left")
    # the spleen lies inside the body wall (ribs, intercostal and abdominal muscle, fat),
    # whose muscle has nearly its density on plain CT
    allowed &= _depth_in_plane(c, body) > SPLEEN_WALL_MM
    organ, level, half = _organ_from_seed(c, seed, allowed, limit_mm=80.0)
    return organ, f"grown from the thickest tissue on the left {where} at {level:.0f} +/- {half:.0f} HU"


def _spine_frame(c, spine_centre, shape):
    """Per-voxel offsets (mm) from the vertebral body's centre on each slice (interpolated
    over z, the nearest end beyond the column): (dx, dy), read-only views of ``shape``."""
    ks = np.array(sorted(spine_centre))
    pts = np.array([spine_centre[k] for k in ks])
    kk = np.arange(shape[2])
    sx, sy = np.interp(kk, ks, pts[:, 0]), np.interp(kk, ks, pts[:, 1])
    return (
        np.broadcast_to(c.x[:, None, None] - sx[None, None, :], shape),
        np.broadcast_to(c.y[None, :, None] - sy[None, None, :], shape),
    )


def _iliac_crest_z(c, body, spine_centre):
    """z (mm) of the iliac crests: the highest slice below the lungs where a bone plate of
    ILIAC_WING_CM2 lies on each side of the column, 50-160 mm out; None without one. (Ribs
    cut across obliquely can reach that area: used where no lung is in the field of view.)"""
    if not spine_centre:
        return None
    dx, _ = _spine_frame(c, spine_centre, body.shape)
    bone = body & (c.g > BONE_HU_MIN) & ~c.mask("vertebrae")
    px = c.spacing[0] * c.spacing[1] / 100.0
    base = _lung_base_z(c)
    for k in np.argsort(-c.z):  # from the top down
        if base is not None and c.z[k] > base:
            continue
        sides = []
        for side in (-1, 1):
            out = ((dx[:, 0, k] * side > 50.0) & (dx[:, 0, k] * side < 160.0))[:, None]
            lab, n = ndimage.label(bone[:, :, k] & out)
            sides.append(n > 0 and np.bincount(lab.ravel())[1:].max() * px >= ILIAC_WING_CM2)
        if all(sides):
            return float(c.z[k])
    return None


def _kidney(c, body, spine_centre, side, enhanced):
    """Kidney: the thickest tissue of kidney density (plain KIDNEY_HU, widened for partial
    volume with the sinus fat; enhanced: the cortex, above KIDNEY_ENHANCED_HU and
    KIDNEY_OVER_LIVER_HU above the liver) in the kidney's place beside the vertebral
    bodies (KIDNEY_ZONE_MM: lateral to the psoas, level with the bodies; the erector
    spinae, of the same density on plain CT, lie behind the transverse processes), below
    the lungs' bases, clear of the organs found; grown within its own density
    (:func:`_organ_from_seed`) within KIDNEY_REACH_MM, with narrower windows while it is
    larger than plausible. A grown organ that leans on bone (psoas, quadratus lumborum:
    KIDNEY_BONE_CONTACT), reaches the body wall (the spleen: KIDNEY_WALL_MM), lies against the
    vertebral body (the psoas: KIDNEY_MEDIAL_MM) or is centred out of place
    (KIDNEY_CENTRE_MM) is refused and the next thickest tissue is tried (KIDNEY_TRIES)."""
    if not spine_centre:
        return None, "no vertebral column on the CT to find the kidneys beside"
    dx, dy = _spine_frame(c, spine_centre, body.shape)
    dx = dx * side
    window = _kidney_window(c, enhanced)
    region, allowed, near_bone = _kidney_region(c, body, spine_centre, dx, dy, window, enhanced)
    depth_in_plane = _depth_in_plane(c, body)
    tried = []
    for _ in range(KIDNEY_TRIES):
        seed, depth = _deepest(c, region)
        if seed is None or depth < 8.0:
            break
        organ, level, half = _kidney_grown(c, seed, allowed, side)
        region &= ~ndimage.binary_dilation(organ, iterations=2)
        if not organ.any():
            continue
        why = _kidney_refused(organ, near_bone, dx, dy, depth_in_plane)
        if why is None:
            return organ, (
                f"grown from the thickest kidney-density tissue beside the vertebral bodies at {level:.0f} "
                f"+/- {half:.0f} HU" + (f" (refused before: {'; '.join(tried)})" if tried else "")
            )
        tried.append(f"{c.volume(organ):.0f} mL {why}")
    return None, "no tissue of kidney density beside the vertebral bodies" + (f" ({'; '.join(tried)})" if tried else "")


def _kidney_window(c, enhanced):
    """The CT window (HU) of kidney tissue: plain parenchyma, or the enhanced cortex above the liver."""
    if enhanced:
        lo = KIDNEY_ENHANCED_HU[0]
        if "liver" in c.levels:  # the cortex stands out above the liver, the spleen does not
            lo = max(lo, c.levels["liver"] + KIDNEY_OVER_LIVER_HU)
        window = (lo, KIDNEY_ENHANCED_HU[1])
    else:
        window = KIDNEY_HU
    return window


def _kidney_region(c, body, spine_centre, dx, dy, window, enhanced):
    """Where a kidney's seed may lie, where it may grow, and what lies next to bone: (region, allowed, near_bone)."""
    zone = (dx > KIDNEY_ZONE_MM["lateral"][0]) & (dx < KIDNEY_ZONE_MM["lateral"][1])
    zone = zone & (dy > KIDNEY_ZONE_MM["posterior"][0]) & (dy < KIDNEY_ZONE_MM["posterior"][1])
    taken = c.mask(
        "liver", "spleen", "aorta", "vertebrae", "heart", "lung_left", "lung_right", "kidney_left", "kidney_right"
    )
    g = c.denoised
    bone = body & (c.g > (window[1] if enhanced else BONE_HU_MIN))  # an enhanced cortex is bone-dense
    near_bone = ndimage.binary_dilation(bone | c.mask("vertebrae"), iterations=1)
    region = body & (g > window[0]) & (g < window[1]) & zone & ~taken & ~near_bone
    # kidneys lie at T12-L3: their centres below the lungs' bases and above the iliac crests
    if (base := _lung_base_z(c)) is not None:
        region[:, :, (c.z > base + KIDNEY_BELOW_LUNG_MM[0]) | (c.z < base - KIDNEY_BELOW_LUNG_MM[1])] = False
    elif (crest := _iliac_crest_z(c, body, spine_centre)) is not None:  # an abdomen-only field of view
        region[:, :, c.z < crest + KIDNEY_ABOVE_CREST_MM] = False
    region = ndimage.binary_opening(region, structure=np.ones((3, 3, 3), bool))
    allowed = body & ~taken & ~bone & (g > (window[0] - 30.0 if not enhanced else 20.0)) & (g < window[1])
    return region, allowed, near_bone


def _kidney_grown(c, seed, allowed, side):
    """A kidney grown from ``seed``, its half-window narrowed (KIDNEY_HALF_WINDOW_HU) while too large."""
    # a kidney grown into touching bowel or muscle of its density is too large: the
    # window is narrowed until it is not
    for narrow in KIDNEY_HALF_WINDOW_HU:
        organ, level, half = _organ_from_seed(c, seed, allowed, limit_mm=KIDNEY_REACH_MM, half=narrow)
        if c.volume(organ) <= PLAUSIBLE_ML["kidney_right" if side < 0 else "kidney_left"][1]:
            break
    return organ, level, half


def _kidney_refused(organ, near_bone, dx, dy, depth_in_plane):
    """Why a grown kidney is not one (bone contact, body wall, vertebral body, place), or None."""
    surface = organ & ~ndimage.binary_erosion(organ)
    contact = float((surface & near_bone).sum()) / max(float(surface.sum()), 1.0)
    cx, cy = float(dx[organ].mean()), float(dy[organ].mean())
    ok_place = (
        KIDNEY_CENTRE_MM["lateral"][0] <= cx <= KIDNEY_CENTRE_MM["lateral"][1]
        and KIDNEY_CENTRE_MM["posterior"][0] <= cy <= KIDNEY_CENTRE_MM["posterior"][1]
    )
    wall = float(np.percentile(depth_in_plane[organ], 2))
    medial = float(np.percentile(np.hypot(dx[organ], dy[organ]), 2))
    if contact <= KIDNEY_BONE_CONTACT and ok_place and wall >= KIDNEY_WALL_MM and medial >= KIDNEY_MEDIAL_MM:
        return None
    return (
        f"leaning on bone ({100 * contact:.0f} % of its surface)"
        if contact > KIDNEY_BONE_CONTACT
        else f"reaching within {wall:.0f} mm of the body's outline"
        if wall < KIDNEY_WALL_MM
        else f"reaching within {medial:.0f} mm of the vertebral body's centre"
        if medial < KIDNEY_MEDIAL_MM
        else f"centred {cx:.0f} mm out, {cy:.0f} mm back of the vertebral body"
    )


def _bladder(c, body):
    """Urinary bladder: the largest water-dense (WATER_HU, widened by 10 HU) blob of at
    least 15 mL in the lowest 150 mm of the abdomen, near the midline (within 70 mm)."""
    mid = float(np.mean(c.x[np.nonzero(body)[0]]))
    water = body & (c.g > WATER_HU[0] - 10.0) & (c.g < WATER_HU[1] + 10.0) & (np.abs(c.x - mid) < 70.0)[:, None, None]
    if (base := _lung_base_z(c)) is not None:
        water[:, :, c.z > base - 150.0] = False
    kid = c.mask("kidney_left", "kidney_right")
    if kid.any():
        water[:, :, c.z > c.z[np.flatnonzero(kid.any(axis=(0, 1)))].min()] = False
    water = ndimage.binary_opening(water, structure=np.ones((3, 3, 3), bool))
    blob = _largest(water)
    if c.volume(blob) < 15.0:
        return None, "no water-dense blob of at least 15 mL low in the abdomen"
    return _per_slice(ndimage.binary_fill_holes, blob), "largest water-dense blob low in the abdomen"


def _ball_radii(radius_mm, spacing):
    """The whole-voxel radii (at least 1) of a ball of ``radius_mm`` on a grid of ``spacing``."""
    return tuple(int(v) for v in np.maximum(np.rint(radius_mm / np.asarray(spacing[:3])).astype(int), 1))


def _ellipsoid_metric(radii):
    """An offset ``a`` lies in the voxel ellipsoid of whole radii ``radii`` when
    ``sum((a_i * w_i)**2) <= R**2``: (w, R), every quantity a whole number, so that the test is
    exact in floating point, for the ball itself and for a distance transform sampled by ``w``."""
    r0, r1, r2 = radii
    return (r1 * r2, r0 * r2, r0 * r1), r0 * r1 * r2


def _ball(radius_mm, spacing):
    """A 3-D ball structuring element of ``radius_mm`` on a grid of ``spacing`` (the voxel
    ellipsoid of :func:`_ball_radii`, its surface included)."""
    radii = _ball_radii(radius_mm, spacing)
    (w0, w1, w2), big_r = _ellipsoid_metric(radii)
    a0, a1, a2 = np.ogrid[tuple(slice(-r, r + 1) for r in radii)]
    return (a0 * w0) ** 2 + (a1 * w1) ** 2 + (a2 * w2) ** 2 <= big_r**2


def _ball_dilation(mask, radii):
    """``binary_dilation(mask, structure=ball)`` for the voxel ellipsoid of ``radii``, from one
    distance transform (a large ball's dilation costs its size per voxel): the voxels whose
    nearest ``mask`` voxel lies within the ellipsoid. Distances are square roots of whole
    numbers, so the comparison with the whole number R is exact."""
    if not mask.any():
        return np.zeros_like(mask, dtype=bool)
    w, big_r = _ellipsoid_metric(radii)
    return ndimage.distance_transform_edt(~mask, sampling=w) <= big_r


def _ball_opening(mask, radii):
    """``binary_opening(mask, structure=ball)`` (outside the array counts as background, as
    there) for the voxel ellipsoid of ``radii``, from two distance transforms: the voxels
    whose nearest background lies beyond the ellipsoid, dilated (:func:`_ball_dilation`)."""
    w, big_r = _ellipsoid_metric(radii)
    padded = np.pad(mask, 1)  # the nearest point outside the array is never nearer than this rim
    core = (ndimage.distance_transform_edt(padded, sampling=w) > big_r)[1:-1, 1:-1, 1:-1]
    return _ball_dilation(core, radii)


def _heart(c, body, lungs, spine_centre, enhanced):
    """Heart: between the lungs (inside their convex hull, or between the two lungs' centres
    in front of the spine and clear of the chest wall, HEART_WALL_MM) below their upper
    third, the blood or soft tissue (enhanced CT: up to ENHANCED_BLOOD_HU) left once the
    aorta, spine and liver are taken. The heart is the mediastinum's one thick mass (its
    chambers 40-50 mm deep): its core is what a ball of HEART_CORES_MM[0] radius fits into
    (great vessels, hilar vessels, nodes and a hilar tumour are thinner, or joined to it
    only through thinner necks), regrown by the same radius within the tissue. Where that
    is larger than a heart (PLAUSIBLE_ML) the next, wider ball of HEART_CORES_MM is tried."""
    from skimage.morphology import convex_hull_image

    planes = np.flatnonzero(lungs.any(axis=(0, 1)))
    if planes.size < 3:
        return None, "no lungs on the CT to find the heart between"
    top = c.z[planes].max() - (c.z[planes].max() - c.z[planes].min()) / 3.0
    right, left = c.mask("lung_right"), c.mask("lung_left")
    between = np.zeros_like(lungs)
    if right.any() and left.any():
        xr, xl = c.x[np.nonzero(right)[0]].mean(), c.x[np.nonzero(left)[0]].mean()
        cols = (c.x > min(xr, xl)) & (c.x < max(xr, xl))
        sy = np.median([v[1] for v in spine_centre.values()]) if spine_centre else np.inf
        between = cols[:, None, None] & (c.y < sy - 15.0)[None, :, None] & (_depth_in_plane(c, body) > HEART_WALL_MM)
    hull = np.zeros_like(lungs)
    for k in planes:
        if c.z[k] < top and lungs[:, :, k].sum() > 20:
            hull[:, :, k] = convex_hull_image(lungs[:, :, k]) | between[:, :, k]
    hi = ENHANCED_BLOOD_HU[1] if enhanced else SOFT_TISSUE_HU[1]
    m = hull & ~lungs & body & (c.g > -20.0) & (c.g < hi)
    m &= ~ndimage.binary_dilation(c.mask("aorta", "vertebrae", "liver"), iterations=1)
    if not m.any():
        return None, "no soft tissue between the lungs"
    box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in ndimage.find_objects(m.astype(np.uint8))[0])
    sub = m[box]
    heart, core_mm = None, None
    for core_mm in HEART_CORES_MM:
        radii = _ball_radii(core_mm, c.spacing)
        core = _largest(_ball_opening(sub, radii))
        if not core.any():
            continue
        heart = _largest(_ball_dilation(core, radii) & sub)
        if c.volume(heart) <= PLAUSIBLE_ML["heart"][1]:
            break
    if heart is None:
        return (
            None,
            f"no mass between the lungs thick enough for a heart (a {HEART_CORES_MM[0]:g} mm ball fits nowhere)",
        )
    out = np.zeros_like(m)
    out[box] = heart
    return _per_slice(
        ndimage.binary_fill_holes, out
    ), f"the thick mass between the lungs (a {core_mm:g} mm ball's reach)"


def _bowel(c, body, spine_centre):
    """Bowel (stomach, small bowel, colon) below the lungs' bases: gas (below GAS_HU_MAX)
    that is not lung, with the wall around it (5 mm); and soft-tissue loops without gas:
    tubes (:func:`_soft_tubes`) in the abdomen."""
    lungs = c.mask("lung_left", "lung_right")
    gas = body & (c.g < GAS_HU_MAX) & ~lungs
    if (base := _lung_base_z(c)) is not None:
        gas[:, :, c.z > base] = False
    lab, n = ndimage.label(gas)
    sizes = np.bincount(lab.ravel()) * c.voxel_ml
    gas = np.isin(lab, [i for i in range(1, n + 1) if sizes[i] >= 0.5])
    wall = ndimage.binary_dilation(
        gas, structure=np.ones((3, 3, 3), bool), iterations=max(int(round(5.0 / c.spacing.min())), 1)
    )
    loops = gas | (wall & body & (c.g > -120.0) & (c.g < 200.0) & ~lungs)
    tubes = _soft_tubes(c, body, spine_centre)
    if not (loops.any() or tubes.any()):
        return None, "no gas-filled bowel and no bowel-like tube on the CT"
    return loops | tubes, "gas-filled loops with their wall, and soft-tissue tubes in the abdomen"


def _soft_tubes(c, body, spine_centre):
    """Bowel loops without gas: soft-tissue components (denoised CT within BOWEL_HU, opened
    by one voxel) below the lungs' bases, clear of the organs found and of the body wall
    (BOWEL_WALL_MM from the outline), that are tubes: at most BOWEL_RADIUS_MM thick (in
    radius) and at least BOWEL_LENGTH_MM long (4 SD along their main axis). Vertical tubes
    near the spine (aorta, vena cava, psoas) are not bowel. Lymph nodes are round, so a
    node, even a large one, is never taken for bowel."""
    soft = body & (c.denoised > BOWEL_HU[0]) & (c.denoised < BOWEL_HU[1])
    if (base := _lung_base_z(c)) is not None:
        soft[:, :, c.z > base - 20.0] = False
    organs = ("liver", "spleen", "kidney_left", "kidney_right", "aorta", "vertebrae", "urinary_bladder", "heart")
    soft &= ~ndimage.binary_dilation(c.mask(*organs), iterations=2)
    soft = ndimage.binary_opening(soft, structure=np.ones((3, 3, 3), bool))
    depth = _depth_in_plane(c, body)
    sx = np.median([v[0] for v in spine_centre.values()]) if spine_centre else np.nan
    lab, _ = ndimage.label(soft)
    tubes = np.zeros_like(soft)
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        m = lab[sl] == i
        if m.sum() * c.voxel_ml < 3.0 or depth[sl][m].min() < BOWEL_WALL_MM:
            continue
        if ndimage.distance_transform_edt(np.pad(m, 1), sampling=c.spacing).max() > BOWEL_RADIUS_MM:
            continue
        idx = np.argwhere(m) + [s.start for s in sl]
        w, v = np.linalg.eigh(np.cov(((idx + [*c.columns_from, 0]) * c.spacing).T))
        if 4.0 * np.sqrt(max(w[-1], 0.0)) < BOWEL_LENGTH_MM:
            continue
        centre_x = c.column_x(idx[:, 0])
        if abs(v[2, -1]) > np.cos(np.deg2rad(30.0)) and abs(centre_x - sx) < 70.0:
            continue  # vertical beside the spine: a great vessel or the psoas
        tubes[sl] |= m
    return tubes


def segment_ct(hu, affine, *, offset_mm=tuple(default("background.offset_mm"))):
    """Organ label map of a CT (values: :data:`ORGANS`) and a report per organ.

    Classical rules on the CT alone, on a ~3 mm work grid (:func:`work_grid`): body (couch
    removed), lungs, brain and skull, vertebral column, descending aorta (plain or
    contrast-enhanced), liver, spleen, kidneys, heart, urinary bladder and gas-filled bowel,
    each checked for a plausible volume. Returns ``(labels on the CT grid, report)``;
    the report has, per organ, ``found``, ``volume_ml``, ``method``, ``checks`` and
    ``truncated_by_field_of_view``, plus ``contrast_enhanced`` (from the aorta).
    """
    work, waff, factors = work_grid(hu, affine)
    c = _Context(work, waff)
    body = _body(c)
    box = _body_columns(body)
    if box is not None:
        c, body = c.cropped(box), body[box]
    c.labels[body] = ORGANS["body"]
    c.accept("body", body, "CT above -400 HU, couch removed (5 mm opening), filled", checks={})
    head = _head(c, body)
    left, right = _lungs(c, body & ~head)
    c.accept(
        "lung_left", left, "aerated lung (below -500 HU, lung-like median and 10th percentile) left of the midline"
    )
    c.accept(
        "lung_right", right, "aerated lung (below -500 HU, lung-like median and 10th percentile) right of the midline"
    )
    lungs = c.mask("lung_left", "lung_right")
    spine, spine_centre = _column(c, body, lungs, head)
    c.accept("vertebrae", spine, "bone joined to the posterior midline's (laminae, spinous processes)", checks={})
    aorta, enhanced, track = _aorta(c, body, lungs, spine, spine_centre, offset_mm=offset_mm)
    c.accept(
        "aorta",
        aorta,
        "longest course of a round blood-filled structure left-anterior of the vertebral bodies",
        checks={f"course of at least {_min_course_mm(c):g} mm": len(track) * c.spacing[2] >= _min_course_mm(c)},
    )
    c.report["contrast_enhanced"] = None if enhanced is None else bool(enhanced)
    _soft_organs(c, body, lungs, spine_centre, bool(enhanced))
    labels = c.labels
    if box is not None:
        labels = np.zeros(work.shape, np.uint8)
        labels[box] = c.labels
    return to_full_grid(labels, factors, hu.shape), c.report


#: Air (voxels of the work grid) kept around the body's columns when the organ rules are
#: confined to them: more than any filter or structuring element reaches across the skin.
#: The denoised CT differs from the whole grid's only in the box's outer 4 voxels (median
#: and Gaussian edges), and its one read not masked to the body (a seed's 10 mm ball,
#: within 5 voxels of the body at ~2 mm) stays clear of them.
BODY_BOX_MARGIN = 12


def _body_columns(body):
    """The in-plane box of the body's columns (all slices kept), BODY_BOX_MARGIN voxels
    wider on each side; None when that is the whole plane or there is no body."""
    from dualpet.geometry import box_around

    if not body.any():
        return None
    bx, by, _ = box_around(body, BODY_BOX_MARGIN)
    if (bx.stop - bx.start, by.stop - by.start) == body.shape[:2]:
        return None
    return (bx, by, slice(None))


def _head(c, body):
    """Brain and skull recorded; returns the head (both, dilated by 3 voxels) the lungs are looked for outside."""
    brain, skull = _brain(c, body)
    c.accept("brain", brain, "soft tissue enclosed by the skull's bone ring")
    if c.report["brain"]["found"]:
        c.accept("skull", skull, "bone ring around the brain", checks={})
    return ndimage.binary_dilation(c.mask("brain", "skull"), iterations=3)


def _column(c, body, lungs, head):
    """The vertebral column (:func:`_spine`) traced clear of a contrast-filled aorta: (mask, centres)."""
    # a contrast-filled aorta can touch the vertebral bodies and match their density: it is
    # found first and kept out of the bone the column is traced in
    tube = _enhanced_aorta(c, body, lungs)
    lumen = np.zeros_like(body)
    for k, (xy, r) in tube.items():
        lumen[:, :, k] = _plane_distance(c, xy) <= r + 1.5 * c.spacing[0]
    spine, spine_centre = _spine(c, body, head | lumen)
    if tube:  # enhanced: the column traced above the blood's density too; where the two
        # courses part, enhanced blood the lumen did not hold (a vessel the aorta search did not
        # take) joined the bone
        dense, dense_centre = _spine(c, body, head | lumen, SPINE_BONE_ENHANCED_HU)
        cortex = float((c.g[dense] > SPINE_BONE_ENHANCED_HU).mean()) if dense.any() else 0.0
        if cortex >= DENSE_CORTEX_SHARE and _courses_part(spine_centre, dense_centre, c.spacing[2]):
            spine, spine_centre = dense, dense_centre
    return spine, spine_centre


def _soft_organs(c, body, lungs, spine_centre, enhanced):
    """Liver, heart, kidneys, spleen, bladder and bowel found in turn and recorded (painted if plausible)."""
    steps = (
        ("liver", lambda: _liver(c, body, c.mask("lung_right"), spine_centre)),
        ("heart", lambda: _heart(c, body, lungs, spine_centre, enhanced)),
        ("kidney_right", lambda: _kidney(c, body, spine_centre, -1, enhanced)),
        ("kidney_left", lambda: _kidney(c, body, spine_centre, +1, enhanced)),
        ("spleen", lambda: _spleen(c, body, c.mask("lung_left"), spine_centre)),
        ("urinary_bladder", lambda: _bladder(c, body)),
        ("bowel", lambda: _bowel(c, body, spine_centre)),
    )
    for name, step in steps:
        organ, why = step()
        if organ is None:
            c.report[name] = {
                "found": False,
                "volume_ml": 0.0,
                "method": why,
                "checks": {},
                "truncated_by_field_of_view": False,
            }
        elif not c.accept(name, organ, why, checks=_plausible(c, name, organ, spine_centre, enhanced)):
            c.levels.pop(name, None)  # an implausible organ's level guides nothing


#: Median CT number (HU, on the denoised work CT) an organ may have, unenhanced and
#: contrast-enhanced (portal-venous to late arterial). Sources: domain ranges (liver 50-65
#: unenhanced, fatty down to about -30; spleen 8-10 below the liver; kidneys 30-40, read
#: 10-20 where sinus fat shares the voxels; blood 35-55; heart blood and myocardium 35-55;
#: enhanced liver 100-130, spleen 110-140, kidney cortex 150-250, blood 150-400) widened by
#: the CT's noise and the organs' partial-volume rim.
PLAUSIBLE_HU = {
    "liver": ((-30.0, 80.0), (60.0, 200.0)),
    "spleen": ((15.0, 75.0), (60.0, 220.0)),
    "kidney_right": ((0.0, 60.0), (100.0, 400.0)),
    "kidney_left": ((0.0, 60.0), (100.0, 400.0)),
    "heart": ((15.0, 75.0), (60.0, 500.0)),
    "urinary_bladder": ((-20.0, 40.0), (-20.0, 400.0)),
}
#: Where an organ's centre lies from the vertebral body's centre (mm; +x the patient's
#: left, +y posterior): liver right of +20 (its left lobe crosses the midline), spleen left
#: of +40, heart in front of the bodies (-30 and more anterior) and from 40 right to 110 left
#: of them, bladder within 60 mm of the midline. Their share above the diaphragm (liver,
#: spleen, kidneys: under 10 %) or in the erector spinae (under 10 %) is bounded too.
PLAUSIBLE_PLACE = {
    "liver": {"dx": (-200.0, 20.0)},
    "spleen": {"dx": (40.0, 200.0)},
    "heart": {"dx": (-40.0, 110.0), "dy": (-200.0, -30.0)},
    "urinary_bladder": {"dx": (-60.0, 60.0)},
}
BELOW_DIAPHRAGM = ("liver", "spleen", "kidney_right", "kidney_left")
ABOVE_SHARE_MAX, BACK_MUSCLE_SHARE_MAX = 0.10, 0.10


def _plausible(c, name, organ, spine_centre, enhanced):
    """Plausibility checks of an organ ({description: passed}) beyond its volume: its median
    CT number (PLAUSIBLE_HU), its centre's place from the vertebral bodies
    (PLAUSIBLE_PLACE), the share above the diaphragm of an abdominal organ and the share in
    the erector spinae (BELOW_DIAPHRAGM, ABOVE_SHARE_MAX, BACK_MUSCLE_SHARE_MAX). An organ
    failing any is not painted, and is named with the failed checks in the report."""
    checks = {}
    if not organ.any():
        return checks
    if name in PLAUSIBLE_HU:
        lo, hi = PLAUSIBLE_HU[name][1 if enhanced else 0]
        med = float(np.median(c.denoised[organ]))
        checks[f"median {med:.0f} HU within {lo:g}-{hi:g} HU ({'enhanced' if enhanced else 'unenhanced'})"] = (
            lo <= med <= hi
        )
    if spine_centre:
        dx, dy = _spine_frame(c, spine_centre, organ.shape)
        for axis, (lo, hi) in PLAUSIBLE_PLACE.get(name, {}).items():
            v = float((dx if axis == "dx" else dy)[organ].mean())
            where = "left of" if axis == "dx" else "behind"
            checks[f"centre {v:.0f} mm {where} the vertebral bodies' centre, within {lo:g} to {hi:g}"] = lo <= v <= hi
        if name in BELOW_DIAPHRAGM:
            share = float((organ & _back_muscles(c, spine_centre, organ.shape)).sum()) / float(organ.sum())
            checks[f"{100 * share:.0f} % in the erector spinae (at most {100 * BACK_MUSCLE_SHARE_MAX:g} %)"] = (
                share <= BACK_MUSCLE_SHARE_MAX
            )
    if name in BELOW_DIAPHRAGM and c.mask("lung_left", "lung_right").any():
        share = float((organ & _above_diaphragm(c, organ, 10.0)).sum()) / float(organ.sum())
        checks[f"{100 * share:.0f} % above the diaphragm (at most {100 * ABOVE_SHARE_MAX:g} %)"] = (
            share <= ABOVE_SHARE_MAX
        )
    return checks


#: The TotalSegmentator command and the arguments ``anatomy.method: totalsegmentator``
#: runs it with (multilabel output of the "total" task); the config adds its own.
TOTALSEGMENTATOR = "TotalSegmentator"
TOTALSEGMENTATOR_ARGS = ("--ml", "--task", "total")


def run_totalsegmentator(ct_path, out_path, extra_args=()):
    """Run TotalSegmentator on a CT NIfTI, writing its multilabel map to ``out_path``.

    It must be installed with its weights (``pip install TotalSegmentator``, then
    ``totalseg_download_weights -t total`` where the network is reachable, or its weights
    copied into ``TOTALSEG_HOME_DIR``). A missing command or a failed run is a machine
    problem, not the study's: it raises RuntimeError (the job fails; nothing is excluded).
    """
    import shutil
    import subprocess

    exe = shutil.which(TOTALSEGMENTATOR)
    if exe is None:
        raise RuntimeError(
            "anatomy.method 'totalsegmentator': the TotalSegmentator command is not on PATH "
            "(pip install TotalSegmentator, and its weights: totalseg_download_weights -t total)"
        )
    cmd = [exe, "-i", str(ct_path), "-o", str(out_path), *TOTALSEGMENTATOR_ARGS, *map(str, extra_args)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"TotalSegmentator failed (exit {done.returncode}): {' / '.join(tail)}")


def report_from_labels(labels, affine, method):
    """Per-organ report of a label map made elsewhere (TotalSegmentator, a reader):
    found (any voxel of the organ's classes), volume, method."""
    from dualpet.geometry import voxel_volume_ml

    vox = voxel_volume_ml(affine)
    counts = np.bincount(labels.ravel(), minlength=256)
    report = {}
    for name, classes in ORGAN_CLASSES.items():
        n = int(sum(counts[v] for v in classes))
        report[name] = {"found": n > 0, "volume_ml": round(n * vox, 1), "method": method, "checks": {}}
    return report


def with_body(labels, hu, affine):
    """A label map with the body (:data:`ORGANS` ``body``) added where it has no organ."""
    work, waff, factors = work_grid(hu, affine)
    body = to_full_grid(_body(_Context(work, waff)), factors, hu.shape)
    out = labels.astype(np.uint8, copy=True)
    out[(out == 0) & body] = ORGANS["body"]
    return out


def anatomy_study(
    ct_path,
    labels_out,
    json_out,
    *,
    method=default("anatomy.method"),
    organ_mask=None,
    png=None,
    patient="",
    tracer="",
    offset_mm=tuple(default("background.offset_mm")),
    totalsegmentator_args=(),
    where="",
):
    """The organ label map of one study's CT (files in, files out).

    ``organ_mask`` (the studies sheet's column; any grid, TotalSegmentator v2 numbers)
    replaces the automatic map; else ``method`` 'classical' (:func:`segment_ct`) or
    'totalsegmentator' (:func:`run_totalsegmentator`). Writes the map on the CT grid
    (uint8, NIfTI), ``anatomy.json`` and optionally a QC picture.
    """

    from dualpet.geometry import lps_affine, voxel_spacing
    from dualpet.io import write_json
    from dualpet.nifti import as_stored, load_nifti, nifti_image, save_nifti

    ct = load_nifti(ct_path)
    hu = as_stored(ct)
    affine = lps_affine(ct.affine)
    labels, report, used, extra = _study_map(
        ct_path,
        hu,
        affine,
        method=method,
        organ_mask=organ_mask,
        offset_mm=offset_mm,
        totalsegmentator_args=totalsegmentator_args,
        where=where,
    )
    save_nifti(labels_out, nifti_image(labels.astype(np.uint8, copy=False), affine))
    legend = {name: {"value": ORGANS[name], "totalsegmentator_classes": list(ORGAN_CLASSES[name])} for name in ORGANS}
    write_json(
        json_out, {"patient": patient, "tracer": tracer, "method": used, **extra, "organs": report, "labels": legend}
    )
    if png:
        anatomy_figure(
            hu,
            labels,
            png,
            title=f"patient {patient}, {tracer}: organ map ({used})",
            spacing=voxel_spacing(affine),
            flip_z=affine[2, 2] < 0,
        )
    return labels, report


def _study_map(ct_path, hu, affine, *, method, organ_mask, offset_mm, totalsegmentator_args, where):
    """The study's organ map from its source: (labels, report, method used, extra JSON fields)."""
    import tempfile

    extra = {}
    if organ_mask:
        labels = _outside_map(organ_mask, hu, affine, where)
        report, used = report_from_labels(labels, affine, "organ_mask (studies sheet)"), "organ_mask"
    elif method == "totalsegmentator":
        with tempfile.TemporaryDirectory() as tmp:
            out = f"{tmp}/total.nii.gz"
            run_totalsegmentator(ct_path, out, totalsegmentator_args)
            labels = _outside_map(out, hu, affine, where)
        report, used = report_from_labels(labels, affine, "TotalSegmentator (total task)"), "totalsegmentator"
    else:
        labels, report = segment_ct(hu, affine, offset_mm=offset_mm)
        extra["contrast_enhanced"] = report.pop("contrast_enhanced", None)
        used = "classical"
    return labels, report, used, extra


def _outside_map(path, hu, affine, where):
    """A label map made elsewhere (any grid, TotalSegmentator v2 numbers) on the CT grid,
    with the body added; values outside 0-255 are refused."""
    from dualpet.errors import DualpetInputError
    from dualpet.geometry import nearest_on_grid
    from dualpet.nifti import read_label_image

    data, data_affine = read_label_image(path, "organ mask")
    if data.min() < 0 or data.max() > 255:
        raise DualpetInputError(
            f"{where}: organ mask (studies sheet): label values must lie in 0-255 (TotalSegmentator v2 numbers)"
        )
    return with_body(nearest_on_grid(data.astype(np.uint8), data_affine, hu.shape, affine), hu, affine)


#: Organ colours of the organ-map picture: distinct from each other and from the CT's greys
#: (the heart red, the aorta magenta, the lungs blue, the liver brown, ...).
ORGAN_COLOURS = {
    "spleen": "#9467bd",
    "kidney_right": "#2ca02c",
    "kidney_left": "#98df8a",
    "liver": "#8c564b",
    "lung_left": "#1f77b4",
    "lung_right": "#aec7e8",
    "bowel": "#ff7f0e",
    "urinary_bladder": "#ffdd00",
    "vertebrae": "#f7b6d2",
    "heart": "#d62728",
    "aorta": "#e377c2",
    "brain": "#bcbd22",
    "skull": "#dbdb8d",
}


#: The organ-map picture's axial views: the level holding most of each of these organs (a
#: level within FIGURE_LEVEL_GAP_MM, or a fifth of a shorter field of view, of one already
#: shown is skipped; organs out of view are replaced by levels spread over the field of view).
FIGURE_LEVELS, FIGURE_LEVEL_GAP_MM = ("heart", "liver", "kidney_right", "urinary_bladder"), 40.0


def anatomy_figure(hu, labels, out_png, *, title="", spacing=(1.0, 1.0, 1.0), flip_z=False):
    """A coronal view (through the body's centre) and axial views spread over the body (the
    levels holding most heart, liver, kidney and bladder: FIGURE_LEVELS) of a CT with its
    organ map overlaid, one fixed colour per organ (ORGAN_COLOURS), with a legend; drawn in
    millimetres (voxel ``spacing``); axial views from the head down (``flip_z``: slice
    index grows downwards)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from dualpet.io import atomic_path

    names, table, present, area = _organ_indices(labels)
    body = labels > 0
    cj = int(np.argwhere(body.any(axis=(0, 2))).mean()) if body.any() else hu.shape[1] // 2
    levels = _figure_levels(area, names, hu.shape[2], spacing[2], flip_z)
    cmap = ListedColormap(["black"] + [ORGAN_COLOURS.get(n, "#17becf") for n in names])
    fig, axes = plt.subplots(1, 1 + len(levels), figsize=(4.5 * (1 + len(levels)), 6), dpi=80, squeeze=False)
    axes = axes[0]
    views = _figure_views(hu, labels, table, cj, levels, spacing)
    _draw_organ_views(axes, views, cmap, len(names))
    handles = [Patch(color=cmap(names.index(n) + 1), label=n) for n in present]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7) or 1, fontsize=9)
    fig.suptitle(title)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _organ_indices(labels):
    """Organ names (body left out), a table from label value (0-255) to the organ's 1-based
    index among them, the names present, and each index's voxel count per axial slice
    (from one histogram per slice: the map is on the CT's grid, 78 M voxels)."""
    names = [n for n in ORGAN_CLASSES if n != "body"]
    table = np.zeros(256, dtype=np.uint8)
    for i, n in enumerate(names, start=1):
        table[list(ORGAN_CLASSES[n])] = i
    lab = np.asarray(labels, dtype=np.uint8)
    per_slice = np.stack([np.bincount(lab[:, :, k].ravel(), minlength=256) for k in range(lab.shape[2])], axis=1)
    area = np.zeros((len(names) + 1, lab.shape[2]), dtype=np.int64)
    np.add.at(area, table, per_slice)
    present = [n for i, n in enumerate(names, start=1) if area[i].any()]
    return names, table, present, area


def _figure_levels(area, names, n_slices, dz, flip_z):
    """The organ-map picture's axial levels [(slice, organ or "")], from the head down
    (``area``, ``names``: :func:`_organ_indices`)."""
    gap = min(FIGURE_LEVEL_GAP_MM, n_slices * dz / 5.0) / dz  # slices (short fields of view: less)
    levels = []  # (slice, organ): the level holding most of each of FIGURE_LEVELS, top down
    for n in FIGURE_LEVELS:
        area_n = area[names.index(n) + 1]
        if area_n.max() > 0 and all(abs(int(np.argmax(area_n)) - k) >= gap for k, _ in levels):
            levels.append((int(np.argmax(area_n)), n))
    for f in (0.8, 0.2, 0.6, 0.4):  # organs out of view: levels spread over the field of view
        k = int(round(f * (n_slices - 1)))
        if len(levels) < len(FIGURE_LEVELS) and all(abs(k - k0) >= gap for k0, _ in levels):
            levels.append((k, ""))
    levels.sort(key=lambda kn: kn[0] if flip_z else -kn[0])
    return levels


def _figure_views(hu, labels, table, cj, levels, spacing):
    """The picture's panels [(CT, organ indices, origin, title, aspect)]: the coronal, then
    the axial levels (``table``: label value -> organ index, :func:`_organ_indices`)."""
    sp = np.asarray(spacing, dtype=float)
    labels = np.asarray(labels, dtype=np.uint8)
    views = [(hu[:, cj, :].T, table[labels[:, cj, :]].T, "lower", "coronal", sp[2] / sp[0])]
    views += [
        (
            hu[:, :, k].T,
            table[labels[:, :, k]].T,
            "upper",
            f"axial, slice {k}" + (f" ({n.replace('_', ' ')})" if n else ""),
            sp[1] / sp[0],
        )
        for k, n in levels
    ]
    return views


def _draw_organ_views(axes, views, cmap, n_organs):
    """Each panel: the CT in a soft-tissue window with the organ map overlaid in its colours."""
    for ax, (img, lab, origin, name, aspect) in zip(axes, views):
        ax.imshow(img, cmap="gray", vmin=-400, vmax=400, origin=origin, aspect=aspect)
        ax.imshow(
            np.ma.masked_equal(lab, 0),
            cmap=cmap,
            vmin=0,
            vmax=n_organs,
            alpha=0.45,
            origin=origin,
            interpolation="nearest",
            aspect=aspect,
        )
        ax.set_title(name)
        ax.axis("off")
