"""NIfTI images: output with explicit RAS affines and nothing else in the header, and the
label images a studies sheet may give (masks, organ maps) read onto a grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from dualpet.geometry import lps_affine, nearest_on_grid, ras_affine
from dualpet.io import atomic_path


def save_nifti(path, img):
    """Save a nibabel image atomically."""
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def nifti_image(data, affine_lps):
    """NIfTI-1 image with the RAS affine in both qform and sform (code 1, scanner).

    The header carries nothing but geometry and data type: no description, no
    auxiliary file name, no extensions (DICOM identifiers must not leak into outputs).
    """
    img = nib.Nifti1Image(data, ras_affine(affine_lps))
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    return img


def read_label_image(path, what="mask", dtype=np.int32):
    """A NIfTI label image as (array of ``dtype``, voxel->LPS affine); a clear error if
    unusable. An organ map (0-255) is read as uint8: stored so by the anatomy step, it is
    then neither copied nor widened (78 M voxels on a clinical CT grid)."""
    from dualpet.errors import DualpetInputError, redact_paths

    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise DualpetInputError(f"{what} (studies sheet): not a readable NIfTI image ({redact_paths(exc)})") from exc
    if data.ndim != 3:
        raise DualpetInputError(f"{what} (studies sheet): expected a 3-D label image, got shape {data.shape}")
    if data.dtype.kind not in "iub":  # whole numbers already need no rounding (nor its float copy)
        data = np.rint(data)
    if data.dtype != dtype and dtype != np.int32:
        limits = np.iinfo(dtype)
        if data.size and (data.min() < limits.min or data.max() > limits.max):
            raise DualpetInputError(f"{what}: label values must lie in {limits.min}-{limits.max}")
    return data.astype(dtype, copy=False), lps_affine(img.affine)


def labels_on_grid(path, shape, affine_lps, what="mask"):
    """A NIfTI label image (any grid) resampled onto a grid by nearest neighbour through
    world coordinates: int32 array of ``shape``, 0 outside the label image."""
    return nearest_on_grid(*read_label_image(path, what), shape, affine_lps)


def mask_on_grid(mask_path, labels, shape, affine_lps):
    """Boolean mask of the selected ``labels`` (None or empty: every non-zero label) of a
    NIfTI label image on a grid (see :func:`labels_on_grid`)."""
    data = labels_on_grid(mask_path, shape, affine_lps, "exclusion mask")
    return np.isin(data, list(labels)) if labels else data != 0
