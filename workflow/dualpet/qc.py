"""Quality-control pictures (matplotlib, no display needed)."""

from __future__ import annotations

import textwrap

import numpy as np

from dualpet.io import atomic_path


def checkerboard(a, b, tiles=8):
    """Alternate square tiles of two equally shaped 2D images."""
    ii, jj = np.indices(a.shape)
    size = max(1, min(a.shape) // tiles)
    return np.where(((ii // size) + (jj // size)) % 2 == 0, a, b)


def figure_cuts(ref_ct):
    """The voxel (i, j, k) the registration picture cuts through: the body's centre of
    mass (CT above -500 HU) on every 4th voxel, to a voxel or two; the volume's centre
    when there is no body."""
    from scipy import ndimage

    body = ref_ct[::4, ::4, ::4] > -500
    centre = 4 * np.asarray(ndimage.center_of_mass(body)) if body.any() else np.array(ref_ct.shape) // 2
    return tuple(int(min(round(c), n - 1)) for c, n in zip(centre, ref_ct.shape))


def registration_figure(views, out_png, *, pet, title="", spacing=(1.0, 1.0, 1.0)):
    """Axial and coronal checkerboards (reference CT / index CT in the reference space) and
    the index PET fused on the reference CT.

    ``views``: for ``"axial"`` and ``"coronal"``, the planes of the reference CT grid
    through :func:`figure_cuts`, each a dict of 2D arrays ``"reference CT"``, ``"index
    CT"`` and ``"index PET"`` (the index study resampled onto that grid), indexed [i, j]
    (axial) or [i, k] (coronal) as the grid (column, row, slice of axial DICOM images: i
    runs to the patient's left, j posterior, k superior), whose voxel ``spacing`` (mm)
    draws them in millimetres. ``pet``: index PET values (any grid) whose 99.5th
    percentile above 0, rounded up to 0.5, tops the fused PET's window.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = {"cmap": "gray", "vmin": -400, "vmax": 400}
    sp = np.asarray(spacing, dtype=float)
    # rows: j (anterior at top) for the axial plane, k (superior at top) for the coronal; columns: i
    shown_as = {"axial": ("upper", sp[1] / sp[0]), "coronal": ("lower", sp[2] / sp[0])}
    fig, axes = plt.subplots(2, 2, figsize=(10, 10), dpi=80)
    # the fused PET's window: SUV 0 to the 99.5th percentile above 0 (rounded up to 0.5),
    # shown from a fifth of it on, and stated on the colour bar
    above = pet[pet > 0]
    pet_max = float(np.ceil(2.0 * np.percentile(above, 99.5)) / 2.0) if above.size else 1.0
    for row, (name, (origin, aspect)) in enumerate(shown_as.items()):
        ref, idx, fused = (views[name][what].T for what in ("reference CT", "index CT", "index PET"))
        ax = axes[row, 0]
        ax.imshow(checkerboard(ref, idx), origin=origin, aspect=aspect, **window)
        ax.set_title(f"{name}: reference CT / index CT (checkerboard)")
        ax = axes[row, 1]
        ax.imshow(ref, origin=origin, aspect=aspect, **window)
        fused = np.ma.masked_less(fused, 0.2 * pet_max)
        shown = ax.imshow(fused, origin=origin, cmap="hot", alpha=0.6, vmin=0, vmax=pet_max, aspect=aspect)
        ax.set_title(f"{name}: index PET (SUV 0-{pet_max:g}) on reference CT")
        bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
        bar.set_label("index PET, SUV", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("patient right  <->  patient left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def background_figure(ct_hu, ct_affine, suv, pet_affine, background, out_png, *, shape, title="", mask=None):
    """Axial and coronal CT and PET slices through the background VOI centre, VOI outlined.

    ``background`` is the dict of :mod:`dualpet.background` (``centre_lps``, ``source``,
    ``suvmean``) and ``shape`` its VOI's (:func:`dualpet.background.voi_shape`): the
    blood-pool cylinder or the liver sphere, outlined in each view; a background given as
    a ``mask`` (bool, PET grid) is outlined by its contour on the PET views.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = background.get("suvmean") is not None
    centre, pet_top, mask = _figure_centre(background, suv, pet_affine, mask, found)
    shape = shape or ("none", 0.0)  # a mask, or no background: outlined as drawn, or not at all
    liver, radius = shape[0] == "sphere", shape[1]
    half_length = shape[2] if shape[0] == "cylinder" else 0.0
    fig, axes = plt.subplots(2, 2, figsize=(9, 9), dpi=80)
    for col, (vol, aff, kw, name) in enumerate(
        (
            (ct_hu, ct_affine, {"cmap": "gray", "vmin": -400, "vmax": 400}, "CT"),
            (suv, pet_affine, {"cmap": "gray_r", "vmin": 0, "vmax": pet_top}, "PET (SUV)"),
        )
    ):
        _background_views(axes[:, col], vol, aff, kw, name, centre, vol is suv, mask, (liver, radius, half_length))
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(_background_title(title, background, found), fontsize=9)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _figure_centre(background, suv, pet_affine, mask, found):
    """Where the views cut (LPS), the PET's top SUV, and the mask (an empty one when none was found)."""
    from dualpet.geometry import apply_affine

    if found:
        centre = np.asarray(background["centre_lps"], dtype=float)
        pet_top = max(3 * background["suvmean"], 1e-3)
    else:  # none found: the PET's centre, nothing outlined, and why in the title
        centre = apply_affine(pet_affine, (np.asarray(suv.shape) - 1) / 2.0)
        pet_top = max(float(np.percentile(suv, 99.5)), 1e-3)
        mask = np.zeros(suv.shape, bool)
    return centre, pet_top, mask


def _background_views(axes, vol, aff, kw, name, centre, is_pet, mask, voi):
    """One volume's axial (``axes[0]``) and coronal (``axes[1]``) views through ``centre``, VOI outlined."""
    from matplotlib.patches import Ellipse, Rectangle

    from dualpet.geometry import voxel_spacing, world_to_voxel

    liver, radius, half_length = voi
    i, j, k = (int(round(v)) for v in np.clip(world_to_voxel(aff, centre), 0, np.array(vol.shape) - 1))
    sp = voxel_spacing(aff)
    ax = axes[0]  # axial: rows j (anterior at top), columns i (patient right on the left)
    ax.imshow(vol[:, :, k].T, origin="upper", aspect=sp[1] / sp[0], **kw)
    if mask is not None:
        if is_pet and mask[:, :, k].any():
            ax.contour(mask[:, :, k].T.astype(float), levels=[0.5], colors="lime", linewidths=1.5)
    else:
        ax.add_patch(Ellipse((i, j), 2 * radius / sp[0], 2 * radius / sp[1], fill=False, color="lime", lw=1.5))
    ax.set_title(f"{name}, axial")
    ax = axes[1]  # coronal: rows k (superior at top)
    ax.imshow(vol[:, j, :].T, origin="lower", aspect=sp[2] / sp[0], **kw)
    if mask is not None:
        if is_pet and mask[:, j, :].any():
            ax.contour(mask[:, j, :].T.astype(float), levels=[0.5], colors="lime", linewidths=1.5)
    elif liver:
        ax.add_patch(Ellipse((i, k), 2 * radius / sp[0], 2 * radius / sp[2], fill=False, color="lime", lw=1.5))
    else:  # the blood pool: a cylinder along z
        ax.add_patch(
            Rectangle(
                (i - radius / sp[0], k - half_length / sp[2]),
                2 * radius / sp[0],
                2 * half_length / sp[2],
                fill=False,
                color="lime",
                lw=1.5,
            )
        )
    ax.set_title(f"{name}, coronal")


def _background_title(title, background, found):
    """The picture's title: the SUVmean, its source and any fallback, or why there is none; wrapped."""
    fallback = f"\nfallback: {background['fallback']}" if background.get("fallback") else ""
    if found:
        text = f"{title}: SUVmean {background['suvmean']:.2f} ({background['n_voxels']} voxels)\n{background['source']}{fallback}"
    else:
        text = f"{title}: none ({background['missing']}); TBR not computed"
    return "\n".join(textwrap.fill(line, 110) for line in text.split("\n"))
