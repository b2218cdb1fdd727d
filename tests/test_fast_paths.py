"""The fast paths of issue 27 give the numbers of the plain library calls they replace.

Each was checked on a clinical-size patient (every output byte-identical); these tests keep
them so on small inputs that reach their edges: grid borders, labels that vanish, odd
sizes, grids that only partly overlap.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from dualpet.anatomy import ORGAN_CLASSES, _median3, organ_voxels
from dualpet.geometry import nearest_on_grid
from dualpet.reviewpage import _centroid_voxels


def _slow_nearest(data, data_affine, shape, affine, fill=0):
    """Every voxel centre mapped through the full affine (nearest_on_grid's general path)."""
    to_data = np.linalg.inv(data_affine) @ affine
    ijk = np.indices(shape).reshape(3, -1).T.astype(float)
    m = np.rint(ijk @ to_data[:3, :3].T + to_data[:3, 3]).astype(int)
    ok = np.all((m >= 0) & (m < data.shape), axis=1)
    out = np.full(len(m), fill, dtype=data.dtype)
    out[ok] = data[tuple(m[ok].T)]
    return out.reshape(shape)


@pytest.mark.parametrize(
    "shape, diag, shift, cross",
    [
        ((17, 13, 11), (2.0, 2.0, 3.0), (0.0, 0.0, 0.0), 0.0),  # coarser grid, same origin
        ((40, 30, 20), (0.7, 0.9, 1.1), (-3.3, 5.1, 2.2), 0.0),  # finer, shifted, partly outside
        ((9, 9, 9), (-4.0, 4.0, 2.5), (60.0, -7.0, 3.0), 0.0),  # a flipped axis
        ((23, 19, 7), (4.096002, 4.096002, 3.0), (-2.0, 1.0, 0.0), 2e-15),  # NIfTI's stored cross terms
    ],
)
def test_nearest_on_axis_aligned_grids_is_the_general_mapping(shape, diag, shift, cross):
    rng = np.random.default_rng(3)
    data = rng.integers(0, 200, size=(31, 27, 19)).astype(np.uint8)
    data_affine = np.diag([1.5, 1.25, 2.0, 1.0])
    data_affine[:3, 3] = [-20.0, 10.0, 5.0]
    affine = np.diag([*diag, 1.0])
    affine[:3, 3] = data_affine[:3, 3] + np.asarray(shift)
    affine[0, 2] = affine[1, 2] = cross
    got = nearest_on_grid(data, data_affine, shape, affine, fill=7)
    assert got.dtype == data.dtype
    np.testing.assert_array_equal(got, _slow_nearest(data, data_affine, shape, affine, fill=7))


def test_nearest_on_a_rotated_grid_takes_the_general_path():
    rng = np.random.default_rng(4)
    data = rng.normal(size=(20, 20, 20)).astype(np.float32)
    angle = np.deg2rad(10.0)
    affine = np.eye(4)
    affine[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    affine[:3, 3] = [2.0, -1.0, 0.5]
    got = nearest_on_grid(data, np.eye(4), (15, 18, 12), affine, fill=-1.0)
    np.testing.assert_array_equal(got, _slow_nearest(data, np.eye(4), (15, 18, 12), affine, fill=-1.0))


def test_organ_voxels_is_isin_of_the_organs_classes():
    rng = np.random.default_rng(5)
    labels = np.asfortranarray(rng.integers(0, 120, size=(30, 20, 10)).astype(np.int32))  # F-order, as read
    for names in (("aorta",), ("lung_left", "lung_right"), ("liver", "spleen", "urinary_bladder")):
        classes = [v for n in names for v in ORGAN_CLASSES[n]]
        np.testing.assert_array_equal(organ_voxels(labels, *names), np.isin(labels, classes))


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 5, 3), (17, 12, 9)])
def test_median3_is_scipys_median_filter(shape):
    # scipy's default 'reflect' edge repeats the edge voxel for a 3-wide window, as ITK's
    # replicated edge does; ties and repeated values included (integers in a float image)
    rng = np.random.default_rng(6)
    volume = rng.integers(-1000, 1000, size=shape).astype(np.float32)
    volume[::2] += rng.normal(size=volume[::2].shape).astype(np.float32)
    np.testing.assert_array_equal(_median3(volume), ndimage.median_filter(volume, size=3))


def test_centroid_voxels_are_the_centres_of_mass():
    rng = np.random.default_rng(7)
    voi = np.zeros((40, 50, 60), dtype=np.uint8)
    for label in range(1, 30):  # boxes that overlap, at the grid's edges too
        c = rng.integers(0, 40, 3)
        voi[c[0] : c[0] + rng.integers(1, 9), c[1] : c[1] + rng.integers(1, 9), c[2] : c[2] + rng.integers(1, 9)] = (
            label
        )
    voi[voi == 3] = 4  # a label without voxels (numbering with a gap)
    labels = [int(v) for v in np.unique(voi) if v]
    expected = {
        lab: tuple(int(round(c)) for c in cent)
        for lab, cent in zip(labels, ndimage.center_of_mass(voi > 0, voi, labels))
    }
    assert len(labels) < 29  # the test reaches a vanished label
    assert _centroid_voxels(voi) == expected
    assert _centroid_voxels(np.zeros((4, 4, 4), dtype=np.uint8)) == {}


def test_organ_maps_are_read_in_their_stored_type(tmp_path):
    import nibabel as nib

    from dualpet.errors import DualpetInputError
    from dualpet.nifti import read_label_image

    labels = np.zeros((4, 5, 6), dtype=np.uint8)
    labels[1, 2, 3] = 52
    nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "map.nii.gz")
    data, _ = read_label_image(tmp_path / "map.nii.gz", "organ map", dtype=np.uint8)
    assert data.dtype == np.uint8 and np.array_equal(data, labels)
    data, _ = read_label_image(tmp_path / "map.nii.gz", "organ map")  # the default: int32, as before
    assert data.dtype == np.int32 and np.array_equal(data, labels)
    # a float map is rounded; one beyond 0-255 cannot be an organ map
    floats = labels.astype(np.float32) + 0.2
    nib.save(nib.Nifti1Image(floats, np.eye(4)), tmp_path / "float.nii.gz")
    data, _ = read_label_image(tmp_path / "float.nii.gz", "organ map", dtype=np.uint8)
    assert np.array_equal(data, labels)
    wide = labels.astype(np.int16)
    wide[0, 0, 0] = 300
    nib.save(nib.Nifti1Image(wide, np.eye(4)), tmp_path / "wide.nii.gz")
    with pytest.raises(DualpetInputError, match="0-255"):
        read_label_image(tmp_path / "wide.nii.gz", "organ map", dtype=np.uint8)


def test_ct_voxels_are_kept_as_stored_when_whole(tmp_path):
    """as_stored: an unscaled int16 CT as it is (no float copy); a scaled one, and float64
    data, as float32 (never float64), with the scaled values."""
    import nibabel as nib

    from dualpet.nifti import as_stored, load_nifti

    hu = np.arange(-1000, 1400, 20, dtype=np.int16).reshape(4, 5, 6)
    nib.save(nib.Nifti1Image(hu, np.eye(4)), tmp_path / "ct.nii.gz")
    got = as_stored(load_nifti(tmp_path / "ct.nii.gz"))
    assert got.dtype == np.int16 and np.array_equal(got, hu)
    scaled = nib.Nifti1Image(hu, np.eye(4))
    scaled.header.set_slope_inter(0.5, -10.0)
    nib.save(scaled, tmp_path / "scaled.nii.gz")
    got = as_stored(load_nifti(tmp_path / "scaled.nii.gz"))
    assert got.dtype == np.float32 and np.array_equal(got, hu.astype(np.float32) * 0.5 - 10.0)
    nib.save(nib.Nifti1Image(hu.astype(np.float64) + 0.25, np.eye(4)), tmp_path / "double.nii.gz")
    got = as_stored(load_nifti(tmp_path / "double.nii.gz"))
    assert got.dtype == np.float32 and np.array_equal(got, hu.astype(np.float32) + 0.25)


def test_nearest_at_rounding_ties_follows_the_cross_terms():
    # PET-like grid (4 mm) over CT-like data (2 mm) offset by 1 mm: every centre maps to a
    # half-way point, where NIfTI's 2e-15 cross terms decide the rounding (regression: the
    # one-index-per-axis path rounded those ties half to even and moved detection's CT)
    rng = np.random.default_rng(8)
    data = rng.integers(0, 50, size=(24, 24, 12)).astype(np.int16)
    data_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine = np.diag([4.0, 4.0, 2.0, 1.0])
    affine[:3, 3] = [1.0, 1.0, 0.0]
    affine[0, 2] = affine[1, 2] = 2e-15
    got = nearest_on_grid(data, data_affine, (12, 12, 12), affine)
    np.testing.assert_array_equal(got, _slow_nearest(data, data_affine, (12, 12, 12), affine))
    affine[0, 2] = affine[1, 2] = 0.0  # exactly axis-aligned: the ties round alike either way
    got = nearest_on_grid(data, data_affine, (12, 12, 12), affine)
    np.testing.assert_array_equal(got, _slow_nearest(data, data_affine, (12, 12, 12), affine))


def _organ_map(shape, boxes, rng):
    """A label map with blobs of the given organs in the given boxes (some on the grid's border)."""
    labels = np.zeros(shape, dtype=np.uint8)
    for name, box in boxes:
        block = rng.random(tuple(s.stop - s.start for s in box)) < 0.7
        labels[box][block] = ORGAN_CLASSES[name][0]
    return labels


@pytest.mark.parametrize("at_border", [False, True])
def test_grown_masks_and_the_bowel_zone_are_the_whole_grids(at_border):
    from dualpet.detection.physiology import BOWEL_CLEAR_MM, PHYSIOLOGICAL, _grown, bowel_zone, physiological_masks
    from dualpet.detection.regions import STRUCTURE

    rng = np.random.default_rng(5)
    edge = 0 if at_border else 6
    boxes = [
        ("aorta", np.s_[20:26, 14:20, edge:30]),
        ("vertebrae", np.s_[18:28, 24:32, 4:36]),
        ("kidney_left", np.s_[30:38, 20:30, 8:16]),
        ("liver", np.s_[edge : edge + 12, 4:16, 10:20]),
        ("lung_left", np.s_[24:34, 6:14, 30:40]),
        ("heart", np.s_[14:22, 4:12, 26:34]),
    ]
    labels = _organ_map((40, 36, 40), boxes, rng)
    affine = np.diag([4.0, 4.0, 3.0, 1.0])
    for mask in (labels == ORGAN_CLASSES["aorta"][0], np.zeros(labels.shape, bool)):
        np.testing.assert_array_equal(_grown(mask), ndimage.binary_dilation(mask, structure=STRUCTURE))
    for group, (grown, organ) in physiological_masks(labels, list(PHYSIOLOGICAL)).items():
        np.testing.assert_array_equal(grown, ndimage.binary_dilation(organ, structure=STRUCTURE), err_msg=group)
    # bowel_zone's distance, on the whole grid (its lung planes cut as bowel_zone does)
    near = organ_voxels(labels, "aorta", "vertebrae", "kidney_left", "kidney_right")
    whole = ndimage.distance_transform_edt(~near, sampling=(4.0, 4.0, 3.0)) > BOWEL_CLEAR_MM
    whole &= ~organ_voxels(labels, "liver", "spleen", "urinary_bladder")
    whole[:, :, 30:] = False  # the lung's planes and those above
    np.testing.assert_array_equal(bowel_zone(labels, affine), whole)


def test_liver_centres_use_the_whole_grids_depth(monkeypatch):
    """liver_centres's transform on the liver's box gives the centres the whole grid's does,
    also for a liver cut by the grid's border."""
    import dualpet.background as bg

    rng = np.random.default_rng(6)
    for box in (np.s_[2:40, 6:44, 4:30], np.s_[0:40, 0:44, 0:30]):
        labels = np.zeros((60, 50, 34), dtype=np.uint8)
        labels[box] = ORGAN_CLASSES["liver"][0]
        holes = rng.integers(0, [s.stop - s.start for s in box], size=(6, 3))
        labels[tuple((holes + [s.start for s in box]).T)] = 0  # holes: local depths
        affine = np.diag([3.0, 3.0, 3.0, 1.0])
        got = bg.liver_centres(labels, affine)
        monkeypatch.setattr(bg, "box_around", lambda mask, margin=0: tuple(slice(0, n) for n in mask.shape))
        expected = bg.liver_centres(labels, affine)  # the transform on the whole grid
        monkeypatch.undo()
        assert got[1] == expected[1] is None and len(got[0]) == len(expected[0]) > 1
        np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(expected[0]))


@pytest.mark.parametrize("average", [False, True])
def test_ct_on_pet_grid_from_stored_whole_hu_is_the_float_ct(average):
    """A CT kept as its stored int16 gives the PET-grid CT of its float32 copy, bit for bit."""
    from dualpet.geometry import ct_on_pet_grid

    rng = np.random.default_rng(7)
    hu = rng.integers(-1024, 3000, size=(41, 37, 13)).astype(np.int16)
    ct_affine = np.diag([0.98, 0.98, 3.0, 1.0])
    pet_affine = np.diag([4.07, 4.07, 3.0, 1.0])
    pet_affine[:3, 3] = [1.3, -0.4, 0.0]
    got = ct_on_pet_grid(hu, ct_affine, (11, 10, 13), pet_affine, average=average)
    want = ct_on_pet_grid(hu.astype(np.float32), ct_affine, (11, 10, 13), pet_affine, average=average)
    assert got.dtype == want.dtype == np.float32
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "factors, shape",
    [
        ((3, 3, 1), (33, 30, 7)),  # whole blocks
        ((3, 3, 1), (31, 29, 7)),  # voxels past the last whole block: the edge repeated
        ((2, 3, 4), (9, 10, 13)),
        ((1, 1, 1), (5, 6, 7)),
    ],
)
def test_full_grid_labels_are_the_repeated_work_grid(factors, shape):
    """The organ map on the CT's grid is the work grid's repeated over each block and, past
    the last whole block, its edge (np.repeat, then np.pad 'edge'), in Fortran order."""
    from dualpet.anatomy import to_full_grid

    work_shape = tuple(s // f for s, f in zip(shape, factors))
    work = np.random.default_rng(3).integers(0, 255, size=work_shape).astype(np.uint8)
    want = work
    for a, f in enumerate(factors):
        want = np.repeat(want, f, axis=a)
    want = np.pad(want, [(0, s - w) for s, w in zip(shape, want.shape)], mode="edge")
    got = to_full_grid(work, factors, shape)
    assert got.flags.f_contiguous and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "ct_spacing, pet_spacing, pet_shape, pet_origin",
    [
        ((0.98, 0.98, 3.0), (4.07, 4.07, 3.0), (11, 10, 21), (1.3, -0.4, 0.0)),  # 4 x 4 x 1, slabs cut
        ((1.0, 1.0, 1.0), (2.0, 2.0, 2.0), (12, 11, 9), (0.5, 0.5, 0.5)),  # 2 x 2 x 2: slices averaged
        ((0.9, 0.9, 3.0), (2.7, 2.7, 3.0), (13, 14, 21), (-0.3, 0.2, 0.0)),  # 3 x 3 x 1: rounded running sums
        ((1.0, 2.0, 3.0), (3.0, 2.0, 3.0), (12, 14, 21), (0.0, 0.0, 0.0)),  # 3 x 1 x 1
        ((0.98, 0.98, 3.0), (4.07, 4.07, 3.0), (15, 14, 30), (-9.0, 7.0, -12.0)),  # partly outside the CT
        ((0.98, 0.98, 5.0), (4.07, 4.07, -3.0), (11, 10, 30), (1.3, -0.4, 90.0)),  # PET slices finer, reversed
        ((0.98, 0.98, 3.0), (-4.07, 4.07, 3.0), (11, 10, 21), (40.0, -0.4, 0.0)),  # PET columns reversed
        ((1.0, 1.0, 2.0), (0.5, 3.0, 4.0), (60, 12, 9), (0.2, 0.5, 1.0)),  # PET rows finer: shared lines
    ],
)
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
@pytest.mark.parametrize("order", ["C", "F"])
def test_ct_averaged_at_pet_voxels_is_the_filtered_ct_sampled(
    ct_spacing, pet_spacing, pet_shape, pet_origin, dtype, order
):
    """The CT averaged over each PET voxel, filtered only along the lines the PET's voxels
    need, is ndimage's uniform filter of the whole CT sampled at the PET voxels, bit for
    bit (-1000 HU outside the CT), whatever the CT's memory order, with grids whose axes
    run opposite ways and PET voxels finer than the CT's (lines shared)."""
    from scipy import ndimage

    from dualpet.geometry import ct_on_pet_grid, nearest_on_grid, voxel_spacing

    rng = np.random.default_rng(5)
    hu = rng.integers(-1024, 3000, size=(37, 41, 19)).astype(dtype)
    if dtype == np.float32:
        hu += rng.random(hu.shape, dtype=np.float32)  # fractional HU: the filter's sums are rounded
    hu = np.asarray(hu, order=order)
    ct_affine, pet_affine = np.diag([*ct_spacing, 1.0]), np.diag([*pet_spacing, 1.0])
    pet_affine[:3, 3] = pet_origin
    size = np.maximum(np.rint(voxel_spacing(pet_affine) / voxel_spacing(ct_affine)).astype(int), 1)
    whole = ndimage.uniform_filter(hu, size, output=np.float32, mode="nearest")
    want = nearest_on_grid(whole, ct_affine, pet_shape, pet_affine, fill=-1000.0)
    got = ct_on_pet_grid(hu, ct_affine, pet_shape, pet_affine, average=True)
    assert got.dtype == want.dtype == np.float32 and (want > -1000.0).any()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "spacing",
    [
        (0.98, 0.98, 3.0),  # a clinical CT: 3 x 3 x 1 blocks
        (1.5, 1.5, 1.5),  # thin slices: 2 x 2 x 2
        (0.19, 0.19, 3.0),  # 16 x 16 x 1 = 256 to a block: the most summed as integers
        (0.3, 0.3, 0.3),  # 10 x 10 x 10: past that bound, averaged from a float32 copy
    ],
)
def test_work_grid_from_stored_whole_hu_is_the_float_ct(spacing):
    """The organ map's work grid from the CT's stored int16 (extreme values included, in
    NIfTI's Fortran order, sizes not multiples of the block) is that of its float32 copy,
    bit for bit."""
    from dualpet.anatomy import work_grid

    rng = np.random.default_rng(11)
    f = [max(round(3.0 / s), 1) for s in spacing[:2]] + [max(round(3.0 / spacing[2]), 1) if spacing[2] < 2 else 1]
    shape = tuple(3 * fa + 1 for fa in f)
    values = np.array([32767, 32765, 30001, -32768, -1024, 41], np.int16)  # int16's extremes
    hu = np.asfortranarray(rng.choice(values, size=shape))
    affine = np.diag([*spacing, 1.0])
    got, got_affine, got_f = work_grid(hu, affine)
    want, want_affine, want_f = work_grid(hu.astype(np.float32), affine)
    assert got_f == want_f == f and got.dtype == want.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_affine, want_affine)


@pytest.mark.parametrize(
    "radii",
    [
        (6, 6, 4),  # the heart's 18 mm core on a 3 x 3 x 4.5 mm work grid
        (8, 8, 7),
        (9, 9, 6),
        (13, 13, 2),  # ties: 5-12-13 offsets lie exactly on the surface (kept, "<= 1")
        (2, 1, 3),
    ],
)
@pytest.mark.parametrize("at_border", [False, True])
def test_ball_opening_and_dilation_are_scipys_with_the_ball(radii, at_border):
    """The heart's opening by a large ball, from distance transforms, is ndimage's opening
    and dilation with :func:`_ball`'s structuring element; masks reach the grid's border
    (outside it is background for the erosion, as in ndimage)."""
    from dualpet.anatomy import _ball, _ball_dilation, _ball_opening, _ellipsoid_metric

    ball = _ball(1.0, (1.0 / radii[0], 1.0 / radii[1], 1.0 / radii[2]))
    assert ball.shape == tuple(2 * r + 1 for r in radii)
    (w0, w1, w2), big_r = _ellipsoid_metric(radii)
    # the element is the ellipsoid with its surface, every surface offset included
    a = np.argwhere(np.ones(ball.shape, bool)) - np.asarray(radii)
    inside = (a[:, 0] / radii[0]) ** 2 + (a[:, 1] / radii[1]) ** 2 + (a[:, 2] / radii[2]) ** 2 <= 1 + 1e-12
    assert np.array_equal(ball.ravel(), inside)
    rng = np.random.default_rng(sum(radii))
    shape = (3 * radii[0] + 9, 3 * radii[1] + 7, 3 * radii[2] + 5)
    blobs = ndimage.gaussian_filter(rng.random(shape), np.asarray(radii) * 0.7)  # blobs of the ball's size
    mask = blobs > np.quantile(blobs, 0.35)
    centre = rng.integers(np.asarray(radii) + 2, np.asarray(shape) - np.asarray(radii) - 2)
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    mask |= sum(((g - c) / (1.3 * r)) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1  # one mass the ball fits
    if not at_border:
        mask[:2], mask[-2:], mask[:, :2], mask[:, -2:], mask[:, :, :2], mask[:, :, -2:] = (False,) * 6
    else:
        mask[:, :, 0] = True
    opened = ndimage.binary_opening(mask, structure=ball)
    assert opened.any() and not opened.all()  # the test reaches both outcomes
    assert np.array_equal(_ball_opening(mask, radii), opened)
    seed = np.zeros(shape, bool)
    seed[tuple(rng.integers(0, n) for n in shape)] = True
    seed[0, 0, 0] = True
    assert np.array_equal(_ball_dilation(seed, radii), ndimage.binary_dilation(seed, structure=ball))
    assert not _ball_dilation(np.zeros(shape, bool), radii).any()
    assert (w0 * radii[0]) == (w1 * radii[1]) == (w2 * radii[2]) == big_r


def _whole_plane_round_candidates(c, k, target, window, exclude, search_mm, radius_mm):
    """The round candidates computed on the whole plane (the code before issue 27's box)."""
    from dualpet import anatomy as an

    m = (c.g[:, :, k] > window[0]) & (c.g[:, :, k] < window[1]) & ~exclude[:, :, k]
    holes, n = ndimage.label(ndimage.binary_fill_holes(m) & ~m)
    if n:
        small = np.flatnonzero(np.bincount(holes.ravel()) * c.spacing[0] * c.spacing[1] <= an.SMALL_HOLE_MM2)
        m |= np.isin(holes, small[small > 0])
    dist = ndimage.distance_transform_edt(m, sampling=c.spacing[:2])
    peaks = (dist >= radius_mm[0]) & (dist <= radius_mm[1]) & (an._plane_distance(c, target) <= search_mm)
    peaks &= dist >= ndimage.maximum_filter(dist, size=3) - 1e-6
    out = []
    for i, j in sorted(zip(*np.nonzero(peaks)), key=lambda ij: -dist[ij]):
        xy, r = np.array([c.x[i], c.y[j]]), float(dist[i, j])
        if any(np.linalg.norm(xy - o[0]) < o[1] for o in out):
            continue
        d = an._plane_distance(c, xy)
        g = c.g[:, :, k]
        ring = (d > r + 3.0) & (d <= r + 9.0)
        centre = float(np.median(g[d <= max(r - 4.0, c.spacing[0])]))
        rim = g[(d > r) & (d <= r + 4.0)]
        inner = g[(d > r - 4.0) & (d <= r) & m]
        bony = np.mean(rim > max(an.CORTEX_HU, an.CORTEX_OVER_LUMEN * centre)) >= an.CORTEX_SHARE
        bony |= inner.size > 0 and float(np.percentile(inner, 75)) >= an.CORTEX_RING_OVER_CENTRE * centre and centre > 0
        if ring.any() and m[ring].mean() <= an.AORTA_ANNULUS_MAX and not bony:
            out.append((xy, r))
    return out, m


@pytest.mark.parametrize("spacing", [(2.93, 2.93, 3.0), (2.2, 2.2, 5.0), (4.0, 4.0, 2.0)])
def test_round_candidates_in_their_box_are_the_whole_planes(spacing):
    """Issue 27: the aorta's round candidates are computed in the box of the plane they can
    reach. Planes of discs (vessels, some in a cortex), bands and noise holes, some cut by
    the box's edge, targets near the plane's border and outside it: the same candidates,
    and the same window mask wherever a candidate's tests look."""
    from types import SimpleNamespace

    from dualpet import anatomy as an

    rng = np.random.default_rng(int(spacing[0] * 10))
    n = (96, 88, 3)
    x = -140.0 + spacing[0] * np.arange(n[0])
    y = -120.0 + spacing[1] * np.arange(n[1])
    g = np.full(n, -80.0, np.float32) + rng.normal(0, 8, n).astype(np.float32)  # fat
    xx, yy = np.meshgrid(x, y, indexing="ij")
    for _ in range(14):  # vessels of 4-24 mm radius, a third held in a cortex
        cx, cy, r = rng.uniform(x[0], x[-1]), rng.uniform(y[0], y[-1]), rng.uniform(4.0, 24.0)
        d = np.hypot(xx - cx, yy - cy)
        g[..., 1][d <= r] = rng.uniform(35.0, 60.0)
        if rng.random() < 0.33:
            g[..., 1][(d > r) & (d <= r + 3.0)] = 700.0
    g[..., 1][(np.abs(xx - 20.0) < 8.0)] = 45.0  # a band, elongated
    holes = rng.random(n[:2]) < 0.01  # noise holes of one voxel
    g[..., 1][holes] = -200.0
    c = SimpleNamespace(g=g, x=x, y=y, spacing=np.asarray(spacing))
    exclude = np.zeros(n, bool)
    exclude[:4, :, :] = True
    found_any = 0
    for target in (
        [0.0, 0.0],
        [x[2], y[-3]],
        [x[-1] + 20.0, 0.0],
        [x[0] - 500.0, y[0]],
        *rng.uniform(-150, 150, (8, 2)),
    ):
        target = np.asarray(target)
        for window, search in ((an.BLOOD_HU, an.AORTA_SEARCH_MM), (an.BLOOD_HU, 60.0)):
            got, m = an._round_candidates(c, 1, target, window, exclude, search, an.AORTA_RADIUS_MM)
            want, m_whole = _whole_plane_round_candidates(c, 1, target, window, exclude, search, an.AORTA_RADIUS_MM)
            assert len(got) == len(want) and all(
                np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(got, want)
            ), (target, got, want)
            near = an._plane_distance(c, target) <= search + an.AORTA_RADIUS_MM[1] + 9.0 + 2 * max(spacing)
            assert np.array_equal(m[near], m_whole[near])
            found_any += len(got)
    assert found_any > 5  # the planes hold candidates, not only refusals
