"""The classical organ map on a real CT, against reference labels this project did not make.

The CT is the TotalSegmentator example (tests/data/totalsegmentator-example, Apache-2.0):
a real unenhanced upper-abdominal slab of 30 slices of 3 mm, with TotalSegmentator's own
labels as the reference (a model's output, Dice about 0.9 against experts for these
organs, so a Dice of 0.85 against it is close to the agreement of two good readers).
"""

from __future__ import annotations

import numpy as np
import pytest
import realct

from dualpet.anatomy import ORGAN_CLASSES, segment_ct

#: TotalSegmentator v2 classes of each organ dualpet maps (the reference's side).
REFERENCE = {"liver": (5,), "spleen": (1,), "kidney_right": (2,), "kidney_left": (3,), "aorta": (52,)}
#: Issue 21's goals on real CT: liver 0.85, spleen 0.80, kidneys 0.75, aorta 0.70.
#: Measured on this slab: liver 0.88, spleen 0.85, kidneys 0.82 / 0.85, aorta 0.80.
GOALS = {"liver": 0.85, "spleen": 0.80, "kidney_right": 0.75, "kidney_left": 0.75, "aorta": 0.70}
#: Back muscles (autochthonous, iliopsoas): as dense as the kidneys on plain CT.
MUSCLES = (86, 87, 88, 89)


def _dice(a, b):
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module")
def real():
    return realct.load()


@pytest.fixture(scope="module")
def plain(real):
    hu, affine, _ = real
    return segment_ct(hu, affine)


def test_organs_on_real_ct_meet_the_goals(real, plain):
    _, _, ref = real
    labels, report = plain
    assert report["contrast_enhanced"] is False  # unenhanced: aorta about 43 HU
    for name, least in GOALS.items():
        assert report[name]["found"], (name, report[name])
        d = _dice(np.isin(ref, REFERENCE[name]), np.isin(labels, ORGAN_CLASSES[name]))
        assert d >= least, (name, round(d, 3))


def test_kidneys_are_not_the_back_muscles(real, plain):
    """The erector spinae and psoas have the kidneys' density on plain CT (here 25 and 39
    HU against 14-20): at most 2 % of the kidney labels lie in them (the boundary voxels
    the reference gives to a muscle touching the kidney)."""
    _, _, ref = real
    labels, _ = plain
    kidneys = np.isin(labels, ORGAN_CLASSES["kidney_right"] + ORGAN_CLASSES["kidney_left"])
    assert (kidneys & np.isin(ref, MUSCLES)).sum() <= 0.02 * kidneys.sum()


def test_contrast_enhanced_real_anatomy(real):
    """The same real anatomy with portal-venous enhancement added where the reference puts
    the vessels (+180 HU), kidneys (+140), liver (+60), spleen (+75) and pancreas (+50): the
    contrast is recognised, the aorta found although it now matches the vertebral bodies in
    density and touches them, and the organs hold. Bounds: the goals, except 0.65 for the
    kidneys (one added value for the whole kidney, without the cortex-medulla contrast real
    enhancement gives; measured 0.85 and 0.72)."""
    hu, affine, ref = real
    labels, report = segment_ct(realct.enhanced(hu, ref), affine)
    assert report["contrast_enhanced"] is True
    for name, least in {**GOALS, "kidney_right": 0.65, "kidney_left": 0.65}.items():
        d = _dice(np.isin(ref, REFERENCE[name]), np.isin(labels, ORGAN_CLASSES[name]))
        assert d >= least, (name, round(d, 3))


@pytest.mark.parametrize("planes", [slice(0, 15), slice(15, 30), slice(5, 25)], ids=["lower", "upper", "middle"])
def test_partial_field_of_view_never_puts_an_organ_elsewhere(real, planes):
    """Half the slab (no lungs in the lower half, no kidneys' lower poles in the upper):
    every organ reported found lies where the reference has it (at least 70 % of its
    voxels inside the reference's organ, dilated by one voxel for the boundary), and an
    organ the reference has nowhere in view is not found."""
    from scipy import ndimage

    hu, aff, ref = realct.planes(*real, planes)
    labels, report = segment_ct(hu, aff)
    for name, classes in REFERENCE.items():
        ours, theirs = np.isin(labels, ORGAN_CLASSES[name]), np.isin(ref, classes)
        if not report[name]["found"]:
            continue
        assert theirs.any(), (name, "found but not in view")
        inside = (ours & ndimage.binary_dilation(theirs)).sum() / ours.sum()
        assert inside >= 0.7, (name, round(float(inside), 3))


@pytest.mark.parametrize("kind", ["air", "water_cylinder", "one_slice"])
def test_no_anatomy_no_crash(kind):
    """A CT with nothing to find gives a map with the organs marked not found."""
    n = (40, 40, 20)
    hu = np.full(n, -1000.0, np.float32)
    if kind != "air":
        ii, jj = np.indices(n[:2])
        hu[(ii - 20) ** 2 + (jj - 20) ** 2 <= 15**2] = 0.0
    if kind == "one_slice":
        hu = hu[:, :, :1]
    labels, report = segment_ct(hu, np.diag([3.0, 3.0, 3.0, 1.0]))
    assert labels.shape == hu.shape
    for name in ("liver", "spleen", "kidney_left", "kidney_right", "heart", "aorta", "lung_left", "lung_right"):
        assert not report[name]["found"], name


@pytest.mark.parametrize(
    ("enhanced", "pads"),
    [
        (False, ((60, 60), (60, 60))),
        (True, ((60, 60), (60, 60))),
        # lopsided: the box starts at the other parity (the halves column_x rounds), is cut
        # by the grid's edge on one side (5 < BODY_BOX_MARGIN) and not on the other
        (False, ((13, 71), (37, 5))),
        (True, ((71, 13), (5, 37))),
    ],
)
def test_rules_on_the_bodys_columns_give_the_whole_grids_map(real, enhanced, pads, monkeypatch):
    """The organ rules run on the body's columns only (with BODY_BOX_MARGIN voxels of air
    around): on the real slab set in a wide field of view (air around it, as a 500 mm scan
    field holds a patient), the map and the report are exactly those of the rules run on
    the whole grid, and the box is much smaller than the grid."""
    import json

    from dualpet import anatomy

    hu, aff, ref = real
    if enhanced:
        hu = realct.enhanced(hu, ref)
    wide = np.pad(hu, (*pads, (0, 0)), constant_values=-1024.0)
    wide_aff = aff.copy()
    wide_aff[:, 3] = aff @ np.array([-pads[0][0], -pads[1][0], 0, 1.0])
    boxes = []
    columns = anatomy._body_columns
    monkeypatch.setattr(anatomy, "_body_columns", lambda body: boxes.append(columns(body)) or boxes[-1])
    cut, cut_report = segment_ct(wide, wide_aff)
    (box,) = boxes
    assert box is not None and (box[0].stop - box[0].start) * (box[1].stop - box[1].start) < 0.7 * wide[..., 0].size
    monkeypatch.setattr(anatomy, "_body_columns", lambda body: None)
    whole, whole_report = segment_ct(wide, wide_aff)
    assert np.array_equal(cut, whole)
    assert json.dumps(cut_report, sort_keys=True) == json.dumps(whole_report, sort_keys=True)
    assert cut_report["liver"]["found"] and cut_report["aorta"]["found"]


def test_a_cut_context_picks_the_whole_grids_column_for_a_half_way_mean():
    """Python rounds halves to even, so a mean column index of k + 0.5 rounds differently
    once the columns are renumbered from an odd start: column_x rounds in the whole work
    grid's numbering, and a context cut from column 3 picks the whole grid's column."""
    from dualpet import anatomy

    whole = anatomy._Context(np.zeros((10, 8, 4), np.float32), np.diag([3.0, 3.0, 3.0, 1.0]))
    cut = whole.cropped((slice(3, 9), slice(2, 7), slice(None)))
    for local in ([0, 1], [1, 2], [0, 3], [2, 2, 3, 3]):
        assert cut.column_x(np.array(local)) == whole.column_x(np.array(local) + 3), local
