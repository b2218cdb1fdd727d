"""Per-lesion metrics and detection on shapes with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from dualpet.detection.threshold import detect_lesions, detection_threshold
from dualpet.metrics import PEAK_RADIUS_MM, isocontour_voi, lesion_metrics, sphere_kernel, suv_peak

AFF = np.diag([2.0, 2.0, 2.0, 1.0])  # 2 mm isotropic voxels: 0.008 mL each


def _sphere(shape, centre_vox, radius_vox):
    idx = np.indices(shape)
    return sum((idx[a] - centre_vox[a]) ** 2 for a in range(3)) <= radius_vox**2


def test_uniform_sphere_mean_max_mtv_tlg_tbr():
    shape = (40, 40, 40)
    ball = _sphere(shape, (20, 20, 20), 8)  # radius 16 mm
    suv = np.where(ball, 6.0, 1.0).astype(np.float32)
    m = lesion_metrics(suv, isocontour_voi(suv, ball, 0.41), AFF, background_suvmean=1.5)
    n = int(ball.sum())
    assert m["suvmax"] == 6.0 and m["suvmean"] == pytest.approx(6.0)
    assert m["mtv_ml"] == pytest.approx(n * 0.008)  # exact voxel count x voxel volume
    assert m["tlg"] == pytest.approx(6.0 * n * 0.008)
    assert m["tbr"] == pytest.approx(4.0) and m["tbr_mean"] == pytest.approx(4.0)
    # a 1 mL sphere fits inside: SUVpeak equals the uniform value
    assert m["suvpeak"] == pytest.approx(6.0, rel=1e-6)


def test_isocontour_is_41_percent_of_max_and_connected():
    suv = np.zeros((30, 30, 30), np.float32)
    suv[10:20, 10:20, 10:20] = 5.0
    suv[15, 15, 15] = 10.0  # max
    suv[12, 12, 12] = 4.0  # still >= 4.1? no: 4.0 < 4.1 -> excluded
    suv[25:28, 25:28, 25:28] = 9.0  # hot but not connected to the maximum
    region = suv > 0
    voi = isocontour_voi(suv, region, 0.41)
    assert voi[15, 15, 15] and voi[11, 11, 11] and not voi[12, 12, 12]
    assert not voi[26, 26, 26]
    assert voi.sum() == 1000 - 1


def test_suvpeak_of_a_known_blob():
    """Peak of a point-like hot voxel = value x the kernel weight of the centre voxel."""
    suv = np.zeros((21, 21, 21))
    suv[10, 10, 10] = 100.0
    k = sphere_kernel(AFF)
    centre = tuple(s // 2 for s in k.shape)
    voi = np.zeros_like(suv, bool)
    voi[10, 10, 10] = True
    assert suv_peak(suv, voi, AFF) == pytest.approx(100.0 * k[centre])
    # the kernel holds 1 mL: weights x voxel volume = 1 mL (within 1 % of subsampling error)
    inside_ml = (k > 0).sum() * 0.008
    assert k.sum() == pytest.approx(1.0)
    assert (k / k.max()).sum() * 0.008 == pytest.approx(1.0, rel=0.01)
    assert inside_ml > 1.0 and pytest.approx(6.2035, abs=1e-3) == PEAK_RADIUS_MM


def test_detection_splits_touching_lesions_and_excludes_organs():
    shape = (60, 60, 60)
    suv = np.full(shape, 1.0, np.float32)
    liver = _sphere(shape, (45, 45, 45), 12)  # ~58 mL organ below the threshold
    suv[liver] = 2.5
    suv[_sphere(shape, (45, 45, 45), 3)] = 9.0  # metastasis in it: 9 >= 1.5 x 2.5
    kidney = _sphere(shape, (12, 45, 45), 9)  # ~24 mL organ above the threshold
    suv[kidney] = 4.0
    suv[_sphere(shape, (12, 45, 45), 1)] = 5.0  # organ texture: 5 < 1.5 x 4
    a = _sphere(shape, (20, 20, 30), 4)
    b = _sphere(shape, (28, 20, 30), 4)  # touching a: split at its own maximum
    suv[a] = 8.0
    suv[b] = 7.0
    thr = detection_threshold({"method": "fixed", "value": 3.0}, None)
    labels, info = detect_lesions(suv, AFF, thr, max_volume_ml=20.0)
    peaks = [les["peak_ijk"] for les in info["lesions"]]
    assert len(peaks) == 3, info["rejected"]
    for centre, r in (((20, 20, 30), 4), ((28, 20, 30), 4), ((45, 45, 45), 3)):
        assert any(np.linalg.norm(np.subtract(p, centre)) <= r for p in peaks)
    assert {les["label"] for les in info["lesions"]} == set(np.unique(labels)) - {0}
    # the kidney's texture bump is rejected as physiological, at the kidney
    kidney_rejects = [r for r in info["rejected"] if np.linalg.norm(np.subtract(r["peak_ijk"], (12, 45, 45))) <= 9]
    assert kidney_rejects and all("physiological" in r["reason"] for r in kidney_rejects)
    assert len(info["organs"]) == 2


def test_threshold_methods():
    assert detection_threshold({"method": "background", "factor": 2.0}, 1.7) == pytest.approx(3.4)
    assert detection_threshold({"method": "fixed", "value": 2.5}, 1.7) == 2.5
    with pytest.raises(ValueError):
        detection_threshold({"method": "magic"}, 1.0)


def test_crop_round_trip(tmp_path):
    """A lesion crop reads back as written (dualpet.interchange is the one definition the
    match step and the lesion jobs share); unknown fields are refused."""
    from dualpet.interchange import read_crop, write_crop

    suv = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    mask = suv > 10
    aff = np.diag([4.0, 4.0, 3.0, 1.0])
    write_crop(
        tmp_path / "L01.npz",
        0.41,
        {
            "fdg": {"suv": suv, "mask": mask, "affine": aff, "mode": "isocontour", "background": 1.7},
            "pentixafor": {"mode": "outside_field_of_view"},
        },
    )
    fraction, crop = read_crop(tmp_path / "L01.npz", ("fdg", "pentixafor"))
    assert fraction == pytest.approx(0.41) and crop["pentixafor"] == {"mode": "outside_field_of_view"}
    assert np.array_equal(crop["fdg"]["suv"], suv) and np.array_equal(crop["fdg"]["mask"], mask)
    assert np.array_equal(crop["fdg"]["affine"], aff) and crop["fdg"]["background"] == pytest.approx(1.7)
    with pytest.raises(ValueError, match="unknown crop fields"):
        write_crop(tmp_path / "L02.npz", 0.41, {"fdg": {"mode": "isocontour", "centre": 1}})


def test_segmentation_record_round_trip(tmp_path):
    """The segmentation record the segment step writes is what match and patient_table read."""
    from dualpet.interchange import read_segmentation, write_segmentation

    bg = {"suvmean": 1.8, "source": "bloodpool:anatomy", "n_voxels": 25}
    write_segmentation(
        tmp_path / "a.json",
        "P001",
        "fdg",
        bg,
        {"method": "background", "factor": 2.0},
        {"threshold_suv": 3.6, "lesions": []},
    )
    got = read_segmentation(tmp_path / "a.json")
    assert got["background_suvmean"] == 1.8 and got["background_source"] == "bloodpool:anatomy"
    assert got["threshold_suv"] == 3.6 and got["record"]["detection"]["method"] == {
        "method": "background",
        "factor": 2.0,
    }
    write_segmentation(tmp_path / "b.json", "P001", "fdg", bg, {"method": "seeds"}, {"threshold_suv": None, "seeds": 2})
    assert read_segmentation(tmp_path / "b.json")["threshold_suv"] is None
