"""Tests for dualpet.registration, against transforms known by construction.

A synthetic CT-like phantom (torso, lungs, spine, liver, stomach gas, kidney) is
defined analytically in the *reference* study's LPS frame. The *index* study images
the same anatomy after a known rigid motion ``T`` (reference LPS -> index LPS, the
convention of the transform register_ct writes), on its own grid, with a couch that
does not move with the patient. Every expected value is therefore exact.
"""

from __future__ import annotations

import time

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from dualpet.errors import DualpetInputError
from dualpet.geometry import ras_affine
from dualpet.io import read_json
from dualpet.registration import (
    body_mask,
    inverse_transform_points,
    load_transform,
    register_ct,
    resample_to_reference,
    transform_points,
)

#: Real registrations of phantom CTs (seconds each; make test-fast leaves them out).
pytestmark = pytest.mark.slow

# Anatomy centre in reference LPS mm: deliberately far from 0 (scanner coordinates).
C0 = np.array([-23.7, 41.2, -612.5])
SHAPE = (128, 128, 80)

# Ground-truth motion between the studies: 5 deg about an oblique axis, ~28 mm shift.
AXIS = np.array([1.0, 0.5, 0.3]) / np.linalg.norm([1.0, 0.5, 0.3])
ANGLE_DEG = 5.0
SHIFT = np.array([14.0, -9.0, 22.0])

# Landmarks (reference LPS mm, relative to C0): all inside both fields of view.
LANDMARKS_REL = np.array(
    [
        [0.0, 70.0, 40.0],  # spine
        [0.0, 70.0, -60.0],  # spine, lower
        [70.0, -10.0, 50.0],  # left lung centre
        [-70.0, -10.0, 50.0],  # right lung centre
        [-60.0, 0.0, -50.0],  # liver
        [60.0, -20.0, -30.0],  # stomach gas
        [120.0, 30.0, 0.0],  # left flank, near the skin
        [0.0, -100.0, 10.0],  # anterior abdominal wall
    ]
)


def rotation(axis, angle_deg):
    """Rodrigues rotation matrix."""
    a = np.deg2rad(angle_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def rigid(axis, angle_deg, shift, centre=C0):
    """Return (R, t) of p -> R (p - centre) + centre + shift as p -> R p + t."""
    r = rotation(axis, angle_deg)
    return r, centre - r @ centre + shift


def _soft(d, width=1.0):
    """Partial-volume-like edge: 1 inside (d < 0), 0 outside, ~2 mm transition."""
    return 1.0 / (1.0 + np.exp(np.clip(d / width, -50, 50)))


def _ellipsoid(q, centre, semi):
    """Approximate signed distance (mm) to an ellipsoid."""
    r = np.linalg.norm((q - centre) / semi, axis=-1)
    return (r - 1.0) * np.min(semi)


def _cylinder_z(q, centre_xy, semi_xy):
    """Approximate signed distance (mm) to an elliptic cylinder along z."""
    r = np.linalg.norm((q[..., :2] - centre_xy) / semi_xy, axis=-1)
    return (r - 1.0) * np.min(semi_xy)


def phantom_hu(p_ref):
    """HU of the anatomy at reference-LPS points ``p_ref`` (..., 3)."""
    q = p_ref - C0
    hu = np.full(q.shape[:-1], -1000.0)

    def paint(d, value):
        nonlocal hu
        m = _soft(d)
        hu = hu * (1 - m) + value * m

    paint(_cylinder_z(q, [0, 0], [165, 115]), -100.0)  # body: subcutaneous fat
    paint(_cylinder_z(q, [0, 5], [148, 98]), 40.0)  # muscle / soft tissue
    paint(_ellipsoid(q, [70, -10, 50], [45, 60, 70]), -850.0)  # left lung
    paint(_ellipsoid(q, [-70, -10, 55], [50, 60, 75]), -850.0)  # right lung (larger)
    paint(_ellipsoid(q, [-60, 0, -50], [70, 60, 45]), 60.0)  # liver (patient right)
    paint(_ellipsoid(q, [60, -20, -30], [22, 18, 15]), -900.0)  # stomach gas (left)
    paint(_ellipsoid(q, [55, 55, -80], [25, 20, 40]), 180.0)  # one enhancing kidney (left)
    paint(_cylinder_z(q, [0, 70], [18, 18]), 700.0)  # spine (posterior, +y)
    paint(_ellipsoid(q, [0, 55, 0], [8, 8, 8]), 1200.0)  # dense marker (break z symmetry)
    return hu


TABLE_TOP_Y = C0[1] + 115.0 + 1.0  # just posterior of the reference body's back


def make_ct(path, origin_lps, spacing, flip_k=False, r=None, t=None, seed=0, shape=SHAPE):
    """Write a phantom CT imaging the anatomy moved by p -> r p + t; return the RAS affine.

    The couch (100 HU slab, 6 mm thick, posterior of the body) is fixed in the
    scanner frame: it is *not* moved by (r, t); no motion by default.
    """
    r = np.eye(3) if r is None else r
    t = np.zeros(3) if t is None else t
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = np.diag(spacing) @ np.diag([1.0, 1.0, -1.0 if flip_k else 1.0])
    affine_lps[:3, 3] = origin_lps
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    p_scan = ijk @ affine_lps[:3, :3].T + affine_lps[:3, 3]
    p_ref = (p_scan - t) @ r  # inverse motion: r^T (p - t), row-vector form
    hu = phantom_hu(p_ref)
    table = _soft(np.abs(p_scan[..., 1] - (TABLE_TOP_Y + 3.0)) - 3.0) * _soft(np.abs(p_scan[..., 0] - C0[0]) - 240)
    hu = np.maximum(hu, -1000 * (1 - table) + 100.0 * table)
    hu += np.random.default_rng(seed).normal(0, 10.0, hu.shape)
    affine_ras = ras_affine(affine_lps)
    nib.save(nib.Nifti1Image(np.round(hu).astype(np.int16), affine_ras), str(path))
    return affine_ras


def ref_origin():
    # Grid centred near C0 but offset by a non-round amount.
    return C0 - np.array([63.5, 60.0, 40.0]) * 3.0 + np.array([1.3, -2.2, 0.7])


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    d = tmp_path_factory.mktemp("reg")
    r, t = rigid(AXIS, ANGLE_DEG, SHIFT)
    ref = d / "ref_ct.nii.gz"
    idx = d / "idx_ct.nii.gz"
    make_ct(ref, ref_origin(), (3.0, 3.0, 3.0), seed=1)
    # Index grid: other spacing, other origin, slices stored head -> feet.
    idx_origin = C0 + SHIFT - np.array([62.0 * 3.1, 64.0 * 3.1, -39.5 * 2.9]) + np.array([-7.3, 4.9, 3.3])
    make_ct(idx, idx_origin, (3.1, 3.1, 2.9), flip_k=True, r=r, t=t, seed=2)
    tfm = d / "ref_to_idx.tfm"
    qc_json = d / "qc.json"
    t0 = time.perf_counter()
    qc = register_ct(ref, idx, tfm, qc_json, threads=2, affine=False)
    elapsed = time.perf_counter() - t0
    return {
        "dir": d,
        "ref": ref,
        "idx": idx,
        "tfm": tfm,
        "qc_json": qc_json,
        "qc": qc,
        "r": r,
        "t": t,
        "elapsed": elapsed,
    }


def test_lps_ras_convention(tmp_path):
    """A voxel nibabel puts at RAS (x, y, z) is at LPS (-x, -y, z) in SimpleITK."""
    affine = np.array([[-2.0, 0, 0, 117.0], [0, -2.5, 0, 93.0], [0, 0, 3.0, -401.0], [0, 0, 0, 1]])
    data = np.zeros((10, 12, 8), np.int16)
    data[3, 7, 5] = 42
    path = tmp_path / "probe.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    x, y, z = affine[:3, :3] @ [3, 7, 5] + affine[:3, 3]
    img = sitk.ReadImage(str(path))
    assert img[3, 7, 5] == 42  # SimpleITK index order (i, j, k) = nibabel's
    np.testing.assert_allclose(img.TransformIndexToPhysicalPoint((3, 7, 5)), (-x, -y, z), atol=1e-9)
    # And the nibabel-side helper agrees.
    np.testing.assert_allclose(ras_affine(np.diag([1, 1, 1, 1.0])), np.diag([-1, -1, 1, 1.0]))


def test_registration_tre(studies):
    """Anatomical landmarks map to their known index-study positions within 1 mm.

    Tolerance: the phantom is sampled at ~3 mm and registered on a 4 mm grid with
    10 HU noise; a rigid fit over ~10^5 masked voxels averages interpolation error to
    ~0.1-0.3 mm, so 1 mm (a third of a voxel) catches any convention error (sign,
    LPS/RAS, inverse direction, centre) which would give errors of >= 10 mm.
    """
    tfm = load_transform(studies["tfm"])
    p_ref = C0 + LANDMARKS_REL
    expected = p_ref @ studies["r"].T + studies["t"]
    got = transform_points(tfm, p_ref)
    tre = np.linalg.norm(got - expected, axis=1)
    print(f"TRE mm: max {tre.max():.3f} mean {tre.mean():.3f}; register_ct {studies['elapsed']:.1f} s")
    assert tre.max() < 1.0, tre
    # Inverse: index positions map back to the reference landmarks (exact inverse of
    # the fitted transform, so 1e-6 mm; against ground truth, again < 1 mm).
    back = inverse_transform_points(tfm, got)
    np.testing.assert_allclose(back, p_ref, atol=1e-6)
    assert np.linalg.norm(inverse_transform_points(tfm, expected) - p_ref, axis=1).max() < 1.0
    # Single point (3,) in, (3,) out; path accepted in place of a transform.
    np.testing.assert_allclose(transform_points(studies["tfm"], p_ref[0]), got[0], atol=1e-9)


def _tre(tfm, r, t, landmarks_rel=LANDMARKS_REL):
    p_ref = C0 + landmarks_rel
    return np.linalg.norm(transform_points(tfm, p_ref) - (p_ref @ r.T + t), axis=1)


def test_large_motion_short_fov(studies, tmp_path):
    """10 deg about another oblique axis plus a 51 mm shift, index scan 150 mm long.

    The index field of view covers a different, shorter axial range, so the body
    centroids differ in z by the scan ranges, not the anatomy: this exercises the
    z search after the centre-of-mass initialisation. Same 1 mm TRE bound (landmarks
    inside the shorter field of view).
    """
    axis = np.array([-0.4, 1.0, 0.6]) / np.linalg.norm([-0.4, 1.0, 0.6])
    r, t = rigid(axis, 10.0, np.array([20.0, -25.0, 40.0]))
    idx = tmp_path / "idx_far.nii.gz"
    origin = ref_origin() + np.array([5.0, -3.0, 75.0])
    make_ct(idx, origin, (3.0, 3.0, 3.0), r=r, t=t, seed=3, shape=(128, 128, 50))
    qc = register_ct(studies["ref"], idx, tmp_path / "far.tfm", threads=2, affine=False)
    in_fov = LANDMARKS_REL[LANDMARKS_REL[:, 2] > -20]
    tre = _tre(tmp_path / "far.tfm", r, t, in_fov)
    print(
        f"large motion: TRE max {tre.max():.3f} mm, z search {qc['z_search']['z_offset_mm']} mm, {qc['wall_time_s']:.1f} s"
    )
    assert tre.max() < 1.0, tre
    assert abs(qc["rotation_angle_deg"] - 10.0) < 0.2


def test_deterministic_and_affine(studies, tmp_path):
    """Single-threaded runs are bit-for-bit repeatable (seeded sampling); with affine=True
    on rigid motion the rigid result is kept."""
    q1 = register_ct(studies["ref"], studies["idx"], tmp_path / "a.tfm", threads=1, affine=False)
    q2 = register_ct(studies["ref"], studies["idx"], tmp_path / "b.tfm", threads=1, affine=False)
    assert q1["translation_mm"] == q2["translation_mm"] and q1["rotation_deg"] == q2["rotation_deg"]
    assert (tmp_path / "a.tfm").read_text() == (tmp_path / "b.tfm").read_text()
    # rigid motion: the affine stage runs but cannot improve the body fit, so the rigid
    # result is kept (extra parameters would only fit noise)
    qa = register_ct(studies["ref"], studies["idx"], tmp_path / "aff.tfm", threads=2, affine=True)
    assert [s["name"] for s in qa["stages"]] == ["rigid", "affine"]
    assert qa["stages"][1]["accepted"] is False and qa["transform_type"] == "Euler3DTransform"
    assert _tre(tmp_path / "aff.tfm", studies["r"], studies["t"]).max() < 1.0


def test_ct_kept_in_its_stored_type_registers_as_its_float_copy(studies, tmp_path):
    """read_ct keeps whole HU as stored (int16): the transform and the views are those of
    the float32 copy, to the bit (every filter computes in float32 or double)."""
    from dualpet.registration import read_ct, write_views

    stored = [read_ct(studies["ref"]), read_ct(studies["idx"])]
    assert {img.GetPixelID() for img in stored} == {sitk.sitkInt16}
    floats = [sitk.Cast(img, sitk.sitkFloat32) for img in stored]
    out = {}
    for name, images in (("stored", stored), ("float", floats)):
        d = tmp_path / name
        d.mkdir()
        register_ct(studies["ref"], studies["idx"], d / "t.tfm", threads=1, affine=True, images=images)
        pet = d / "pet.nii.gz"  # a PET standing in: the index CT itself
        nib.save(nib.load(str(studies["idx"])), str(pet))
        write_views(
            studies["ref"],
            studies["idx"],
            d / "t.tfm",
            studies["ref"],
            pet,
            d / "ct.nii.gz",
            d / "pet_in.nii.gz",
            d / "qc.png",
            images=list(images),
        )
        out[name] = {f: (d / f).read_bytes() for f in ("t.tfm", "ct.nii.gz", "pet_in.nii.gz", "qc.png")}
    for f in out["stored"]:
        assert out["stored"][f] == out["float"][f], f


def test_affine_accepted_for_a_scaled_body(studies, tmp_path):
    """Anatomy scaled 6 % left-right and -5 % antero-posterior (e.g. weight change) and
    rotated 3 deg: the affine stage is accepted, written as an AffineTransform, and beats
    the rigid TRE at the landmarks (bound 1.5 mm: a 4 mm grid fitting 12 parameters)."""
    r3, _ = rigid(AXIS, 3.0, np.zeros(3))
    A = r3 @ np.diag([1.06, 0.95, 1.0])
    t = C0 + SHIFT - A @ C0  # C0 moves to C0 + SHIFT
    idx = tmp_path / "scaled.nii.gz"
    idx_origin = C0 + SHIFT - np.array([62.0 * 3.1, 64.0 * 3.1, 39.5 * 2.9])
    make_ct(idx, idx_origin, (3.1, 3.1, 2.9), r=np.linalg.inv(A).T, t=t, seed=3)
    qr = register_ct(studies["ref"], idx, tmp_path / "rigid.tfm", threads=2, affine=False)
    qa = register_ct(studies["ref"], idx, tmp_path / "affine.tfm", threads=2, affine=True)
    assert qa["stages"][1]["accepted"] is True
    assert sitk.ReadTransform(str(tmp_path / "affine.tfm")).GetName() == "AffineTransform"
    tre_rigid = _tre(tmp_path / "rigid.tfm", A, t)
    tre_affine = _tre(tmp_path / "affine.tfm", A, t)
    assert tre_affine.max() < 1.5 and tre_affine.max() < 0.5 * tre_rigid.max()
    assert qa["dice_body_after"] > qr["dice_body_after"]


def test_rejects_non_ct(studies, tmp_path):
    empty = tmp_path / "air.nii.gz"
    nib.save(nib.Nifti1Image(np.full((40, 40, 20), -1000, np.int16), np.diag([3.0, 3.0, 3.0, 1.0])), str(empty))
    with pytest.raises(DualpetInputError, match="body mask"):
        register_ct(studies["ref"], empty, tmp_path / "x.tfm")
    assert not (tmp_path / "x.tfm").exists()
    with pytest.raises(DualpetInputError, match="not found"):
        register_ct(studies["ref"], tmp_path / "missing.nii.gz", tmp_path / "x.tfm")
    with pytest.raises(ValueError, match="default_value"):
        resample_to_reference(
            studies["idx"],
            studies["ref"],
            studies["tfm"],
            tmp_path / "y.nii.gz",
            interpolation="nearest",
            default_value=-0.5,
        )
    with pytest.raises(ValueError, match="interpolation"):
        resample_to_reference(
            studies["idx"], studies["ref"], studies["tfm"], tmp_path / "y.nii.gz", interpolation="cubic"
        )


def test_qc_record(studies):
    qc = studies["qc"]
    on_disk = read_json(studies["qc_json"])
    assert on_disk["translation_mm"] == qc["translation_mm"]
    assert on_disk["optimizer_stop_condition"] == qc["optimizer_stop_condition"]
    for key in (
        "final_metric_value",
        "optimizer_stop_condition",
        "iterations",
        "dice_body_before",
        "dice_body_after",
        "translation_mm",
        "rotation_deg",
        "grid_mm",
        "threads",
        "wall_time_s",
    ):
        assert key in qc
    assert qc["transform_type"] == "Euler3DTransform"
    assert qc["grid_mm"] == 4.0 and qc["threads"] == 2
    # Rotation angle recovered to 0.2 deg (5 deg true); translation = displacement of
    # the rotation centre, known in closed form: T(c) - c.
    assert abs(qc["rotation_angle_deg"] - ANGLE_DEG) < 0.2
    c = np.asarray(qc["center_mm"])
    np.testing.assert_allclose(qc["translation_mm"], studies["r"] @ c + studies["t"] - c, atol=1.0)
    # Body masks overlap better after registration; near-perfect within the common FOV.
    assert qc["dice_body_after"] > 0.98
    assert qc["dice_body_after"] > qc["dice_body_before"]
    assert qc["ok"], qc["warnings"]


def test_transform_file_roundtrip(studies):
    """The .tfm is a plain Euler3DTransform that plain ITK reading reproduces."""
    text = studies["tfm"].read_text()
    assert "Euler3DTransform_double_3_3" in text and "Composite" not in text
    raw = sitk.ReadTransform(str(studies["tfm"]))
    assert raw.GetName() == "Euler3DTransform"
    tfm = load_transform(studies["tfm"])
    assert isinstance(tfm, sitk.Euler3DTransform)
    for p in C0 + LANDMARKS_REL:
        np.testing.assert_allclose(raw.TransformPoint(tuple(p)), tfm.TransformPoint(tuple(p)), atol=1e-9)
    assert not list(studies["dir"].glob(".ref_to_idx*"))  # no temporary left behind


def test_resample_returns_its_array_and_rounds_to_an_integer_type(studies, tmp_path):
    """The views step writes the index CT in whole HU (int16) and draws from the returned
    array: it is the written data, and the rounded float resampling to the last HU."""
    as_float = resample_to_reference(studies["idx"], studies["ref"], studies["tfm"], None, default_value=-1024)
    assert as_float.dtype == np.float32 and not list(tmp_path.iterdir())  # None: nothing written
    out = tmp_path / "ct_int16.nii.gz"
    as_int = resample_to_reference(
        studies["idx"], studies["ref"], studies["tfm"], out, default_value=-1024, dtype=np.int16
    )
    assert as_int.dtype == np.int16 and nib.load(out).get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), as_int)
    np.testing.assert_array_equal(as_int, np.rint(as_float).astype(np.int16))


def test_resample_ct_linear(studies, tmp_path):
    """Index CT resampled onto the reference grid matches the reference CT."""
    out = tmp_path / "idx_on_ref.nii.gz"
    resample_to_reference(studies["idx"], studies["ref"], studies["tfm"], out, default_value=-1024)
    ref_img = nib.load(studies["ref"])
    res = nib.load(out)
    assert res.get_data_dtype() == np.float32
    assert res.shape == ref_img.shape
    np.testing.assert_allclose(res.affine, ref_img.affine)
    # SimpleITK sees the output on exactly the reference grid (LPS geometry).
    ref_s, res_s = sitk.ReadImage(str(studies["ref"])), sitk.ReadImage(str(out))
    assert res_s.GetSize() == ref_s.GetSize()
    for get in ("GetOrigin", "GetSpacing", "GetDirection"):
        np.testing.assert_allclose(getattr(res_s, get)(), getattr(ref_s, get)(), atol=1e-4)
    a = ref_img.get_fdata()
    b = res.get_fdata()
    # Inside the body away from the FOV ends, the residual is noise (2 x 10 HU) plus
    # interpolation at edges; the mean absolute difference stays well below 25 HU,
    # whereas a 1-voxel misregistration gives > 40 HU.
    body = sitk.GetArrayFromImage(body_mask(sitk.ReadImage(str(studies["ref"])))).transpose(2, 1, 0).astype(bool)
    body[:, :, :12] = body[:, :, -12:] = False
    mad = np.abs(a - b)[body].mean()
    assert mad < 25.0, mad


def test_resample_labels_nearest(studies, tmp_path):
    """Nearest-neighbour resampling keeps integer labels and puts them at T^-1 positions.

    Uses the ground-truth transform (not the fitted one) written to .tfm, so the
    expected label at each reference landmark is exact.
    """
    r, t = studies["r"], studies["t"]
    gt = sitk.Euler3DTransform()
    gt.SetCenter(tuple(C0))
    gt.SetMatrix(tuple(r.ravel()))
    gt.SetTranslation(tuple(r @ C0 + t - C0))
    gt_path = tmp_path / "gt.tfm"
    sitk.WriteTransform(gt, str(gt_path))
    np.testing.assert_allclose(transform_points(gt_path, C0 + LANDMARKS_REL), (C0 + LANDMARKS_REL) @ r.T + t, atol=1e-9)

    idx_img = nib.load(studies["idx"])
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in idx_img.shape], indexing="ij"), -1).astype(float)
    p_idx_lps = (ijk @ idx_img.affine[:3, :3].T + idx_img.affine[:3, 3]) * [-1, -1, 1]
    labels = np.zeros(idx_img.shape, np.int16)
    centres_ref = C0 + LANDMARKS_REL[:4]
    for lab, c in enumerate(centres_ref @ r.T + t, start=1):
        labels[np.linalg.norm(p_idx_lps - c, axis=-1) < 12.0] = 300 + lab  # > uint8 range
    lab_path = tmp_path / "labels_idx.nii.gz"
    nib.save(nib.Nifti1Image(labels, idx_img.affine), str(lab_path))

    out = tmp_path / "labels_on_ref.nii.gz"
    resample_to_reference(lab_path, studies["ref"], gt_path, out, interpolation="nearest")
    res = nib.load(out)
    assert res.get_data_dtype() == np.int16
    data = np.asanyarray(res.dataobj)
    assert data.dtype == np.int16
    assert set(np.unique(data)) <= {0, 301, 302, 303, 304}
    ref_aff = res.affine
    for lab, c in enumerate(centres_ref, start=1):
        ras = c * [-1, -1, 1]
        i, j, k = np.round(np.linalg.solve(ref_aff[:3, :3], ras - ref_aff[:3, 3])).astype(int)
        assert data[i, j, k] == 300 + lab
    # Sphere volume preserved to ~15% (nearest neighbour on 3 mm voxels; 12 mm radius).
    v_expected = 4 / 3 * np.pi * 12.0**3
    voxel = abs(np.linalg.det(ref_aff[:3, :3]))
    for lab in range(1, 5):
        assert abs((data == 300 + lab).sum() * voxel / v_expected - 1) < 0.15


def test_body_mask_excludes_table(studies):
    """The couch (fixed in the scanner) is not part of the body mask."""
    img = sitk.ReadImage(str(studies["ref"]), sitk.sitkFloat32)
    mask = body_mask(img)
    assert mask.GetPixelID() == sitk.sitkUInt8
    arr = sitk.GetArrayFromImage(mask).transpose(2, 1, 0)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), -1).astype(float)
    lps = ijk @ np.asarray(img.GetDirection()).reshape(3, 3).T * 3.0 + np.asarray(img.GetOrigin())
    table = (lps[..., 1] > TABLE_TOP_Y + 1.5) & (lps[..., 1] < TABLE_TOP_Y + 4.5)
    assert arr[table].sum() == 0
    # Lungs (holes in the thresholded body) are filled.
    i, j, k = np.round(img.TransformPhysicalPointToContinuousIndex(tuple(C0 + [70, -10, 50]))).astype(int)
    assert arr[i, j, k] == 1


@pytest.mark.slow
def test_same_transform_at_any_thread_count(cohort_dir, tmp_path):
    """Identical inputs give byte-identical transform files with 1 and 2 threads, and on
    repeated runs (ITK's multi-threaded metric sums are not; the optimisation runs in one)."""
    from dualpet.convert import convert_study

    cts = {}
    for tracer in ("fdg", "pentixafor"):
        convert_study(
            cohort_dir / "dicom" / "P001" / tracer,
            patient="P001",
            tracer=tracer,
            ct_out=tmp_path / f"{tracer}.nii.gz",
            pet_out=tmp_path / f"{tracer}_pet.nii.gz",
            json_out=tmp_path / f"{tracer}.json",
        )
        cts[tracer] = tmp_path / f"{tracer}.nii.gz"
    texts = set()
    for n, threads in enumerate((2, 1, 2)):
        register_ct(cts["fdg"], cts["pentixafor"], tmp_path / f"t{n}.tfm", None, threads=threads, affine=True)
        texts.add((tmp_path / f"t{n}.tfm").read_text())
    assert len(texts) == 1
