"""Region helpers the detectors share: lesion numbering, a candidate's extent, boxes.

Regions are boolean arrays, either on the whole PET grid or *box-local* (on a box given as
a tuple of slices of the grid).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.morphology import h_maxima

#: 26-connectivity (face, edge and corner neighbours).
STRUCTURE = np.ones((3, 3, 3), dtype=bool)


def number_lesions(lesions, shape):
    """Label image and stable numbering (cranio-caudal, then by x) of detected lesions."""
    lesions.sort(key=lambda d: (-d["peak_lps"][2], d["peak_lps"][0]))
    labels = np.zeros(shape, dtype=np.int32)
    for new, les in enumerate(lesions, start=1):
        region = les.pop("_region")
        if isinstance(region, tuple):
            sl, region = region
            labels[sl][region & (labels[sl] == 0)] = new
        else:
            labels[region & (labels == 0)] = new
        les["label"] = new
    return labels


def h_maxima_in(mask, values, h):
    """h-maxima of ``values`` inside ``mask``, computed per connected component of the mask
    on its bounding box (the same result as on the whole image with zeros outside the
    mask, where components cannot interact; far cheaper, as most voxels lie outside)."""
    comps, _ = ndimage.label(mask, structure=STRUCTURE)
    out = np.zeros(mask.shape, dtype=bool)
    for lab, sl in enumerate(ndimage.find_objects(comps), start=1):
        if sl is None:
            continue
        box = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(sl, mask.shape))
        own = comps[box] == lab
        out[box] |= h_maxima(np.where(own, values[box], 0.0), h).astype(bool) & own
    return out


def extent(values, basin, peak, level):
    """Voxels of ``basin`` connected to ``peak`` at or above ``level`` (box-local), and
    whether they reach the box's edge."""
    comps, _ = ndimage.label(basin & (values >= level), structure=STRUCTURE)
    if not comps[peak]:  # the level lies above the peak: the candidate is just its peak
        region = np.zeros(values.shape, dtype=bool)
        region[peak] = True
        return region, False
    region = comps == comps[peak]
    edge = any(region.take(0, axis=a).any() or region.take(-1, axis=a).any() for a in range(3))
    return region, edge


def resize(region, box, target):
    """``region`` (bool on ``box``) cut to the ``target`` box (both tuples of slices)."""
    out = np.zeros(tuple(t.stop - t.start for t in target), dtype=bool)
    src = tuple(slice(max(t.start, b.start), min(t.stop, b.stop)) for t, b in zip(target, box))
    if all(x.stop > x.start for x in src):
        out[tuple(slice(x.start - t.start, x.stop - t.start) for x, t in zip(src, target))] = region[
            tuple(slice(x.start - b.start, x.stop - b.start) for x, b in zip(src, box))
        ]
    return out


def in_end_planes(region, z0, n_end, n_planes):
    """Whether a region (box-local, its box starting at plane ``z0``) lies entirely within
    the first or the last ``n_end`` planes of the field of view."""
    zs = np.flatnonzero(region.any(axis=(0, 1))) + z0
    return bool(zs.max() < n_end or zs.min() >= n_planes - n_end)


def trim_to_contrast(values, region, peak, level):
    """The part of ``region`` at or above ``level`` that is connected to ``peak``."""
    comps, _ = ndimage.label(region & (values >= level), structure=STRUCTURE)
    return comps == comps[peak] if comps[peak] else region & False


def ball(shape, centre_ijk, radius_mm, spacing):
    """Voxels whose centres lie within ``radius_mm`` of a (fractional) voxel position."""
    centre = np.asarray(centre_ijk, dtype=float)
    half = np.ceil(radius_mm / spacing).astype(int) + 1
    lo = np.maximum(np.floor(centre).astype(int) - half, 0)
    hi = np.minimum(np.ceil(centre).astype(int) + half + 1, shape)
    idx = np.indices(tuple(hi - lo), dtype=np.float32)
    d2 = sum(((idx[a] + lo[a] - centre[a]) * spacing[a]) ** 2 for a in range(3))
    out = np.zeros(shape, dtype=bool)
    out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = d2 <= radius_mm**2
    return out
