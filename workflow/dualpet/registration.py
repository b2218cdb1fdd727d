"""CT-to-CT registration between the two studies of one patient: rigid, then (by default,
``registration.affine``) an affine stage kept only where it fits the body better.

The reference study (e.g. FDG) and the index study (e.g. Pentixafor) of a patient
are acquired days apart; within each study PET and CT share a frame of reference, so
one transform estimated between the two CTs maps every image of one study onto the
other.

Spaces and conventions
----------------------
* Inputs are NIfTI files (RAS affines, as written by nibabel). SimpleITK converts
  them on reading to DICOM patient coordinates **LPS** (+x patient left,
  +y posterior, +z superior), in **mm**. Every point and transform in this module
  is in LPS mm: a voxel nibabel places at RAS ``(x, y, z)`` is at LPS
  ``(-x, -y, z)``.
* The transform follows ITK's resampling convention with *fixed* = reference CT
  and *moving* = index CT: ``tfm.TransformPoint(p_reference_lps)`` returns the same
  anatomical point in the index study's LPS coordinates. It is written with
  :func:`SimpleITK.WriteTransform` as a plain ``Euler3DTransform`` (or
  ``AffineTransform`` when ``affine=True``), never a composite, so ITK and 3D
  Slicer read it directly. (Slicer shows ITK files as "from parent"
  transforms: applied to the index study in Slicer's hierarchy it brings the index
  study onto the reference study.)

Method
------
Both CTs are clamped to [-1024, 2000] HU, smoothed (anti-aliasing, sigma about half
the grid spacing) and resampled to an isotropic ``grid_mm`` grid: full-resolution CT
adds run time, not accuracy, for a rigid body fit. A body mask (HU threshold,
morphological opening to detach the couch, largest connected component, holes
filled per axial slice) restricts metric sampling, and everything outside it (plus
a one-voxel rim) is set to air, so that neither air nor the couch, which does not
move with the patient, drives the registration. The Euler transform is initialised
by aligning the centres of mass of the two body masks (rotation centre = reference
body centroid), then by an exhaustive search of the z offset (+-80 mm, 8 mm steps)
at the coarsest level, because the z centroids of masks cut by the field of view
follow the scan range rather than the anatomy. It is then optimised with Mattes
mutual information and regular-step gradient descent (physical-shift parameter
scales) over three resolution levels, sampling a fixed, seeded random subset of the
masked voxels, in one thread (:data:`METRIC_THREADS`): the same transform for the same
input on any machine and any core count. The affine stage starts from the rigid result
and replaces it only if it raises the body-mask Dice by AFFINE_MIN_DICE_GAIN or more
(weight change, breathing); on rigid motion the rigid transform is kept.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from dualpet.errors import DualpetInputError
from dualpet.geometry import LPS_TO_RAS
from dualpet.io import atomic_path, write_json
from dualpet.nifti import save_nifti
from dualpet.settings import default

__all__ = [
    "register_ct",
    "load_transform",
    "transform_points",
    "inverse_transform_points",
    "resample_to_reference",
    "write_views",
    "read_ct",
    "body_mask",
]

#: HU assigned outside the CT field of view, and the clamp applied before registration
#: (metal and contrast above 2000 HU would otherwise squeeze the MI histogram).
AIR_HU = -1024.0
HU_CLAMP = (-1024.0, 2000.0)

#: Multi-resolution schedule on the ``grid_mm`` grid (shrink factors; Gaussian sigmas in
#: grid voxels).
SHRINK_FACTORS = (4, 2, 1)
SMOOTHING_SIGMAS = (2.0, 1.0, 0.0)
#: Fraction of the fixed-grid voxels the metric draws at random at each level (those
#: outside the body mask are then discarded; coarse levels have few voxels, so draw more
#: of them) and the seed of that draw.
SAMPLING_FRACTIONS = (0.5, 0.3, 0.2)
SAMPLING_SEED = 20240607
#: Threads of the registration itself (metric and optimiser). ITK merges per-thread
#: metric sums in an order that varies from run to run, so more than one thread gives
#: transforms that differ in the last digits between identical runs and between core
#: counts; one thread gives the same transform everywhere (measured: 4.5 s instead of
#: 2.4 s per demo-size patient with 2 threads). Resampling and masks still use the
#: threads given (voxel-wise, deterministic).
METRIC_THREADS = 1
#: Relative rotation beyond which a registration result is flagged as implausible.
MAX_PLAUSIBLE_ROTATION_DEG = 25.0
#: Minimum gain in body-mask Dice for the affine stage's result to replace the rigid one.
AFFINE_MIN_DICE_GAIN = 0.005
HISTOGRAM_BINS = 50

#: Minimum body-mask volume (mL) for a CT to be considered usable.
MIN_BODY_ML = 500.0

_INTERPOLATORS = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}


# --------------------------------------------------------------------------- reading


def _read_image(path, pixel_type=sitk.sitkUnknown):
    """Read a NIfTI volume with SimpleITK (LPS physical space) as a 3D scalar image."""
    path = Path(path)
    if not path.is_file():
        raise DualpetInputError(f"image file not found: {path}")
    try:
        img = sitk.ReadImage(str(path), pixel_type)
    except RuntimeError as exc:
        raise DualpetInputError(f"cannot read image {path}: {exc}") from None
    if img.GetDimension() == 4 and img.GetSize()[3] == 1:
        img = img[:, :, :, 0]
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise DualpetInputError(
            f"{path}: expected a 3D scalar volume, found dimension {img.GetDimension()} "
            f"size {img.GetSize()} with {img.GetNumberOfComponentsPerPixel()} component(s)"
        )
    return img


#: Pixel types a CT is kept in as read: whole HU as stored (int16 from the conversion), or float32.
_CT_PIXEL_TYPES = {sitk.sitkInt8, sitk.sitkUInt8, sitk.sitkInt16, sitk.sitkUInt16, sitk.sitkFloat32}


def read_ct(path):
    """A CT (NIfTI, HU) as a SimpleITK image: what :func:`register_ct` and
    :func:`write_views` take, so that a step doing both reads each CT once. Whole HU stay in
    their stored type (int16: no float copy of the grid); every filter after it computes in
    float32 or double, where they are the same numbers. Other types are read as float32."""
    img = _read_image(path)
    return img if img.GetPixelID() in _CT_PIXEL_TYPES else sitk.Cast(img, sitk.sitkFloat32)


def _read_geometry(path):
    """Size, origin, spacing and direction (LPS) of an image file, without its voxels."""
    path = Path(path)
    if not path.is_file():
        raise DualpetInputError(f"image file not found: {path}")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DualpetInputError(f"cannot read image header {path}: {exc}") from None
    dim = reader.GetDimension()
    if dim < 3 or (dim == 4 and reader.GetSize()[3] != 1) or dim > 4:
        raise DualpetInputError(f"{path}: expected a 3D volume, found size {reader.GetSize()}")
    direction = np.asarray(reader.GetDirection(), dtype=float).reshape(dim, dim)[:3, :3]
    return (
        tuple(int(s) for s in reader.GetSize()[:3]),
        tuple(float(o) for o in reader.GetOrigin()[:3]),
        tuple(float(s) for s in reader.GetSpacing()[:3]),
        tuple(direction.ravel()),
    )


def _lps_affine(img):
    """Voxel index -> LPS mm affine (4x4) of a SimpleITK image."""
    direction = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(img.GetSpacing(), dtype=float)
    affine[:3, 3] = img.GetOrigin()
    return affine


# --------------------------------------------------------------------- preprocessing


def _to_grid(ct, grid_mm):
    """Clamp, anti-alias and resample a CT onto an isotropic grid covering the same extent.

    The new grid keeps the image's direction cosines and is centred on the original
    field of view. The image is blurred along the axes finer than the grid by the blur
    missing to reach a ~grid/2 sampling kernel, a variance of ``0.25 * (grid**2 -
    spacing**2)`` mm^2: axes at most half the grid are first averaged in pairs
    (``BinShrink``, a variance of ``spacing**2 / 4``: a 512 x 512 CT becomes 256 x 256,
    a quarter of the work), then a Gaussian gives the rest, skipped when below half a
    voxel.
    """
    grid_mm = float(grid_mm)
    if not grid_mm > 0:
        raise ValueError(f"grid_mm must be positive, got {grid_mm}")
    img = sitk.Clamp(ct, sitk.sitkFloat32, HU_CLAMP[0], HU_CLAMP[1])
    spacing = np.asarray(img.GetSpacing(), dtype=float)
    size = np.asarray(img.GetSize(), dtype=float)
    direction = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3)
    new_size = np.maximum(np.ceil(size * spacing / grid_mm - 1e-6), 1).astype(int)
    centre = np.asarray(img.GetOrigin()) + direction @ ((size - 1) / 2 * spacing)
    new_origin = centre - direction @ ((new_size - 1) / 2 * grid_mm)
    variance = 0.25 * np.maximum(grid_mm**2 - spacing**2, 0.0)
    pairs = [2 if 2 * sp <= grid_mm and n >= 2 else 1 for sp, n in zip(spacing, size)]
    if max(pairs) > 1:
        img = sitk.BinShrink(img, pairs)
        variance -= np.where(np.asarray(pairs) > 1, spacing**2 / 4, 0.0)
    for axis, sp in enumerate(img.GetSpacing()):
        sigma = math.sqrt(max(variance[axis], 0.0))
        if sigma >= 0.5 * sp:
            img = sitk.RecursiveGaussian(img, sigma, False, sitk.RecursiveGaussianImageFilter.ZeroOrder, axis)
    return sitk.Resample(
        img,
        [int(s) for s in new_size],
        sitk.Transform(),
        sitk.sitkLinear,
        [float(o) for o in new_origin],
        [grid_mm] * 3,
        img.GetDirection(),
        AIR_HU,
        sitk.sitkFloat32,
    )


def _axial_axis(img):
    """Index axis (0, 1, 2 = i, j, k) whose direction is closest to LPS z."""
    direction = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3)
    return int(np.argmax(np.abs(direction[2, :])))


def body_mask(ct: sitk.Image, threshold_hu=-500, *, opening_mm=5.0) -> sitk.Image:
    """Binary mask of the patient's body in a CT, excluding air and the couch.

    Parameters
    ----------
    ct : SimpleITK.Image
        3D CT in HU (any pixel type), any grid; geometry in LPS mm.
    threshold_hu : float, optional
        Voxels with HU strictly above this value are candidate body (default -500:
        between air/lung and fat).
    opening_mm : float, optional
        Radius (mm) of the ball used for the binary opening that cuts thin bridges
        (couch top, cushions, cables) from the body; converted per axis to
        ``max(1, round(opening_mm / spacing))`` voxels.

    Returns
    -------
    SimpleITK.Image
        ``sitkUInt8`` image on the grid of ``ct`` (same origin, spacing and
        direction): 1 inside the largest 6-connected component of the opened
        threshold mask, with holes (lungs, airways, bowel gas) filled slice by slice
        along the axis closest to LPS z; 0 elsewhere. All zeros if nothing exceeds
        the threshold.
    """
    if ct.GetDimension() != 3:
        raise ValueError(f"body_mask expects a 3D image, got dimension {ct.GetDimension()}")
    fg = sitk.Cast(sitk.Cast(ct, sitk.sitkFloat32) > float(threshold_hu), sitk.sitkUInt8)
    radius = [max(1, int(round(float(opening_mm) / sp))) for sp in ct.GetSpacing()]
    opened = sitk.BinaryMorphologicalOpening(fg, radius, sitk.sitkBall, 0.0, 1.0)
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(opened, False), 0, True)
    arr = sitk.GetArrayFromImage(labels) == 1  # numpy axes (k, j, i)
    if arr.any():
        np_axis = 2 - _axial_axis(ct)
        slices = np.moveaxis(arr, np_axis, 0)
        filled = np.stack([ndi.binary_fill_holes(s) for s in slices])
        arr = np.moveaxis(filled, 0, np_axis)
    out = sitk.GetImageFromArray(arr.astype(np.uint8))
    out.CopyInformation(ct)
    return out


# --------------------------------------------------------------------- QC helpers


def _mask_volume_ml(mask):
    return float(sitk.GetArrayViewFromImage(mask).sum()) * float(np.prod(mask.GetSpacing())) / 1000.0


def _dice_in_overlap(fixed_mask, moving_mask, tfm):
    """Dice of the two body masks on the fixed grid, after mapping the moving one by ``tfm``.

    Computed only where the moving field of view (mapped into the reference space)
    covers the fixed grid, so that different axial coverages of the two studies do
    not lower the score.
    """
    warped = sitk.Resample(moving_mask, fixed_mask, tfm, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    ones = sitk.Image(moving_mask.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(moving_mask)
    fov = sitk.GetArrayViewFromImage(
        sitk.Resample(ones, fixed_mask, tfm, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    ).astype(bool)
    a = sitk.GetArrayViewFromImage(fixed_mask).astype(bool) & fov
    b = sitk.GetArrayViewFromImage(warped).astype(bool) & fov
    denom = int(a.sum()) + int(b.sum())
    return float(2.0 * np.logical_and(a, b).sum() / denom) if denom else float("nan")


def _rotation_angle_deg(matrix):
    """Angle (deg) of the rotation closest to ``matrix`` (polar decomposition)."""
    u, _, vt = np.linalg.svd(np.asarray(matrix, dtype=float).reshape(3, 3))
    r = u @ vt
    cos = np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)))


def _moments_init(fixed_mask, moving_mask):
    """Euler transform aligning the centres of mass of two body masks."""
    return sitk.Euler3DTransform(
        sitk.CenteredTransformInitializer(
            sitk.Cast(fixed_mask, sitk.sitkFloat32),
            sitk.Cast(moving_mask, sitk.sitkFloat32),
            sitk.Euler3DTransform(),
            sitk.CenteredTransformInitializerFilter.MOMENTS,
        )
    )


def _new_registration(fixed_mask_metric, shrink, sigmas, fractions, learning_rate, iterations, bins=HISTOGRAM_BINS):
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentagePerLevel([float(f) for f in fractions], SAMPLING_SEED)
    reg.SetMetricFixedMask(fixed_mask_metric)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=learning_rate,
        minStep=1e-3,
        numberOfIterations=iterations,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(shrink))
    reg.SetSmoothingSigmasPerLevel(list(sigmas))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    return reg


def _z_search(fixed, moving, metric_mask, rigid, half_range_mm, step_mm, min_overlap=0.6):
    """Exhaustive search of the z (cranio-caudal) translation at the coarsest level.

    The centre-of-mass initialisation is reliable in x and y but not in z, where
    both body masks are usually cut by the field of view, so their centroids follow
    the scan range rather than the anatomy. Mutual information is evaluated for z
    offsets ``-half_range_mm .. +half_range_mm`` (step ``step_mm``) around the
    initial transform; among the offsets where at least ``min_overlap`` times the
    largest number of metric samples falls inside the moving image (MI over a small
    overlap is unreliable), the best one is written into ``rigid`` in place.

    Returns
    -------
    dict
        ``z_offset_mm`` chosen (relative to the initialisation), and per offset the
        metric value and number of valid samples.
    """
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=HISTOGRAM_BINS)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(SAMPLING_FRACTIONS[0], SAMPLING_SEED)
    reg.SetMetricFixedMask(metric_mask)
    reg.SetInterpolator(sitk.sitkLinear)
    n_steps = max(1, int(round(half_range_mm / step_mm)))
    reg.SetOptimizerAsExhaustive([0, 0, 0, 0, 0, n_steps], float(step_mm))
    reg.SetOptimizerScales([1.0] * 6)
    reg.SetShrinkFactorsPerLevel([SHRINK_FACTORS[0]])
    reg.SetSmoothingSigmasPerLevel([SMOOTHING_SIGMAS[0]])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    start = rigid.GetParameters()
    evaluations = []

    def _record():
        evaluations.append(
            (
                float(reg.GetOptimizerPosition()[5] - start[5]),
                float(reg.GetMetricValue()),
                int(reg.GetMetricNumberOfValidPoints()),
            )
        )

    reg.AddCommand(sitk.sitkIterationEvent, _record)
    reg.SetInitialTransform(sitk.Euler3DTransform(rigid), inPlace=True)
    result = {"z_offset_mm": 0.0, "step_mm": float(step_mm)}
    try:
        _execute(reg, fixed, moving)
    except RuntimeError as exc:  # e.g. too few samples inside the moving image
        result["error"] = str(exc)
    if evaluations:
        most = max(n for _, _, n in evaluations)
        candidates = [e for e in evaluations if e[2] >= min_overlap * most]
        best = min(candidates, key=lambda e: e[1])
        result["z_offset_mm"] = best[0]
        params = list(start)
        params[5] += best[0]
        rigid.SetParameters(params)
    result["offsets_mm"] = [e[0] for e in evaluations]
    result["metric_values"] = [e[1] for e in evaluations]
    result["valid_points"] = [e[2] for e in evaluations]
    return result


def _execute(reg, fixed, moving):
    """Run a registration with :data:`METRIC_THREADS` threads (ITK takes the metric's
    threads from the global default), restoring the global default afterwards."""
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(METRIC_THREADS)
    try:
        return reg.Execute(fixed, moving)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


def _run_stage(name, reg, fixed, moving):
    per_level = []
    reg.AddCommand(sitk.sitkMultiResolutionIterationEvent, lambda: per_level.append(0))

    def _count():
        if per_level:
            per_level[-1] += 1

    reg.AddCommand(sitk.sitkIterationEvent, _count)
    _execute(reg, fixed, moving)
    return {
        "name": name,
        "final_metric_value": float(reg.GetMetricValue()),
        "optimizer_stop_condition": reg.GetOptimizerStopConditionDescription(),
        "iterations": int(sum(per_level)),
        "iterations_per_level": per_level,
    }


# ---------------------------------------------------------------------- registration


def register_ct(
    fixed_ct,
    moving_ct,
    out_tfm,
    out_qc_json=None,
    *,
    threads=1,
    grid_mm=default("registration.grid_mm"),
    affine=default("registration.affine"),
    images=None,
) -> dict:
    """Rigidly register the index CT (moving) to the reference CT (fixed).

    Parameters
    ----------
    fixed_ct : str or path-like
        Reference-study CT, NIfTI (RAS affine), HU.
    moving_ct : str or path-like
        Index-study CT, NIfTI (RAS affine), HU.
    out_tfm : str or path-like
        Output ITK transform file (``.tfm``/``.txt``/``.h5``), written atomically.
        ``TransformPoint`` maps reference LPS mm to index LPS mm.
    out_qc_json : str or path-like, optional
        Where to write the QC dict as JSON (atomically).
    threads : int, optional
        Number of ITK threads (global default for all SimpleITK filters).
    grid_mm : float, optional
        Isotropic spacing (mm) of the grid both CTs are resampled to before
        registration (default 4 mm, sub-millimetre accuracy for a rigid fit).
    affine : bool, optional
        If True, refine the rigid result with a 12-parameter affine stage (levels
        shrink 2, 1) and write an ``AffineTransform``. Default False.
    images : (SimpleITK.Image, SimpleITK.Image), optional
        The two CTs as :func:`read_ct` read them from ``fixed_ct`` and ``moving_ct``,
        when the caller has them already (the paths are still recorded).

    Returns
    -------
    dict
        QC record (also written to ``out_qc_json``):

        ``final_metric_value``
            Mattes mutual information at the end (negative; lower is better).
        ``optimizer_stop_condition``, ``iterations``, ``iterations_per_level``
            Of the last stage; ``stages`` lists every stage.
        ``dice_body_before``, ``dice_body_initial``, ``dice_body_after``
            Dice of the two body masks on the reference grid, inside the common
            field of view, under the identity (scanner coordinates), the
            centre-of-mass initialisation and the result.
        ``center_mm``
            Rotation centre (reference LPS mm) = centroid of the reference body mask.
        ``translation_mm``
            Translation of the transform (LPS mm) = displacement of ``center_mm``
            from the reference to the index study.
        ``rotation_deg``
            Euler angles (deg) about LPS x, y, z of the rigid result, as ITK's
            ``Euler3DTransform`` defines them (R = Rz Rx Ry); ``rotation_angle_deg``
            is the total (axis-angle) rotation of the final transform.
        ``z_search``
            Result of the coarse exhaustive search of the cranio-caudal offset
            (``z_offset_mm`` relative to the centre-of-mass initialisation).
        ``matrix``
            3x3 linear part (row-major).
        ``grid_mm``, ``threads``, ``wall_time_s``, ``warnings``, ``ok`` and inputs.
    """
    t_start = time.perf_counter()
    threads = max(1, int(threads))
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    if images is None:
        images = (read_ct(fixed_ct), read_ct(moving_ct))
    (fixed, fmask), (moving, mmask) = (
        _registration_image(role, path, img, grid_mm)
        for role, path, img in (("reference", fixed_ct, images[0]), ("index", moving_ct, images[1]))
    )

    # Centre-of-mass initialisation on the body masks (couch already excluded).
    rigid = _moments_init(fmask, mmask)
    dice_before = _dice_in_overlap(fmask, mmask, sitk.Transform())
    dice_initial = _dice_in_overlap(fmask, mmask, rigid)

    # Sample the metric in the body plus a one-voxel rim, so the skin/air edge counts.
    metric_mask = sitk.BinaryDilate(fmask, [1, 1, 1], sitk.sitkBall, 0.0, 1.0)
    z_search = _z_search(fixed, moving, metric_mask, rigid, 80.0, 8.0)
    reg = _new_registration(metric_mask, SHRINK_FACTORS, SMOOTHING_SIGMAS, SAMPLING_FRACTIONS, 2.0, 300)
    reg.SetInitialTransform(rigid, inPlace=True)
    stages = [_run_stage("rigid", reg, fixed, moving)]
    final = rigid
    if affine:
        final = _affine_stage(rigid, fixed, moving, fmask, mmask, metric_mask, stages)

    if final.GetName() == "CompositeTransform":  # pragma: no cover - guarded by inPlace=True
        raise RuntimeError("registration produced a composite transform")
    with atomic_path(out_tfm) as tmp:
        sitk.WriteTransform(final, str(tmp))

    result, qc_warnings = _describe_result(final, rigid, stages, fmask, mmask, dice_before, dice_initial, z_search)
    qc = {
        "reference_ct": str(fixed_ct),
        "index_ct": str(moving_ct),
        "transform_file": str(out_tfm),
        **result,
        "grid_mm": float(grid_mm),
        "shrink_factors": list(SHRINK_FACTORS),
        "smoothing_sigmas_voxels": list(SMOOTHING_SIGMAS),
        "sampling_fractions": list(SAMPLING_FRACTIONS),
        "sampling_seed": SAMPLING_SEED,
        "threads": threads,
        "simpleitk_version": sitk.Version.VersionString(),
        "warnings": qc_warnings,
        "ok": not qc_warnings,
        "wall_time_s": time.perf_counter() - t_start,
    }
    if out_qc_json is not None:
        write_json(out_qc_json, qc)
    return qc


def _describe_result(final, rigid, stages, fmask, mmask, dice_before, dice_initial, z_search):
    """The QC record's description of the transform kept, and its warnings."""
    dice_after = _dice_in_overlap(fmask, mmask, final)
    matrix = np.asarray(final.GetMatrix(), dtype=float).reshape(3, 3)
    translation = np.asarray(final.GetTranslation(), dtype=float)
    rotation_angle = _rotation_angle_deg(matrix)
    used = [st for st in stages if st.get("accepted", True)]
    last = used[-1]
    record = {
        "transform_type": final.GetName(),
        "convention": "ITK: TransformPoint maps reference (fixed) LPS mm to index (moving) LPS mm",
        "metric": "MattesMutualInformation",
        "final_metric_value": last["final_metric_value"],
        "optimizer_stop_condition": last["optimizer_stop_condition"],
        "iterations": last["iterations"],
        "iterations_per_level": last["iterations_per_level"],
        "stages": stages,
        "dice_body_before": dice_before,
        "dice_body_initial": dice_initial,
        "z_search": z_search,
        "dice_body_after": dice_after,
        "center_mm": list(final.GetCenter()),
        "translation_mm": translation.tolist(),
        "translation_norm_mm": float(np.linalg.norm(translation)),
        "rotation_deg": [math.degrees(a) for a in (rigid.GetAngleX(), rigid.GetAngleY(), rigid.GetAngleZ())],
        "rotation_angle_deg": rotation_angle,
        "matrix": matrix.tolist(),
        "body_volume_ml": {"reference": _mask_volume_ml(fmask), "index": _mask_volume_ml(mmask)},
    }
    return record, _qc_warnings(dice_before, dice_after, rotation_angle, used)


def _registration_image(role, path, ct, grid_mm):
    """One CT (read from ``path``) on the registration grid, with air outside its body, and its body mask."""
    img = _to_grid(ct, grid_mm)
    mask = body_mask(img)
    volume = _mask_volume_ml(mask)
    if volume < MIN_BODY_ML:
        raise DualpetInputError(
            f"{role} CT {path}: body mask (HU > -500) is only {volume:.0f} mL "
            f"(expected > {MIN_BODY_ML:.0f} mL); is this a CT in Hounsfield units?"
        )
    # Outside the body (plus a one-voxel rim keeping the skin edge), set air: the
    # couch, which does not move with the patient, then cannot attract either image.
    rim = sitk.BinaryDilate(mask, [1, 1, 1], sitk.sitkBall, 0.0, 1.0)
    return sitk.Mask(img, rim, AIR_HU), mask


def _affine_stage(rigid, fixed, moving, fmask, mmask, metric_mask, stages):
    """Refine ``rigid`` by an affine stage (appended to ``stages``); the transform kept."""
    aff = sitk.AffineTransform(3)
    aff.SetCenter(rigid.GetCenter())
    aff.SetMatrix(rigid.GetMatrix())
    aff.SetTranslation(rigid.GetTranslation())
    reg = _new_registration(metric_mask, SHRINK_FACTORS[1:], SMOOTHING_SIGMAS[1:], SAMPLING_FRACTIONS[1:], 1.0, 300)
    reg.SetInitialTransform(aff, inPlace=True)
    stages.append(_run_stage("affine", reg, fixed, moving))
    # Keep the affine result only if it fits the body clearly better than the rigid one:
    # on rigid motion the 6 extra parameters fit noise (measured: TRE median 0.08 ->
    # 0.39 mm on rigidly posed phantoms), on real anatomical change they should help.
    dice_rigid, dice_affine = _dice_in_overlap(fmask, mmask, rigid), _dice_in_overlap(fmask, mmask, aff)
    accepted = dice_affine >= dice_rigid + AFFINE_MIN_DICE_GAIN
    stages[-1].update(
        dice_rigid=dice_rigid,
        dice_affine=dice_affine,
        accepted=accepted,
        rule=f"accepted if body-mask Dice improves by >= {AFFINE_MIN_DICE_GAIN}",
    )
    return aff if accepted else rigid


def _qc_warnings(dice_before, dice_after, rotation_angle, used_stages):
    """What about a registration result a reader should look at."""
    qc_warnings = []
    if not dice_after >= 0.9:
        qc_warnings.append(f"body-mask Dice after registration is {dice_after:.3f} (< 0.9)")
    if dice_after < dice_before - 0.01:
        qc_warnings.append(f"body-mask Dice decreased ({dice_before:.3f} -> {dice_after:.3f})")
    # Large but real repositioning (measured: 16.9 deg on a phantom posed up to 10 deg per
    # axis, registered to 0.2 mm) is not a failure; beyond 25 deg a supine patient on a
    # couch is implausible, so the result is more likely wrong than the pose.
    if rotation_angle > MAX_PLAUSIBLE_ROTATION_DEG:
        qc_warnings.append(
            f"rotation of {rotation_angle:.1f} deg between studies (> {MAX_PLAUSIBLE_ROTATION_DEG:g} deg)"
        )
    # No limit on the translation: scanner origins (table position) differ between studies
    # by hundreds of mm, which says nothing about the quality of the alignment.
    for stage in used_stages:
        if "Maximum number of iterations" in stage["optimizer_stop_condition"]:
            qc_warnings.append(f"{stage['name']} stage stopped at the iteration limit")
    return qc_warnings


# ------------------------------------------------------------------------ transforms


def image_from_array(data, affine_lps):
    """SimpleITK image from an array indexed [i, j, k] and its voxel->LPS affine."""
    affine_lps = np.asarray(affine_lps, dtype=float)
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data, dtype=np.float32).transpose(2, 1, 0)))
    img.SetSpacing([float(v) for v in spacing])
    img.SetOrigin([float(v) for v in affine_lps[:3, 3]])
    img.SetDirection([float(v) for v in (affine_lps[:3, :3] / spacing).ravel()])
    return img


def matrix_4x4(tfm):
    """4x4 LPS matrix of a rigid/affine SimpleITK transform (x' = M @ [x, 1])."""
    A = np.asarray(tfm.GetMatrix(), dtype=float).reshape(3, 3)
    c = np.asarray(tfm.GetCenter(), dtype=float)
    M = np.eye(4)
    M[:3, :3] = A
    M[:3, 3] = c + np.asarray(tfm.GetTranslation(), dtype=float) - A @ c
    return M


#: PET-to-CT mutual information: intensity windows and histogram. Clipping the PET at
#: SUV 2.5 and the CT at 200 HU spreads the histogram over the tissues that carry the
#: anatomy (lung, fat, soft tissue); unclipped, the bladder's SUV ~25 leaves the body in a
#: few bins and the MI landscape flat (measured on phantoms: 10-20 mm errors unclipped,
#: 1.5-3 mm clipped).
PET_CT_SUV_CLIP = 2.5
PET_CT_HU_WINDOW = (-1000.0, 200.0)
PET_CT_BINS = 64


def register_pet_to_ct(pet_suv, pet_affine, ct_hu, ct_affine, *, threads=1, grid_mm=default("registration.grid_mm")):
    """Rigid PET-to-CT registration for a PET and a CT that do not share a frame of reference.

    Mattes mutual information between the PET (SUVbw on its native grid, clipped at
    :data:`PET_CT_SUV_CLIP`) and the CT (on a ``grid_mm`` grid, windowed), sampled in the
    CT body dilated by 3 voxels, initialised by the centres of mass of the body masks (CT:
    HU > -500; PET: SUV > 0.15, below the body's lowest physiological uptake of about
    0.3), three resolution levels. Accuracy on the phantoms: about 1.5-3 mm, mostly
    along z (a PET voxel is 4 mm).

    Returns
    -------
    M : ndarray (4, 4)
        Rigid LPS transform from the PET's world coordinates to the CT's: the PET's
        voxel->LPS affine in the CT's frame is ``M @ pet_affine`` (its voxels unchanged).
    qc : dict
        Method, final metric, translation (mm) and rotation (deg) of ``M``, body Dice.
    """
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, int(threads)))
    fixed = sitk.Clamp(_to_grid(image_from_array(ct_hu, ct_affine), grid_mm), sitk.sitkFloat32, *PET_CT_HU_WINDOW)
    fmask = body_mask(fixed)
    pet = image_from_array(pet_suv, pet_affine)
    moving = sitk.Clamp(pet, sitk.sitkFloat32, 0.0, PET_CT_SUV_CLIP)
    components = sitk.RelabelComponent(sitk.ConnectedComponent(pet > 0.15), sortByObjectSize=True)
    mmask = sitk.Cast(components == 1, sitk.sitkUInt8)
    rigid = _moments_init(fmask, mmask)
    reg = _new_registration(
        sitk.BinaryDilate(fmask, [3, 3, 3]),
        SHRINK_FACTORS,
        SMOOTHING_SIGMAS,
        [0.5] * len(SHRINK_FACTORS),
        2.0,
        300,
        bins=PET_CT_BINS,
    )
    reg.SetInitialTransform(rigid, inPlace=True)
    stage = _run_stage("pet_to_ct", reg, fixed, moving)
    M = np.linalg.inv(matrix_4x4(rigid))  # ITK maps fixed (CT) points to moving (PET) points
    qc = {
        "method": "rigid, Mattes mutual information (PET SUV clipped at "
        f"{PET_CT_SUV_CLIP}, CT {PET_CT_HU_WINDOW[0]:g}..{PET_CT_HU_WINDOW[1]:g} HU), PET native voxels kept",
        "expected_accuracy_mm": "about 1.5-3 (phantoms)",
        "final_metric_value": stage["final_metric_value"],
        "optimizer_stop_condition": stage["optimizer_stop_condition"],
        "translation_mm": M[:3, 3].tolist(),
        "rotation_deg": _rotation_angle_deg(M[:3, :3]),
        "dice_body_after": _dice_in_overlap(fmask, mmask, rigid),
    }
    return M, qc


def load_transform(path) -> sitk.Transform:
    """Read an ITK transform file as its concrete SimpleITK type.

    Parameters
    ----------
    path : str or path-like
        ``.tfm``/``.txt``/``.h5`` file written by :func:`register_ct` (or any ITK tool).

    Returns
    -------
    SimpleITK.Transform
        E.g. ``Euler3DTransform``; a composite holding a single transform is
        unwrapped. Maps reference LPS mm to index LPS mm.
    """
    path = Path(path)
    if not path.is_file():
        raise DualpetInputError(f"transform file not found: {path}")
    try:
        tfm = sitk.ReadTransform(str(path))
    except RuntimeError as exc:
        raise DualpetInputError(f"cannot read transform {path}: {exc}") from None
    if tfm.GetName() == "CompositeTransform":
        comp = sitk.CompositeTransform(tfm)
        if comp.GetNumberOfTransforms() == 1:
            tfm = comp.GetNthTransform(0)
    return tfm.Downcast()


def _as_transform(tfm):
    return tfm if isinstance(tfm, sitk.Transform) else load_transform(tfm)


def _map_points(tfm, points):
    pts = np.asarray(points, dtype=float)
    if pts.shape[-1:] != (3,):
        raise ValueError(f"points must have shape (N, 3) or (3,), got {pts.shape}")
    flat = pts.reshape(-1, 3)
    if hasattr(tfm, "GetMatrix"):  # rigid/affine: p' = A (p - c) + c + t, vectorised
        A = np.asarray(tfm.GetMatrix(), dtype=float).reshape(3, 3)
        c = np.asarray(tfm.GetCenter(), dtype=float)
        out = (flat - c) @ A.T + c + np.asarray(tfm.GetTranslation(), dtype=float)
    else:
        out = np.array([tfm.TransformPoint([float(v) for v in p]) for p in flat], dtype=float)
    return out.reshape(pts.shape)


def transform_points(tfm, points_lps) -> np.ndarray:
    """Map points from the reference study to the index study.

    Parameters
    ----------
    tfm : SimpleITK.Transform or path-like
        Transform from :func:`register_ct` (or its file).
    points_lps : array_like, shape (N, 3) or (3,)
        Points in reference-study LPS coordinates, mm.

    Returns
    -------
    numpy.ndarray
        Same shape; the points in index-study LPS coordinates, mm.
    """
    return _map_points(_as_transform(tfm), points_lps)


def inverse_transform_points(tfm, points_lps) -> np.ndarray:
    """Map points from the index study back to the reference study.

    Parameters
    ----------
    tfm : SimpleITK.Transform or path-like
        Transform from :func:`register_ct` (reference -> index), or its file.
    points_lps : array_like, shape (N, 3) or (3,)
        Points in index-study LPS coordinates, mm.

    Returns
    -------
    numpy.ndarray
        Same shape; the points in reference-study LPS coordinates, mm.
    """
    tfm = _as_transform(tfm)
    try:
        inverse = tfm.GetInverse()
    except RuntimeError as exc:
        raise ValueError(f"{tfm.GetName()} has no closed-form inverse: {exc}") from None
    return _map_points(inverse, points_lps)


def _moving_image(path, interpolation, default_value):
    """The image to resample, the pixel type to resample in and the stored type: float32,
    or for ``"nearest"`` an integer label map's own type (``default_value`` a valid label)."""
    import nibabel as nib

    out_dtype = np.dtype(np.float32)
    if isinstance(path, sitk.Image):  # already read (read_ct): interpolated in double, output float32
        if interpolation != "linear":
            raise ValueError("an image already read is resampled linearly")
        return path, sitk.sitkFloat32, out_dtype
    if interpolation == "nearest":
        mov_hdr = nib.load(str(path)).header
        slope, inter = mov_hdr.get_slope_inter()
        on_disk = np.dtype(mov_hdr.get_data_dtype())
        if on_disk.kind in "iub" and slope in (None, 1.0) and inter in (None, 0.0):
            out_dtype = np.dtype(np.uint8) if on_disk.kind == "b" else on_disk
        if out_dtype.kind in "iu":
            info = np.iinfo(out_dtype)
            if not (float(default_value).is_integer() and info.min <= default_value <= info.max):
                raise ValueError(f"default_value {default_value} is not a valid {out_dtype} label")
        moving = _read_image(path)
        pixel_type = moving.GetPixelID()
    else:
        moving = _read_image(path, sitk.sitkFloat32)
        pixel_type = sitk.sitkFloat32

    return moving, pixel_type, out_dtype


def resample_to_reference(
    moving_img_path, reference_img_path, tfm_path, out_path, *, interpolation="linear", default_value=0.0, dtype=None
):
    """Resample an index-study image onto the grid of a reference-study image.

    Parameters
    ----------
    moving_img_path : str or path-like or SimpleITK.Image
        Index-study NIfTI (CT in HU, PET in Bq/mL or SUV, or an integer label map), or
        one already read (:func:`read_ct`; ``"linear"`` only).
        Any image of the index study works: PET and CT share its frame of reference.
    reference_img_path : str or path-like
        Reference-study NIfTI whose grid (shape, affine) the output takes.
    tfm_path : str or path-like or SimpleITK.Transform
        Transform from :func:`register_ct` (reference LPS mm -> index LPS mm), or one
        already read (:func:`load_transform`).
    out_path : str or path-like or None
        Output NIfTI, written atomically (None: only returned).
    interpolation : {"linear", "nearest"}
        ``"linear"`` for intensities (output float32); ``"nearest"`` for label maps
        (output keeps the input's integer dtype; float inputs stay float32).
    default_value : float
        Value outside the index image's field of view (e.g. -1024 for CT, 0 for PET
        and labels).
    dtype : numpy dtype, optional
        Stored type of a ``"linear"`` output (default float32); an integer type rounds
        (e.g. int16 for a CT shown in HU: half the bytes to compress and write).

    Returns
    -------
    numpy.ndarray
        The resampled image, indexed [i, j, k] as the file's data (no need to read it back).

    Notes
    -----
    The output affine is the reference file's affine (checked against the geometry
    SimpleITK derives from it to 1e-3 mm; if they disagree, e.g. inconsistent
    sform/qform, the SimpleITK geometry actually used for sampling is written).
    """
    import nibabel as nib

    if interpolation not in _INTERPOLATORS:
        raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATORS)}, got {interpolation!r}")
    tfm = _as_transform(tfm_path)

    moving, pixel_type, out_dtype = _moving_image(moving_img_path, interpolation, default_value)
    size, origin, spacing, direction = _read_geometry(reference_img_path)
    out = sitk.Resample(
        moving,
        size,
        tfm,
        _INTERPOLATORS[interpolation],
        origin,
        spacing,
        direction,
        float(default_value),
        pixel_type,
    )
    arr = sitk.GetArrayFromImage(out).transpose(2, 1, 0)  # (k, j, i) -> (i, j, k)
    if dtype is not None and interpolation == "linear":
        out_dtype = np.dtype(dtype)
        if out_dtype.kind in "iu":
            info = np.iinfo(out_dtype)
            np.clip(np.rint(arr, out=arr), info.min, info.max, out=arr)  # in place: no copy of the grid
    arr = arr.astype(out_dtype, copy=False)
    del moving  # the index image is not needed to write the file: its memory goes before the compression

    ref_img = nib.load(str(reference_img_path))
    affine_ras = LPS_TO_RAS @ _lps_affine(out)
    if np.allclose(ref_img.affine, affine_ras, atol=1e-3):
        affine_ras = np.asarray(ref_img.affine, dtype=float)
    else:
        warnings.warn(
            f"{reference_img_path}: nibabel affine differs from the SimpleITK geometry; "
            "writing the geometry used for resampling",
            stacklevel=2,
        )
    img = nib.Nifti1Image(arr, affine_ras)
    img.header.set_data_dtype(out_dtype)
    img.header.set_xyzt_units("mm", "sec")
    ref_hdr = ref_img.header
    sform_code = int(ref_hdr["sform_code"]) if "sform_code" in ref_hdr else 0
    qform_code = int(ref_hdr["qform_code"]) if "qform_code" in ref_hdr else 0
    img.set_sform(affine_ras, code=sform_code or 2)
    if qform_code:
        img.set_qform(affine_ras, code=qform_code)
    if out_path is not None:
        save_nifti(out_path, img)
    return arr


def write_views(
    reference_ct, index_ct, tfm_path, reference_pet, index_pet, ct_out, pet_out, png, *, title="", images=None
):
    """The index study in the reference space, for viewing only (quantification always
    uses each PET's own voxels), and the registration's QC picture.

    Writes the index CT on the reference CT's grid in whole HU (``ct_out``, int16), the
    index PET on the reference PET's grid, its native resolution (``pet_out``), and
    :func:`dualpet.qc.registration_figure` (``png``), whose planes (:func:`dualpet.qc.figure_cuts`)
    are the only part of the reference CT grid the fused PET is sampled on.

    ``images``: a list of the two CTs as :func:`read_ct` read them, when the caller has
    them already; it is emptied, so that each CT's memory goes once it has been used.
    """
    from dualpet.qc import figure_cuts, registration_figure

    if images is None:
        images = [read_ct(reference_ct), read_ct(index_ct)]
    fixed, moving = images
    images.clear()
    tfm = load_transform(tfm_path)
    ref = sitk.GetArrayViewFromImage(fixed).transpose(2, 1, 0)  # [i, j, k], no copy
    _, cj, ck = figure_cuts(ref)
    # the reference CT grid's axial plane k = ck and coronal plane j = cj: (name, size, first voxel, [i, j, k] cut)
    planes = (
        ("axial", (ref.shape[0], ref.shape[1], 1), (0, 0, ck), np.s_[:, :, ck]),
        ("coronal", (ref.shape[0], 1, ref.shape[2]), (0, cj, 0), np.s_[:, cj, :]),
    )
    grid = {name: (size, fixed.TransformIndexToPhysicalPoint(start)) for name, size, start, _ in planes}
    spacing, direction = fixed.GetSpacing(), fixed.GetDirection()
    views = {name: {"reference CT": np.array(ref[cut])} for name, _, _, cut in planes}
    del ref, fixed
    ct = resample_to_reference(moving, reference_ct, tfm, ct_out, default_value=-1024.0, dtype=np.int16)
    del moving
    for name, _, _, cut in planes:
        views[name]["index CT"] = np.array(ct[cut])
    del ct
    pet_image = _read_image(index_pet, sitk.sitkFloat32)
    pet = resample_to_reference(pet_image, reference_pet, tfm, pet_out, default_value=0.0)
    for name, (size, origin) in grid.items():
        plane = sitk.Resample(pet_image, size, tfm, sitk.sitkLinear, origin, spacing, direction, 0.0, sitk.sitkFloat32)
        views[name]["index PET"] = (
            sitk.GetArrayFromImage(plane).transpose(2, 1, 0).squeeze(axis=2 if name == "axial" else 1)
        )
    registration_figure(views, png, pet=pet, title=title, spacing=spacing)
