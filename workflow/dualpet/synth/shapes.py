"""The generator's solids and tissue labels, shared by the anatomy (:mod:`dualpet.synth.torso`)
and the phantom that paints it (:mod:`dualpet.synth.phantom`).

Shapes live in anatomy coordinates (LPS-oriented, mm, origin on the body axis at the level
of the diaphragm); each carries a tissue label, and later shapes overwrite earlier ones.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import pairwise

import numpy as np

# Tissue labels. Lesions get LESION_BASE + index.
AIR, FAT, MUSCLE, LUNG, LIVER, SPLEEN, KIDNEY, BLADDER = 0, 1, 2, 3, 4, 5, 6, 7
MYOCARDIUM, BLOOD, BONE, MARROW, TABLE, PAD = 8, 9, 10, 11, 12, 13
AORTA, RENAL_PELVIS, BOWEL, BOWEL_HOT, BOWEL_GAS, BRAIN, METAL, RIB = 14, 15, 16, 17, 18, 19, 20, 21
# back muscles (erector spinae, multifidus); neck and shoulder-girdle muscles (the ones that
# take up FDG after shivering or tension); brown fat depots; intervertebral discs; spinal
# canal (cord and CSF); blood outside the heart and aorta (pulmonary and other arteries and
# veins); venae cavae; airway gas; connective soft tissue (airway walls); walls of the
# right ventricle and atria; retroperitoneal (perirenal, periaortic) fat
BACK_MUSCLE, NECK_MUSCLE, BROWN_FAT, DISC, CANAL, OESOPHAGUS = 22, 23, 24, 25, 26, 27
STOMACH, STOMACH_FLUID, STOMACH_GAS, VESSEL, VEIN, AIRWAY, SOFT, HEART_WALL, RP_FAT = 28, 29, 30, 31, 32, 33, 34, 35, 36
LESION_BASE = 100


@dataclass
class Shape:
    """A solid in anatomy coordinates.

    ``kind``: ``ellipsoid``; ``cylinder`` (z-aligned elliptic cylinder in the shape frame,
    ``semi[2]`` its half length); ``sweep`` (an elliptic cross-section in the axial plane
    whose centre and semi-axes vary linearly between knots along z: ``data`` rows
    ``z, cx, cy, ax, ay``, for structures that run along the body: muscles, the spinal
    canal, the trachea); ``tube`` (a bent tube: the points within a radius of a polyline,
    the radius varying linearly along each segment: ``data`` rows ``x, y, z, r``; vessels,
    ribs, bowel). ``clip`` ``(normal, offset)`` keeps only the points with
    ``a @ normal <= offset`` (anatomy frame; e.g. the gas above an air-fluid level);
    ``within`` cuts it to the inside of another shape (a lung to the rib cage).
    """

    label: int
    center: np.ndarray
    semi: np.ndarray  # semi-axes (mm); for a cylinder semi[2] is the half length
    kind: str = "ellipsoid"  # or "cylinder", "sweep", "tube"
    rotation: np.ndarray | None = None  # 3x3, shape frame -> anatomy frame
    replaces: frozenset | None = None  # paint only over these labels (None: over anything)
    organ: str | None = None  # truth organ name if not that of the label (TISSUE_ORGAN)
    data: np.ndarray | None = None  # knots of a sweep or tube
    clip: tuple | None = None  # (normal, offset) half-space the shape is cut to
    within: Shape | None = None  # the shape is cut to the inside of this one

    def bbox(self):
        """Axis-aligned bounding box in anatomy coordinates (lo, hi)."""
        if self.rotation is None:
            ext = self.semi
        else:
            ext = np.abs(self.rotation) @ self.semi
        return self.center - ext, self.center + ext

    def pieces(self):
        """The shape as pieces with tight bounding boxes (a tube's segments, a sweep's
        intervals between knots): painting them in turn paints the shape."""
        if self.kind not in ("sweep", "tube") or len(self.data) <= 2:
            return [self]
        out = []
        for i in range(len(self.data) - 1):
            d = self.data[i : i + 2]
            whole = sweep(self.label, d) if self.kind == "sweep" else tube(self.label, d[:, :3], d[:, 3])
            out.append(replace(self, center=whole.center, semi=whole.semi, data=d))
        return out

    def contains(self, a):
        """Boolean mask of the points ``a`` (N, 3) inside the shape."""
        if self.kind == "sweep":
            inside = _sweep_contains(a, self.data)
        elif self.kind == "tube":
            inside = _tube_contains(a, self.data)
        else:
            d = a - self.center
            if self.rotation is not None:
                d = d @ self.rotation  # into the shape frame
            q = d / self.semi
            if self.kind == "ellipsoid":
                inside = np.einsum("ij,ij->i", q, q) <= 1.0
            else:
                inside = (q[:, 0] ** 2 + q[:, 1] ** 2 <= 1.0) & (np.abs(q[:, 2]) <= 1.0)
        if self.clip is not None:
            inside &= a @ np.asarray(self.clip[0], dtype=a.dtype) <= self.clip[1]
        if self.within is not None:
            inside &= self.within.contains(a)
        return inside


def _sweep_contains(a, knots):
    z = a[:, 2]
    inside = np.zeros(len(a), dtype=bool)
    idx = np.flatnonzero((z >= knots[0, 0]) & (z <= knots[-1, 0]))
    if idx.size:
        zi = z[idx]
        cx, cy = np.interp(zi, knots[:, 0], knots[:, 1]), np.interp(zi, knots[:, 0], knots[:, 2])
        ax, ay = np.interp(zi, knots[:, 0], knots[:, 3]), np.interp(zi, knots[:, 0], knots[:, 4])
        inside[idx] = ((a[idx, 0] - cx) / ax) ** 2 + ((a[idx, 1] - cy) / ay) ** 2 <= 1.0
    return inside


def _tube_contains(a, data):
    if len(data) == 2:  # one segment (a piece): no pre-selection
        return _segment_contains(a, data[0], data[1])
    inside = np.zeros(len(a), dtype=bool)
    for p0, p1 in pairwise(data):
        rm = max(p0[3], p1[3])
        lo, hi = np.minimum(p0[:3], p1[:3]) - rm, np.maximum(p0[:3], p1[:3]) + rm
        idx = np.flatnonzero(np.all((a >= lo) & (a <= hi), axis=1) & ~inside)
        if not idx.size:
            continue
        v = p1[:3] - p0[:3]
        d = a[idx] - p0[:3]
        t = np.clip(d @ v / max(float(v @ v), 1e-9), 0.0, 1.0)
        dist2 = np.einsum("ij,ij->i", d - t[:, None] * v, d - t[:, None] * v)
        r = p0[3] + t * (p1[3] - p0[3])
        inside[idx[dist2 <= r * r]] = True
    return inside


def _segment_contains(a, p0, p1):
    v = p1[:3] - p0[:3]
    d = a - p0[:3]
    t = np.clip(d @ v / max(float(v @ v), 1e-9), 0.0, 1.0)
    e = d - t[:, None] * v
    r = p0[3] + t * (p1[3] - p0[3])
    return np.einsum("ij,ij->i", e, e) <= r * r


def sweep(label, knots, **kw):
    """A :class:`Shape` of kind ``sweep`` from knots ``(z, cx, cy, ax, ay)`` (z increasing)."""
    k = np.asarray(knots, dtype=float)
    k = k[np.argsort(k[:, 0], kind="stable")]
    lo = np.array([np.min(k[:, 1] - k[:, 3]), np.min(k[:, 2] - k[:, 4]), k[0, 0]])
    hi = np.array([np.max(k[:, 1] + k[:, 3]), np.max(k[:, 2] + k[:, 4]), k[-1, 0]])
    return Shape(label, (lo + hi) / 2.0, (hi - lo) / 2.0, "sweep", data=k, **kw)


def tube(label, points, radii, **kw):
    """A :class:`Shape` of kind ``tube`` along ``points`` (K, 3) with radii (K,) (mm)."""
    p = np.asarray(points, dtype=float)
    r = np.broadcast_to(np.asarray(radii, dtype=float), (len(p),))
    lo, hi = np.min(p - r[:, None], axis=0), np.max(p + r[:, None], axis=0)
    return Shape(label, (lo + hi) / 2.0, (hi - lo) / 2.0, "tube", data=np.column_stack([p, r]), **kw)
