"""Quality-control pictures (matplotlib, no display needed)."""

from __future__ import annotations

import numpy as np

from dualpet.io import atomic_path


def checkerboard(a, b, tiles=8):
    """Alternate square tiles of two equally shaped 2D images."""
    ii, jj = np.indices(a.shape)
    size = max(1, min(a.shape) // tiles)
    return np.where(((ii // size) + (jj // size)) % 2 == 0, a, b)


def registration_figure(ref_ct, idx_ct, idx_pet, out_png, *, title="", ref_pet=None):
    """Axial and coronal checkerboards (reference CT / index CT in the reference space) and
    the index PET fused on the reference CT, through the body's centre of mass.

    All volumes are arrays on the reference CT grid, indexed [i, j, k] (column, row, slice
    of axial DICOM images: i runs to the patient's left, j posterior, k superior).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import ndimage

    body = ref_ct > -500
    ci, cj, ck = (int(round(c)) for c in ndimage.center_of_mass(body)) if body.any() else np.array(ref_ct.shape) // 2
    window = dict(cmap="gray", vmin=-400, vmax=400)
    views = {
        "axial": (lambda v: v[:, :, ck].T, "upper"),  # rows = j (anterior at top), columns = i
        "coronal": (lambda v: v[:, cj, :].T, "lower"),  # rows = k (superior at top), columns = i
    }
    fig, axes = plt.subplots(2, 2, figsize=(10, 10), dpi=80)
    pet_max = float(np.percentile(idx_pet[idx_pet > 0], 99.5)) if (idx_pet > 0).any() else 1.0
    for row, (name, (cut, origin)) in enumerate(views.items()):
        ax = axes[row, 0]
        ax.imshow(checkerboard(cut(ref_ct), cut(idx_ct)), origin=origin, **window)
        ax.set_title(f"{name}: reference CT / index CT (checkerboard)")
        ax = axes[row, 1]
        ax.imshow(cut(ref_ct), origin=origin, **window)
        pet = np.ma.masked_less(cut(idx_pet), 0.2 * pet_max)
        ax.imshow(pet, origin=origin, cmap="hot", alpha=0.6, vmin=0, vmax=pet_max)
        ax.set_title(f"{name}: index PET on reference CT")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("patient right  <->  patient left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
