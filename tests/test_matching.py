"""Cross-tracer matching, VOI neighbourhoods and VOI carrying, on constructed volumes."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from dualpet.detection.threshold import detect_lesions
from dualpet.matching import carry_voi, lesion_vois, match
from dualpet.metrics import isocontour_voi

AFF = np.diag([2.0, 2.0, 2.0, 1.0])


def _blob(shape, centre, sigma_vox, peak, bg=1.0):
    img = np.zeros(shape, np.float32)
    img[tuple(centre)] = 1.0
    img = ndimage.gaussian_filter(img, sigma_vox)
    return (bg + (peak - bg) * img / img.max()).astype(np.float32)


def test_voi_is_the_isocontour_not_the_detection_region():
    """A lesion whose 41 % level (2.05) lies below the threshold (3.0) keeps its whole
    41 % isocontour: the VOI equals the isocontour computed on the full volume."""
    suv = _blob((50, 50, 50), (25, 25, 25), 3.0, peak=5.0, bg=0.5)
    labels, info = detect_lesions(suv, AFF, 3.0)
    assert len(info["lesions"]) == 1
    vois = lesion_vois(suv, labels, AFF, 0.41, neighbourhood_mm=20.0)
    got = np.zeros(suv.shape, bool)
    v = vois[1]
    got[v["box"]] = v["voi"]
    expected = isocontour_voi(suv, np.ones(suv.shape, bool), 0.41)
    assert got.sum() > (labels == 1).sum() * 1.5  # really larger than the detection region
    assert np.array_equal(got, expected)
    assert np.allclose(v["centroid"], [50.0, 50.0, 50.0], atol=0.01)  # 25 voxels x 2 mm


def test_neighbourhood_never_enters_another_lesion():
    suv = _blob((60, 40, 40), (20, 20, 20), 2.0, peak=8.0) + _blob((60, 40, 40), (32, 20, 20), 2.0, peak=8.0) - 1.0
    labels, info = detect_lesions(suv, AFF, 3.0)
    assert len(info["lesions"]) == 2
    vois = lesion_vois(suv, labels, AFF, 0.41, neighbourhood_mm=10.0)
    for lab, v in vois.items():
        other = labels[v["box"]] == (3 - lab)
        assert not (v["neighbourhood"] & other).any() and not (v["voi"] & other).any()


def test_match_hungarian_within_tolerance():
    ref = {1: np.array([0.0, 0, 0]), 2: np.array([30.0, 0, 0])}
    idx = {7: np.array([28.0, 1, 0]), 8: np.array([2.0, 0, 0]), 9: np.array([100.0, 0, 0])}
    pairs = {(r, i) for r, i, _ in match(ref, idx, tolerance_mm=15.0)}
    assert pairs == {(1, 8), (2, 7)}
    assert match(ref, {}, 15.0) == [] and match({}, idx, 15.0) == []


def test_carry_voi_through_a_translation():
    """A VOI carried to another grid through a known translation lands where it should."""
    voi = np.zeros((30, 30, 30), bool)
    voi[10:14, 12:15, 8:11] = True
    src_aff = np.diag([2.0, 2.0, 2.0, 1.0])
    dst_aff = np.diag([2.0, 2.0, 2.0, 1.0])
    dst_aff[:3, 3] = [-10.0, 4.0, 6.0]
    shift = np.array([6.0, -8.0, 4.0])  # destination point p is source point p + shift
    tfm = sitk.TranslationTransform(3, tuple(shift))  # maps destination -> source
    carried = carry_voi(voi, src_aff, (40, 40, 40), dst_aff, lambda pts: pts + shift, np.array([0.0, 0, 0]), 60.0)
    src_pts = np.argwhere(voi) * 2.0
    dst_idx = np.rint((src_pts - shift - dst_aff[:3, 3]) / 2.0).astype(int)
    expected = np.zeros((40, 40, 40), bool)
    expected[tuple(dst_idx.T)] = True
    assert np.array_equal(carried, expected)
    assert tfm.TransformPoint((0.0, 0.0, 0.0)) == pytest.approx(tuple(shift))
    outside = carry_voi(voi, src_aff, (40, 40, 40), dst_aff, lambda pts: pts + 1000.0, np.array([0.0, 0, 0]), 60.0)
    assert not outside.any()


def test_overlapping_vois_are_one_lesion_even_with_distant_centroids(tmp_path):
    """An elongated lesion seen on both tracers, hot at opposite ends: the two centroids are
    further apart than the tolerance, but the VOIs overlap, so it is one union lesion."""
    from dualpet.matching import build_lesions

    shape = (40, 40, 60)
    idx = np.indices(shape)
    rod = (np.hypot(idx[0] - 20, idx[1] - 20) <= 3) & (idx[2] >= 15) & (idx[2] <= 45)  # 60 mm long
    grad = np.clip((idx[2] - 15) / 30.0, 0, 1)
    # SUV 1 -> 8 along the rod: each tracer's 41 % VOI is the hot two thirds of the rod
    ref_suv = np.where(rod, 1.0 + 7.0 * (1 - grad), 0.5).astype(np.float32)  # hot at the bottom
    idx_suv = np.where(rod, 1.0 + 7.0 * grad, 0.5).astype(np.float32)  # hot at the top
    lab = rod.astype(np.int32)
    studies = {
        t: {"suv": v, "affine": AFF, "labels": lab, "background": 1.0}
        for t, v in (("fdg", ref_suv), ("pentixafor", idx_suv))
    }
    tfm = sitk.Euler3DTransform()
    index = build_lesions(
        "P1",
        ("fdg", "pentixafor"),
        studies,
        tfm,
        tmp_path / "i.tsv",
        tmp_path / "c",
        tolerance_mm=5.0,
        fraction=0.41,
        neighbourhood_mm=0.0,
    )
    assert len(index) == 1
    row = index.iloc[0]
    assert row["fdg_detected"] == 1 and row["pentixafor_detected"] == 1 and row["match_distance_mm"] > 15.0


def test_neighbouring_lesions_that_only_touch_stay_two(tmp_path):
    """Two different lesions, one per tracer, 14 mm apart: their VOIs touch (a few shared
    voxels, far below OVERLAP_SHARE_MIN of either) but they are not one lesion."""
    from dualpet.matching import build_lesions

    shape = (40, 40, 60)
    idx = np.indices(shape)
    a = np.linalg.norm(idx - np.array([20, 20, 26])[:, None, None, None], axis=0) <= 4.5
    b = np.linalg.norm(idx - np.array([20, 20, 33])[:, None, None, None], axis=0) <= 4.5
    studies = {
        "fdg": {
            "suv": np.where(a, 8.0, 0.5).astype(np.float32),
            "affine": AFF,
            "labels": a.astype(np.int32),
            "background": 1.0,
        },
        "pentixafor": {
            "suv": np.where(b, 8.0, 0.5).astype(np.float32),
            "affine": AFF,
            "labels": b.astype(np.int32),
            "background": 1.0,
        },
    }
    assert (a & b).any()  # they touch
    index = build_lesions(
        "P1",
        ("fdg", "pentixafor"),
        studies,
        sitk.Euler3DTransform(),
        tmp_path / "i.tsv",
        tmp_path / "c",
        tolerance_mm=5.0,
        fraction=0.41,
        neighbourhood_mm=0.0,
    )
    assert len(index) == 2
    assert sorted(zip(index.fdg_detected, index.pentixafor_detected)) == [(0, 1), (1, 0)]


def test_small_lesion_beside_a_hot_one_keeps_its_own_maximum():
    """A small lesion (peak 6) 16 mm from a hot one (peak 30): their regions are the half-
    maximum extents (as local detection gives), so the hot lesion's spill-over reaches
    into the small one's neighbourhood above the small one's peak. Its VOI takes its SUVmax
    from its own region and stays on its side: SUVmax = its own peak, no voxel hotter."""
    shape = (60, 40, 40)
    hot = _blob(shape, (20, 20, 20), 2.5, peak=30.0, bg=0.5)
    small = _blob(shape, (28, 20, 20), 1.5, peak=6.0, bg=0.0)
    suv = (hot + small).astype(np.float32)
    labels = np.zeros(shape, np.int32)
    labels[suv >= 15.0] = 1  # the hot lesion's half-maximum extent
    own = np.zeros(shape, bool)
    own[26:31, 18:23, 18:23] = True
    labels[own & (labels == 0) & (small >= 3.0)] = 2  # the small lesion's half-maximum extent
    vois = lesion_vois(suv, labels, AFF, 0.41, neighbourhood_mm=10.0)
    v = vois[2]
    got = np.zeros(shape, bool)
    got[v["box"]] = v["voi"]
    peak_small = suv[labels == 2].max()
    assert suv[got].max() == pytest.approx(peak_small)
    assert not (got & (labels == 1)).any()
    # centroid on the small lesion's side of the midpoint between the two
    assert v["centroid"][0] > (20 + 28) / 2 * 2.0


def test_region_labels_at_the_hilum_and_in_the_mediastinum():
    """A constructed chest slab on 2 mm voxels: two lungs (-850 HU) either side of a
    mediastinum of fat (-100) holding soft-tissue vessels (40). A 40 mm tumour straddling
    the right hilum (half in lung, half in the mediastinum) is 'lung' (a hilar lung tumour);
    a 12 mm node in the mediastinal fat beside the same lung is 'lymph node'; a 10 mm
    nodule inside the lung is 'lung'. Truth: where each was painted."""
    from dualpet.matching import region_label

    n = (120, 100, 60)
    ii, jj, kk = np.indices(n)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    hu = np.full(n, -100.0, np.float32)  # mediastinal fat
    hu[(ii < 45) | (ii >= 75)] = -850.0  # the lungs, x < 90 mm and x >= 150 mm
    hu[(ii - 60) ** 2 + (jj - 50) ** 2 <= 12**2] = 40.0  # a vessel down the mediastinum
    centres = {"tumour": (90.0, 60.0, 60.0), "node": (120.0, 140.0, 60.0), "nodule": (40.0, 100.0, 60.0)}
    radii = {"tumour": 20.0, "node": 6.0, "nodule": 5.0}
    for name, c in centres.items():
        ball = ((ii * 2.0 - c[0]) ** 2 + (jj * 2.0 - c[1]) ** 2 + (kk * 2.0 - c[2]) ** 2) <= radii[name] ** 2
        hu[ball] = 35.0
    got = {name: region_label(hu, aff, np.array(c), lesion_radius_mm=radii[name]) for name, c in centres.items()}
    assert got == {"tumour": "lung", "node": "lymph node", "nodule": "lung"}
    # a lesion in PET planes the CT does not cover (issue 23: partial coverage is tolerated)
    assert region_label(hu, aff, np.array([90.0, 60.0, 60 * 2.0 + 30.0])) == "unknown"
