"""The shipped real CT (tests/data/totalsegmentator-example) as the tests and the anatomy
benchmark read it: the slab, a contrast-enhanced version of its anatomy, and part of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data" / "totalsegmentator-example"
#: Portal-venous enhancement added where TotalSegmentator's labels put the tissue (HU):
#: vessels (classes 52-68) +180, kidneys +140, liver +60, spleen +75, pancreas +50.
ENHANCEMENT_HU = ((tuple(range(52, 69)), 180.0), ((2, 3), 140.0), ((5,), 60.0), ((1,), 75.0), ((7,), 50.0))


def load():
    """(HU, voxel->LPS affine, reference labels) of the shipped slab."""
    import nibabel as nib

    from dualpet.geometry import lps_affine

    ct = nib.load(str(DATA / "example_ct_sm.nii.gz"))
    ref = np.asarray(nib.load(str(DATA / "example_seg.nii.gz")).dataobj)
    return np.asarray(ct.dataobj, dtype=np.float32), lps_affine(ct.affine), ref


def enhanced(hu, ref):
    """The CT with ENHANCEMENT_HU added where the reference labels its tissues."""
    out = hu.copy()
    for classes, add in ENHANCEMENT_HU:
        out[np.isin(ref, classes)] += add
    return out


def planes(hu, affine, ref, sl):
    """The slices ``sl`` (a slice of k) of the CT and its labels, with their affine."""
    aff = affine.copy()
    aff[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, sl.start]) + affine[:3, 3]
    return hu[:, :, sl], aff, ref[:, :, sl]
