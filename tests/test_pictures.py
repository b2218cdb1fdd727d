"""Pictures keep physical proportions whatever the voxel sizes (issue 22): every image
panel of the QC pictures is drawn in millimetres, on a CT of 0.98 x 0.98 x 3.27 mm voxels
(a real thoracic low-dose CT) and a PET of 4 x 4 x 2 mm."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

CT_SPACING, CT_SHAPE = (0.98, 0.98, 3.27), (120, 100, 40)
PET_SPACING, PET_SHAPE = (4.0, 4.0, 2.0), (30, 25, 65)


def _affine(spacing):
    return np.diag([*spacing, 1.0])


def _ball(shape, spacing, radius_mm):
    idx = np.indices(shape).transpose(1, 2, 3, 0) * np.asarray(spacing)
    centre = (np.asarray(shape) - 1) * np.asarray(spacing) / 2.0
    return np.linalg.norm(idx - centre, axis=-1) <= radius_mm


@pytest.fixture
def drawn(monkeypatch):
    """The figures saved while the test runs (their panels drawn, as in the PNG)."""
    from matplotlib.figure import Figure

    figures, save = [], Figure.savefig

    def keep(self, *args, **kwargs):
        save(self, *args, **kwargs)
        figures.append(self)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def _check_proportions(figures, grids):
    """Each image's drawn box has the height : width of the millimetres it shows. The
    grids are (shape, spacing) of the volumes drawn; a panel's axes are told apart by its
    array's size (the shapes' sides are distinct): rows of k are z, rows of j are y."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    checked = 0
    for fig in figures:
        canvas = FigureCanvasAgg(fig)  # the figure was closed after saving: draw it again as saved
        canvas.draw()
        renderer = canvas.get_renderer()
        for ax in fig.axes:
            for im in ax.get_images():
                rows, cols = im.get_array().shape[:2]
                for shape, sp in grids:
                    size = dict(zip(shape, sp))
                    if rows in size and cols in size and rows != cols:
                        box = im.get_window_extent(renderer)
                        drawn_ratio = box.height / box.width
                        true_ratio = rows * size[rows] / (cols * size[cols])
                        # 2 %: the box is rounded to whole pixels (panels of about 200-400 px)
                        assert drawn_ratio == pytest.approx(true_ratio, rel=0.02), (ax.get_title(), rows, cols)
                        checked += 1
                        break
    return checked


def test_background_picture_is_drawn_in_millimetres(tmp_path, drawn):
    from dualpet.background import voi_shape
    from dualpet.qc import background_figure

    ct = np.where(_ball(CT_SHAPE, CT_SPACING, 45.0), 40.0, -1000.0).astype(np.float32)
    suv = np.where(_ball(PET_SHAPE, PET_SPACING, 45.0), 2.0, 0.0).astype(np.float32)
    bg = {"centre_lps": [58.0, 48.0, 64.0], "source": "bloodpool:anatomy (test)", "suvmean": 2.0, "n_voxels": 20}
    png = tmp_path / "bg.png"
    background_figure(ct, _affine(CT_SPACING), suv, _affine(PET_SPACING), bg, png, shape=voi_shape(bg), title="t")
    assert _check_proportions(drawn, [(CT_SHAPE, CT_SPACING), (PET_SHAPE, PET_SPACING)]) == 4


def test_registration_and_organ_map_pictures_are_drawn_in_millimetres(tmp_path, drawn):
    from dualpet.anatomy import anatomy_figure
    from dualpet.qc import figure_cuts, registration_figure

    ct = np.where(_ball(CT_SHAPE, CT_SPACING, 45.0), 40.0, -1000.0).astype(np.float32)
    pet = np.where(_ball(CT_SHAPE, CT_SPACING, 30.0), 3.0, 0.0).astype(np.float32)
    _, cj, ck = figure_cuts(ct)
    views = {
        name: {"reference CT": ct[cut], "index CT": ct[cut], "index PET": pet[cut]}
        for name, cut in (("axial", np.s_[:, :, ck]), ("coronal", np.s_[:, cj, :]))
    }
    registration_figure(views, tmp_path / "qc.png", pet=pet, title="t", spacing=CT_SPACING)
    labels = np.where(_ball(CT_SHAPE, CT_SPACING, 45.0), 200, 0).astype(np.uint8)
    labels[_ball(CT_SHAPE, CT_SPACING, 20.0)] = 5  # a liver
    anatomy_figure(ct, labels, tmp_path / "anatomy.png", title="t", spacing=CT_SPACING)
    # registration: 2 views x (checkerboard, CT, PET overlay); organ map: its views x (CT, labels)
    assert len(drawn[1].axes) >= 3
    assert _check_proportions(drawn, [(CT_SHAPE, CT_SPACING)]) == 6 + 2 * len(drawn[1].axes)


def test_mips_are_tall_enough_and_their_labels_never_overlap(drawn):
    """Coronal and sagittal MIPs of two tracers: each view at least 600 px tall, in
    millimetres, and 20 lesions packed within 40 mm (labels would pile up at their
    centroids) get labels that do not overlap, each joined to its lesion."""
    from dualpet.reviewpage import mip_figure

    suv = np.where(_ball(PET_SHAPE, PET_SPACING, 45.0), 1.0, 0.0).astype(np.float32)
    studies = {t: {"suv": suv, "affine": _affine(PET_SPACING)} for t in ("fdg", "pentixafor")}
    rng = np.random.default_rng(0)
    centroids = {
        t: {n: (int(rng.integers(12, 18)), int(rng.integers(10, 15)), int(rng.integers(25, 45))) for n in range(1, 21)}
        for t in studies
    }
    mip_figure(studies, list(studies), centroids, dict.fromkeys(studies, 5.0), {})
    (fig,) = drawn
    assert _check_proportions(drawn, [(PET_SHAPE, PET_SPACING)]) == 4
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax in fig.axes:
        (im,) = ax.get_images()
        assert im.get_window_extent(renderer).height >= 600
        boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]  # the label, not its leader line
        assert len(boxes) == 20
        for n, a in enumerate(boxes):
            for b in boxes[n + 1 :]:
                assert not a.overlaps(b), (ax.get_title(), a, b)
    # the views, each with its labels, stay apart: no view's labels reach into another view
    extents = [ax.get_tightbbox(renderer) for ax in fig.axes]
    for n, a in enumerate(extents):
        for b in extents[n + 1 :]:
            assert not a.overlaps(b), (a, b)
