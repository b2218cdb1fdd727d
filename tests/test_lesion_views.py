"""The review page's per-lesion views (issue 22): drawn in millimetres from the CT's own
grid, oriented as a reader expects, with the VOI outlined, a scale bar that measures what
it says and a colour bar that names the SUV scale.

The study: a CT of 0.98 x 0.98 x 3.27 mm voxels (a real thoracic low-dose CT) and a PET of
4 x 4 x 2 mm, both centred on the origin, with a box-shaped VOI whose faces lie on PET
voxel boundaries (its true extent is known to the millimetre)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

from dualpet.lesionviews import (
    OUTLINE_RGB,
    PLANES,
    SCALE_BAR_MM,
    TILE_PX,
    data_uri,
    layout,
    lesion_picture,
    suv_ticks,
    view_mm,
    window_for,
)

CT_SPACING, CT_SHAPE = np.array([0.98, 0.98, 3.27]), (160, 160, 40)
PET_SPACING, PET_SHAPE = np.array([4.0, 4.0, 2.0]), (40, 40, 64)
FOV = 80.0
MM_PER_PX = FOV / TILE_PX


def _affine(spacing, shape):
    """Voxel -> LPS with the volume centred on the origin."""
    a = np.diag([*spacing, 1.0])
    a[:3, 3] = -(np.asarray(shape) - 1) / 2.0 * spacing
    return a


def _world(shape, spacing):
    return np.indices(shape).transpose(1, 2, 3, 0) * spacing - (np.asarray(shape) - 1) / 2.0 * spacing


def _study():
    ct_xyz = _world(CT_SHAPE, CT_SPACING)
    ct = np.full(CT_SHAPE, 40, np.int16)  # soft tissue
    # a plate one CT voxel thick (0.98 mm) at x = +10 mm: at PET resolution it would be a 4 mm smear
    plate = np.abs(ct_xyz[..., 0] - 10.29) < 0.49
    ct[plate] = 1000
    pet_xyz = _world(PET_SHAPE, PET_SPACING)
    suv = np.full(PET_SHAPE, 1.0, np.float32)
    # the VOI: 24 mm along x and y (6 PET voxels), 24 mm along z (12 voxels), around the origin
    box = np.all(np.abs(pet_xyz) < 12.0, axis=-1)
    suv[box] = 6.0
    voi = box.astype(np.uint16) * 3
    # a marker anterior (-y), superior (+z) and on the patient's right (-x) of the lesion
    marker = np.linalg.norm(pet_xyz - np.array([-24.0, -24.0, 24.0]), axis=-1) < 5.0
    suv[marker] = 9.0
    return {
        "suv": suv,
        "affine": _affine(PET_SPACING, PET_SHAPE),
        "ct": ct,
        "ct_affine": _affine(CT_SPACING, CT_SHAPE),
        "voi": voi,
    }


def _picture(study, voi_label=3, centre=(0.0, 0.0, 0.0), window="soft tissue"):
    block = {
        "caption": "fdg",
        "study": study,
        "centre": np.asarray(centre),
        "fov_mm": FOV,
        "window": window,
        "suv_max": 10.0,
        "voi_label": voi_label,
    }
    return lesion_picture([block, {**block, "caption": "pentixafor"}])


def _tile(img, b, r, c):
    x, y = layout(2)[1](b, r, c)
    return img[y : y + TILE_PX, x : x + TILE_PX]


def _outline_box(tile):
    rows, cols = np.nonzero(np.all(tile == OUTLINE_RGB, axis=-1))
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def test_every_view_shows_the_voi_in_millimetres():
    """The 24 x 24 x 24 mm VOI is drawn 24 mm wide and tall in each plane (on 0.5 mm
    pixels: 48 px; 2 px of tolerance for the outline drawn on the VOI's edge pixels and
    the pixel grid's phase), for both tracers' blocks."""
    img = _picture(_study())
    assert img.shape[:2] == layout(2)[0][::-1]
    for b in range(2):
        for r, plane in enumerate(PLANES):
            for c in range(3):
                h, w = _outline_box(_tile(img, b, r, c))
                assert h * MM_PER_PX == pytest.approx(24.0, abs=2 * MM_PER_PX), (plane, c)
                assert w * MM_PER_PX == pytest.approx(24.0, abs=2 * MM_PER_PX), (plane, c)


def test_the_ct_is_drawn_at_its_own_resolution():
    """A plate one CT voxel (0.98 mm) thick shows as a line at most 3 display pixels
    (1.5 mm) wide at nearly full brightness in the axial CT: drawn from the PET's 4 mm grid
    it would be at least 8 pixels wide and at a quarter of its contrast."""
    tile = _tile(_picture(_study()), 0, 0, 0).astype(float)
    row = tile[TILE_PX - 30, :, 0]  # a row low in the tile, clear of labels and the VOI
    bright = np.nonzero(row > 0.75 * 255)[0]  # soft tissue (40 HU) sits at mid grey in its window
    assert 1 <= len(bright) <= 3
    assert row.max() > 0.9 * 255
    x_mm = (bright.mean() + 0.5) * MM_PER_PX - FOV / 2  # columns run from the patient's right (-x)
    assert x_mm == pytest.approx(10.29, abs=MM_PER_PX)


@pytest.mark.parametrize("plane_row", [0, 1, 2])
def test_views_are_oriented_as_a_reader_expects(plane_row):
    """The marker anterior, superior and to the patient's right of the lesion shows in the
    upper left quadrant of every view: axial (anterior up, right on the viewer's left),
    coronal (superior up, right on the left) and sagittal (superior up, anterior on the
    left). It is the hottest spot, so in the PET tile (inverted grey) the darkest."""
    study_marker = np.array([-24.0, -24.0, 24.0])
    row_axis, row_sign, col_axis = list(PLANES.values())[plane_row]
    if plane_row == 0:
        centre = (0.0, 0.0, 24.0)
    elif plane_row == 1:
        centre = (0.0, -24.0, 0.0)
    else:
        centre = (-24.0, 0.0, 0.0)
    pet = _tile(_picture(_study(), centre=centre), 0, plane_row, 1)[..., 0].astype(float)
    r, c = np.unravel_index(int(np.argmin(pet)), pet.shape)
    expected_r = (row_sign * (study_marker[row_axis] - centre[row_axis]) + FOV / 2) / MM_PER_PX
    expected_c = (study_marker[col_axis] - centre[col_axis] + FOV / 2) / MM_PER_PX
    assert r < TILE_PX / 2 and c < TILE_PX / 2
    assert abs(r - expected_r) <= 5.0 / MM_PER_PX and abs(c - expected_c) <= 5.0 / MM_PER_PX  # within the 5 mm ball


def test_scale_bar_measures_its_millimetres():
    tile = _tile(_picture(_study()), 0, 0, 0)
    white = np.all(tile >= 250, axis=-1)
    runs = [int(white[y, : TILE_PX // 2].sum()) for y in range(TILE_PX - 14, TILE_PX - 3)]  # left of the plate
    assert max(runs) == SCALE_BAR_MM / MM_PER_PX  # SCALE_BAR_MM on 0.5 mm pixels, to the pixel


def test_a_candidate_without_voi_is_marked_by_a_cross_at_its_peak():
    tile = _tile(_picture(_study(), voi_label=None), 0, 0, 0)
    rows, cols = np.nonzero(np.all(tile == OUTLINE_RGB, axis=-1))
    assert len(rows) and abs(rows.mean() - TILE_PX / 2) < 2 and abs(cols.mean() - TILE_PX / 2) < 2
    assert not np.all(tile[TILE_PX // 2, TILE_PX // 2] == OUTLINE_RGB)  # open in the middle: the peak stays visible


def test_a_block_outside_the_pet_says_so_and_the_other_still_draws():
    study = _study()
    img = lesion_picture(
        [
            {"caption": "fdg", "note": "no VOI in this study"},
            {
                "caption": "pentixafor",
                "study": study,
                "centre": np.zeros(3),
                "fov_mm": FOV,
                "window": "lung",
                "suv_max": 7.5,
                "voi_label": 3,
            },
        ]
    )
    assert np.all(_tile(img, 0, 0, 0) == 255)  # nothing drawn where there is no view
    assert _outline_box(_tile(img, 1, 1, 2))[0] > 0


def test_windows_fields_and_ticks():
    assert window_for("lung") == "lung" and window_for("bone") == "bone"
    assert window_for("liver") == window_for("lymph node") == window_for("") == "soft tissue"
    assert view_mm(0.0) == 80.0 and view_mm(55.0) == 120.0  # a large lesion keeps its surroundings in view
    for top in (5.0, 7.5, 10.0, 12.5, 23.0, 60.0):
        ticks = suv_ticks(top)
        assert ticks[0] == 0.0 and ticks[-1] == pytest.approx(top, abs=0.05)  # the ends of the scale are numbered
        assert 3 <= len(ticks) <= 7 and ticks == sorted(ticks)


def test_the_picture_embeds_and_decodes_at_its_size():
    from PIL import Image

    img = _picture(_study())
    uri = data_uri(img)
    assert uri.startswith("data:image/jpeg;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert decoded.size == (img.shape[1], img.shape[0])
