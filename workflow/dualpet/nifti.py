"""NIfTI output: images with explicit RAS affines and nothing else in the header."""

from __future__ import annotations

import nibabel as nib

from dualpet.geometry import ras_affine
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
