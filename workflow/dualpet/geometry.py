"""Coordinate conventions.

DICOM patient coordinates are LPS (+x towards the patient's left, +y posterior,
+z superior), in mm. NIfTI (and nibabel) affines map voxel indices to RAS. dualpet
keeps volumes as arrays indexed ``[i, j, k]`` = (DICOM column, DICOM row, slice) and
converts explicitly between the two spaces with :data:`LPS_TO_RAS`.
"""

from __future__ import annotations

import numpy as np

#: 4x4 matrix flipping x and y: RAS = LPS_TO_RAS @ LPS (and its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def ras_affine(affine_lps):
    """Convert a voxel->LPS affine to the voxel->RAS affine NIfTI stores.

    >>> ras_affine(np.diag([2.0, 2.0, 3.0, 1.0]))[:3, :3].diagonal().tolist()
    [-2.0, -2.0, 3.0]
    """
    return LPS_TO_RAS @ np.asarray(affine_lps, dtype=float)


def lps_affine(affine_ras):
    """Convert a NIfTI voxel->RAS affine to voxel->LPS (the same flip: its own inverse).

    >>> a = np.diag([2.0, 2.0, 3.0, 1.0]); a[:3, 3] = [10, 20, 30]
    >>> bool(np.allclose(lps_affine(ras_affine(a)), a))
    True
    """
    return LPS_TO_RAS @ np.asarray(affine_ras, dtype=float)


def apply_affine(affine, points):
    """Apply a 4x4 affine to points of shape (..., 3)."""
    points = np.asarray(points, dtype=float)
    return points @ affine[:3, :3].T + affine[:3, 3]


def voxel_to_world(affine, ijk):
    """Voxel indices (..., 3) -> world coordinates in the space of ``affine``."""
    return apply_affine(affine, ijk)


def world_to_voxel(affine, xyz):
    """World coordinates (..., 3) -> continuous voxel indices.

    >>> a = np.diag([2.0, 2.0, 3.0, 1.0]); a[:3, 3] = [-100.0, -50.0, 0.0]
    >>> world_to_voxel(a, [-98.0, -50.0, 7.5]).tolist()
    [1.0, 0.0, 2.5]
    >>> voxel_to_world(a, [1, 0, 2.5]).tolist()
    [-98.0, -50.0, 7.5]
    """
    return apply_affine(np.linalg.inv(affine), xyz)


def voxel_volume_ml(affine):
    """Volume of one voxel in mL (1 mL = 1000 mm^3).

    >>> float(voxel_volume_ml(np.diag([4.0, 4.0, 2.0, 1.0])))
    0.032
    """
    return abs(np.linalg.det(np.asarray(affine)[:3, :3])) / 1000.0


def voxel_spacing(affine):
    """Voxel edge lengths (mm) along i, j, k, whatever the orientation.

    >>> voxel_spacing(np.array([[0, -2.0, 0, 0], [3.0, 0, 0, 0], [0, 0, 1.5, 0], [0, 0, 0, 1]])).tolist()
    [3.0, 2.0, 1.5]
    """
    return np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)


def box_around(mask, margin=0):
    """The slices of the box holding a mask's voxels (from its projections on the axes),
    ``margin`` voxels wider on every side, within the grid."""
    box = []
    for axis, n in enumerate(mask.shape):
        held = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(held[0]) - margin, 0), min(int(held[-1]) + 1 + margin, n)))
    return tuple(box)


def nearest_on_grid(data, data_affine, shape, affine, fill=0):
    """``data`` (voxel->LPS ``data_affine``) sampled at the voxel centres of another grid
    (``shape``, voxel->LPS ``affine``) by nearest neighbour; ``fill`` outside ``data``.
    Slice by slice, so large grids stay cheap in memory; grids with the same axes (the
    usual PET and CT of one study) by one index per axis."""
    to_data = _to_data(data_affine, affine)
    if _axis_aligned(to_data, shape):
        # one index per axis: a data index along an axis depends on that axis's index only
        return _axis_aligned_fill(lambda index: data[np.ix_(*index)], to_data, shape, data.shape, fill, data.dtype)
    out = np.full(shape, fill, dtype=data.dtype)
    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    for k in range(shape[2]):
        ijk = np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, k)], axis=1)
        m = np.rint(apply_affine(to_data, ijk)).astype(int)
        ok = np.all((m >= 0) & (m < data.shape), axis=1)
        plane = np.full(len(m), fill, dtype=data.dtype)
        plane[ok] = data[tuple(m[ok].T)]
        out[:, :, k] = plane.reshape(ii.shape)
    return out


def _to_data(data_affine, affine):
    """The map from a grid's voxel indices to those of the data's grid."""
    return np.linalg.inv(np.asarray(data_affine, dtype=float)) @ np.asarray(affine, dtype=float)


def _axis_aligned(to_data, shape):
    """Whether each grid axis maps onto the same data axis for nearest-neighbour sampling:
    cross terms of exactly 0, or tiny (e.g. 2e-15 from NIfTI's stored orientation) where
    no voxel centre falls within a millionth of a voxel of a rounding tie (which they would
    decide: grids whose spacings have a whole ratio put every other centre there)."""
    off_axis = np.abs(to_data[:3, :3] - np.diag(np.diag(to_data[:3, :3])))
    return not off_axis.any() or (off_axis.sum() * max(shape) < 1e-9 and not _near_ties(to_data, shape))


def _near_ties(to_data, shape):
    """Whether a grid axis maps a voxel centre within a millionth of a voxel of a half
    (where nearest-neighbour rounding is decided by the mapping's cross terms)."""
    for a in range(3):
        x = np.arange(shape[a], dtype=float) * to_data[a, a] + to_data[a, 3]
        if np.any(np.abs(x - np.floor(x) - 0.5) < 1e-6):
            return True
    return False


def _axis_aligned_fill(values_at, to_data, shape, data_shape, fill, dtype):
    """A grid axis-aligned with the data's (:func:`_axis_aligned`), each voxel given the
    value ``values_at(index)`` returns for the data indices nearest its centre (per axis,
    those inside the data: an array indexed like ``np.ix_(*index)``), ``fill`` elsewhere."""
    index, inside = [], []
    for a in range(3):
        m = np.rint(np.arange(shape[a], dtype=float) * to_data[a, a] + to_data[a, 3]).astype(int)
        ok = (m >= 0) & (m < data_shape[a])
        index.append(m[ok])
        inside.append(np.flatnonzero(ok))
    out = np.full(shape, fill, dtype=dtype)
    if all(len(i) for i in index):
        out[np.ix_(*inside)] = values_at(index)
    return out


def ct_on_pet_grid(hu, ct_affine, shape, pet_affine, average=False):
    """CT numbers at the PET voxel centres (nearest CT voxel through world coordinates;
    -1000 HU outside the CT), so CT rules can be applied voxel by voxel on the PET grid.
    With ``average``, each is the mean of the CT voxels a PET voxel covers (a box of the
    PET voxel's size around the nearest one): the tissue mixture the PET voxel sees, with
    the CT's noise averaged out."""
    from scipy import ndimage

    hu = np.asarray(hu)
    size = np.maximum(np.rint(voxel_spacing(pet_affine) / voxel_spacing(ct_affine)).astype(int), 1)
    if average and (size > 1).any():
        to_data = _to_data(ct_affine, pet_affine)
        if _axis_aligned(to_data, shape):
            means_at = lambda index: _box_means_at(hu, size, index)  # noqa: E731
            return _axis_aligned_fill(means_at, to_data, shape, hu.shape, -1000.0, np.float32)
        # a CT of whole HU (int16) is filtered straight into float32: each line is summed in
        # double either way, so no float32 copy of the CT grid is needed first
        hu = ndimage.uniform_filter(hu, size, output=np.float32, mode="nearest")
    return nearest_on_grid(hu, ct_affine, shape, pet_affine, fill=-1000.0).astype(np.float32, copy=False)


#: Slices of the CT filtered at a time by :func:`_box_means_at` (when slices are not averaged).
BOX_MEAN_SLAB = 8


def _box_means_at(hu, size, index):
    """``ndimage.uniform_filter(hu, size, output=np.float32, mode="nearest")[np.ix_(*index)]``
    to the bit, filtering only the lines the picked voxels need. uniform_filter runs a
    running mean along whole lines, axis after axis (axes of size 1 skipped), each pass into
    float32: a line's result depends on that line alone, so the axes it skips can be picked
    first, and each axis once filtered; the slices are done a slab at a time when they are
    not averaged (a clinical CT: 512 x 512 x 300 filtered along its rows, then 200 of its
    512 columns, against all of both). Each CT line is picked once, also where several PET
    voxels share it (PET voxels finer than the CT's), and shared at the end."""
    from scipy import ndimage

    picks, shared = zip(*(np.unique(i, return_inverse=True) for i in index))

    def take(data, a, lines=None):
        lines = picks[a] if lines is None else lines
        if len(lines) == data.shape[a]:  # sorted and unique: every line, in order
            return data
        return data[(slice(None),) * a + (lines,)]  # (np.take would first copy a Fortran-order CT whole)

    def filtered(data):
        for a in range(3):
            if size[a] > 1:
                data = take(ndimage.uniform_filter1d(data, int(size[a]), a, np.float32, "nearest"), a)
        return data

    for a in range(2):
        if size[a] == 1:
            hu = take(hu, a)
    if size[2] > 1:
        out = filtered(hu)
    else:
        out = np.empty(tuple(len(p) for p in picks), dtype=np.float32)
        for k in range(0, len(picks[2]), BOX_MEAN_SLAB):
            out[:, :, k : k + BOX_MEAN_SLAB] = filtered(take(hu, 2, picks[2][k : k + BOX_MEAN_SLAB]))
    if all(np.array_equal(p, i) for p, i in zip(picks, index)):  # each PET voxel its own line, in order
        return out
    return out[np.ix_(*shared)]


def values_in_ball(volume, affine, centre, outer_mm, inner_mm=0.0):
    """Values of the voxels whose centres lie between ``inner_mm`` and ``outer_mm`` from
    ``centre`` (LPS mm): a sphere, or with ``inner_mm`` > 0 a shell."""
    centre = np.asarray(centre, dtype=float)
    c = world_to_voxel(affine, centre)
    reach = np.ceil(outer_mm / voxel_spacing(affine)).astype(int) + 1
    lo = np.maximum(np.floor(c).astype(int) - reach, 0)
    hi = np.minimum(np.floor(c).astype(int) + reach + 1, volume.shape)
    if np.any(hi <= lo):
        return volume.ravel()[:0]
    idx = np.indices(hi - lo).reshape(3, -1).T + lo
    d = np.linalg.norm(apply_affine(affine, idx) - centre, axis=1)
    return volume[tuple(idx[(d >= inner_mm) & (d <= outer_mm)].T)]


def dicom_affine_lps(image_orientation, pixel_spacing, first_position, slice_step):
    """Voxel->LPS affine of a stack of DICOM slices.

    Parameters
    ----------
    image_orientation : sequence of 6 float
        ImageOrientationPatient (0020,0037): direction cosines of the rows (the
        direction of increasing column index) then of the columns.
    pixel_spacing : sequence of 2 float
        PixelSpacing (0028,0030): [spacing between rows, spacing between columns], mm.
    first_position : sequence of 3 float
        ImagePositionPatient (0020,0032) of the first slice of the stack (LPS, mm).
    slice_step : sequence of 3 float
        LPS vector from one slice's position to the next one's (mm).

    Returns
    -------
    ndarray, shape (4, 4)
        Maps voxel index (i = column, j = row, k = slice) to LPS mm.

    Examples
    --------
    An axial stack, rows 0.8 mm apart and columns 0.9 mm, slices 3 mm apart going up:

    >>> a = dicom_affine_lps([1, 0, 0, 0, 1, 0], [0.8, 0.9], [-200.0, -180.0, -50.0], [0, 0, 3.0])
    >>> a[:3, :3].diagonal().tolist(), a[:3, 3].tolist()
    ([0.9, 0.8, 3.0], [-200.0, -180.0, -50.0])
    """
    iop = np.asarray(image_orientation, dtype=float)
    affine = np.eye(4)
    affine[:3, 0] = iop[:3] * float(pixel_spacing[1])
    affine[:3, 1] = iop[3:] * float(pixel_spacing[0])
    affine[:3, 2] = np.asarray(slice_step, dtype=float)
    affine[:3, 3] = np.asarray(first_position, dtype=float)
    return affine


def rotation_matrix(angles_deg):
    """Rotation matrix from Euler angles (degrees) about x, then y, then z (R = Rz Ry Rx).

    >>> np.round(rotation_matrix([0, 0, 90]) @ [1.0, 0.0, 0.0], 12).tolist()
    [0.0, 1.0, 0.0]
    """
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx
