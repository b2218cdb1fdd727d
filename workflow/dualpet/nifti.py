"""NIfTI images: output with explicit RAS affines and nothing else in the header, and the
label images a studies sheet may give (masks, organ maps) read onto a grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from dualpet.geometry import lps_affine, nearest_on_grid, ras_affine
from dualpet.io import atomic_path

#: ISA-L's gzip level for ``.nii.gz`` outputs: level 2 is as small as zlib's level 1 (what
#: nibabel writes) in a quarter of the time (a clinical CT: 0.8 s against 3.1 s).
GZIP_LEVEL = 2


def save_nifti(path, img):
    """Save a nibabel image atomically. A ``.nii.gz`` is the same NIfTI stream nibabel
    writes, compressed by ISA-L's igzip (python-isal), as deterministically as nibabel does
    (no file name and a zero time in the gzip header)."""
    with atomic_path(path) as tmp:
        if not str(path).endswith(".gz"):
            nib.save(img, str(tmp))
            return
        from isal import igzip

        with open(tmp, "wb") as raw, igzip.IGzipFile("", "wb", GZIP_LEVEL, fileobj=raw, mtime=0) as gz:
            img.to_stream(gz)


def load_nifti(path):
    """``nib.load(path)``, a ``.nii.gz`` decompressed by ISA-L's igzip (twice zlib's speed:
    a clinical CT 0.8 -> 0.4 s), its data read when first asked for, as nibabel does. Any
    other file, and a ``.nii.gz`` that is not NIfTI-1, is nibabel's to read."""
    path = str(path)
    if path.endswith(".nii.gz"):
        from isal import igzip

        stream = igzip.open(path, "rb")
        try:
            return nib.Nifti1Image.from_file_map(nib.Nifti1Image.make_file_map({"image": stream}), mmap=False)
        except Exception:  # not NIfTI-1 (NIfTI-2) or not readable: nibabel says what it is
            stream.close()
    return nib.load(path)


def as_stored(img):
    """An image's voxels as stored when they are whole numbers without scaling (a CT's int16
    HU, as the conversion writes it: no float copy of 78 M voxels), else as float32 (never
    float64: nibabel's type for scaled or double data)."""
    proxy = img.dataobj
    whole = np.dtype(proxy.dtype).kind in "iu" and getattr(proxy, "slope", 1.0) == 1.0
    if whole and getattr(proxy, "inter", 0.0) == 0.0:
        return np.asarray(proxy)
    return np.asarray(proxy, dtype=np.float32)


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
        img = load_nifti(path)
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
