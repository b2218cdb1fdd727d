"""Cross-tracer lesion matching and the per-lesion crops the metric jobs read.

Each tracer's lesions are detected on that study's own PET. Their VOI centroids are
mapped into the reference study's LPS space (index -> reference through the inverse of
the registration transform) and paired by minimum total distance (Hungarian assignment)
within ``tolerance_mm``: a pair is one lesion; unpaired lesions are single-tracer lesions.
Every union lesion is measured on both PETs, on native voxels: where a tracer did not
detect it, the other tracer's VOI is carried onto this tracer's grid (nearest neighbour
through the transform) and measured there.

Output per patient: ``index.tsv`` (one row per union lesion) and one ``{lesion}.npz``
crop per lesion holding, per tracer, the SUV crop, the region/VOI mask, the crop's
voxel->LPS affine and how the VOI is to be formed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from dualpet.anatomy import BONE_HU_MIN, FAT_HU, LUNG_HU
from dualpet.geometry import apply_affine, values_in_ball, voxel_spacing, world_to_voxel
from dualpet.interchange import REGION_UNKNOWN, index_columns, lesion_id, write_crop, write_voi
from dualpet.io import write_tsv
from dualpet.metrics import isocontour_voi
from dualpet.registration import inverse_transform_points, transform_points
from dualpet.settings import default

#: Crop margin around a VOI (mm): covers the SUVpeak sphere (6.2 mm) and display context.
CROP_MARGIN_MM = 12.0
#: Two lesions left unpaired by centroid distance are one lesion if their VOIs share at
#: least this fraction of the smaller VOI: a lesion seen on both tracers overlaps itself
#: broadly, two neighbouring lesions only touch (measured: 10 % for two liver lesions
#: 25 mm apart, one per tracer, that a bare "any shared voxel" rule merged).
OVERLAP_SHARE_MIN = 0.3


def lesion_vois(suv, labels, affine, fraction, neighbourhood_mm, reader=None):
    """Per detected lesion: crop, neighbourhood, VOI, centroid (LPS) and the VOI's ``mode``.

    The neighbourhood is the lesion's detection region dilated by ``neighbourhood_mm``
    without entering another lesion's region; the VOI is the ``fraction`` isocontour of the
    lesion's SUVmax grown from the maximum inside it (so a lesion whose 41 % level lies
    below the detection threshold keeps its full isocontour; mode ``isocontour``). Crops
    extend ``neighbourhood_mm + CROP_MARGIN_MM`` beyond the detection region.

    ``reader``: the labels are a reader's contours (detection method 'masks'): with
    ``contour`` each VOI is the contour itself (mode ``reader_contour``), with
    ``isocontour`` the isocontour grown inside the contour only.
    """
    spacing = voxel_spacing(affine)
    reach = np.ceil((neighbourhood_mm + CROP_MARGIN_MM) / spacing).astype(int)
    out = {}
    for lab, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        lo = np.maximum([s.start for s in sl] - reach, 0)
        hi = np.minimum([s.stop for s in sl] + reach, labels.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        sub = labels[box]
        dist = ndimage.distance_transform_edt(sub != lab, sampling=spacing)
        others = (sub != 0) & (sub != lab)
        # the neighbourhood: within neighbourhood_mm of the lesion's region, nearer to it than
        # to any other lesion's region (a small lesion beside a hot one keeps to its side)
        # (strictly nearer: a voxel as near to another lesion belongs to neither, so VOIs never overlap)
        nearer = dist < ndimage.distance_transform_edt(~others, sampling=spacing) if others.any() else True
        near = (dist <= neighbourhood_mm) & ~others & nearer
        mode = "isocontour"
        if reader == "contour":
            near, voi, mode = sub == lab, sub == lab, "reader_contour"
        else:
            if reader == "isocontour":
                near = sub == lab
            voi = isocontour_voi(suv[box], near, fraction, seed=sub == lab)
        out[lab] = {
            "mode": mode,
            "box": box,
            "lo": lo,
            "crop_affine": _crop_affine(affine, lo),
            "neighbourhood": near,
            "seed": sub == lab,
            "voi": voi,
            "centroid": apply_affine(affine, np.argwhere(voi).mean(axis=0) + lo),
        }
    return out


def match(ref_centroids, idx_centroids_in_ref, tolerance_mm):
    """Pairs (ref_label, idx_label, distance) by Hungarian assignment within tolerance."""
    ref_labs, idx_labs = list(ref_centroids), list(idx_centroids_in_ref)
    if not ref_labs or not idx_labs:
        return []
    a = np.array([ref_centroids[k] for k in ref_labs])
    b = np.array([idx_centroids_in_ref[k] for k in idx_labs])
    d = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(np.where(d <= tolerance_mm, d, 1e6))
    return [(ref_labs[r], idx_labs[c], float(d[r, c])) for r, c in zip(rows, cols) if d[r, c] <= tolerance_mm]


def overlap_pairs(cents, ref, idx, idx_in_ref, pairs, idx_study, tfm, search_mm=60.0):
    """Pairs of lesions left unmatched by centroid distance whose VOIs overlap.

    A large or irregular lesion can have its two tracers' centroids further apart than the
    tolerance; if the reference VOI, carried onto the index grid, shares at least
    OVERLAP_SHARE_MIN of the smaller VOI with an unmatched index VOI (centroids within
    ``search_mm``), they are one lesion. Conflicts are resolved greedily by the number of
    shared voxels.
    """
    done_ref, done_idx = {p[0] for p in pairs}, {p[1] for p in pairs}
    candidates = []
    for r, rv in cents[ref].items():
        if r in done_ref:
            continue
        near = [
            i for i in cents[idx] if i not in done_idx and np.linalg.norm(idx_in_ref[i] - rv["centroid"]) <= search_mm
        ]
        if not near:
            continue
        centre_idx = transform_points(tfm, rv["centroid"][None])[0]
        # destination = index grid: its points map back to the reference by the inverse
        carried = carry_voi(
            rv["voi"],
            rv["crop_affine"],
            idx_study["suv"].shape,
            idx_study["affine"],
            lambda pts: inverse_transform_points(tfm, pts),
            centre_idx,
            search_mm + 30.0,
        )
        n_carried = int(carried.sum())
        for i in near:
            iv = cents[idx][i]
            shared = int((carried[iv["box"]] & iv["voi"]).sum())
            if shared and shared >= OVERLAP_SHARE_MIN * min(n_carried, int(iv["voi"].sum())):
                candidates.append((shared, r, i))
    out = []
    for _, r, i in sorted(candidates, reverse=True):
        if r not in done_ref and i not in done_idx:
            done_ref.add(r)
            done_idx.add(i)
            out.append((r, i, float(np.linalg.norm(idx_in_ref[i] - cents[ref][r]["centroid"]))))
    return out


def _crop_box(mask_or_points, affine, shape, margin_mm):
    """Index box (lo, hi) around voxels of a mask, with a margin in mm."""
    idx = np.argwhere(mask_or_points)
    margin = np.ceil(margin_mm / voxel_spacing(affine)).astype(int)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, shape)
    return lo, hi


def _crop_affine(affine, lo):
    out = affine.copy()
    out[:3, 3] = apply_affine(affine, lo)
    return out


def carry_voi(voi, src_affine, dst_shape, dst_affine, dst_to_src, centre_dst, radius_mm):
    """Nearest-neighbour resampling of a VOI onto another grid.

    ``dst_to_src`` maps LPS points of the destination study to the source study. Only a
    box of ``radius_mm`` around ``centre_dst`` (LPS, destination) is evaluated.
    """
    c = world_to_voxel(dst_affine, centre_dst)
    reach = np.ceil(radius_mm / voxel_spacing(dst_affine)).astype(int) + 1
    lo = np.maximum(np.floor(c).astype(int) - reach, 0)
    hi = np.minimum(np.floor(c).astype(int) + reach + 1, dst_shape)
    out = np.zeros(dst_shape, dtype=bool)
    if np.any(hi <= lo):
        return out
    idx = np.indices(hi - lo).reshape(3, -1).T + lo
    src_vox = np.rint(world_to_voxel(src_affine, dst_to_src(apply_affine(dst_affine, idx)))).astype(int)
    ok = np.all((src_vox >= 0) & (src_vox < voi.shape), axis=1)
    hit = np.zeros(len(idx), dtype=bool)
    hit[ok] = voi[tuple(src_vox[ok].T)]
    out[tuple(idx[hit].T)] = True
    return out


#: Region labels: the shell around a lesion in which its surroundings are read starts
#: REGION_SHELL_MM[0] beyond its equivalent radius and is REGION_SHELL_MM[1] thick (at
#: least 10-20 mm from its centroid). A lesion is 'lung' if aerated lung fills
#: REGION_PARENCHYMA_SHARE of the shell (a nodule in the parenchyma), or
#: REGION_HILAR_LUNG_SHARE for a tumour of at least REGION_TUMOUR_RADIUS_MM (a central or
#: hilar lung tumour borders lung on one side and the mediastinum on the other); else
#: 'lymph node' if fat fills REGION_FAT_SHARE (hilar nodes too), else 'lung' if lung
#: fills REGION_LUNG_SHARE.
REGION_SHELL_MM = (5.0, 10.0)
REGION_PARENCHYMA_SHARE, REGION_LUNG_SHARE, REGION_HILAR_LUNG_SHARE, REGION_TUMOUR_RADIUS_MM = 0.6, 0.4, 0.2, 15.0
REGION_FAT_SHARE = 0.15


def region_label(ct_hu, ct_affine, point_lps, radius_mm=8.0, liver=None, lesion_radius_mm=0.0):
    """Anatomical region from the reference CT around a lesion centroid.

    ``liver`` is the ``(mask, affine)`` of the liver in the study's organ map, or None;
    ``lesion_radius_mm`` the lesion's equivalent radius (from its VOI's volume).

    In this order: 'bone' (a quarter or more of the voxels within ``radius_mm`` above 150
    HU), 'lung' (their median below -300 HU), 'liver' (the centroid inside the CT liver
    label of the organ map), then by the shell just outside the lesion (REGION_SHELL_MM):
    'lung' (aerated lung, -950..-500 HU, in REGION_PARENCHYMA_SHARE of it, or
    REGION_HILAR_LUNG_SHARE for a tumour; outside air and bowel gas are denser than -950
    HU), 'lymph node' (fat making up REGION_FAT_SHARE of it: nodal stations, hilar ones
    too, lie in mediastinal, retroperitoneal and mesenteric fat), 'lung' (REGION_LUNG_SHARE
    of lung), otherwise 'other'; 'unknown' if the point lies outside the CT (a PET plane the
    CT leaves uncovered).
    """
    hu = values_in_ball(ct_hu, ct_affine, point_lps, radius_mm)
    if hu.size == 0:
        return REGION_UNKNOWN
    if np.percentile(hu, 75) > BONE_HU_MIN:
        return "bone"
    if np.median(hu) < -300:
        return "lung"
    if liver is not None:
        mask, mask_affine = liver
        v = np.rint(world_to_voxel(mask_affine, point_lps)).astype(int)
        if np.all(v >= 0) and np.all(v < mask.shape) and mask[tuple(v)]:
            return "liver"
    inner = max(10.0, lesion_radius_mm + REGION_SHELL_MM[0])
    shell = values_in_ball(ct_hu, ct_affine, point_lps, inner + REGION_SHELL_MM[1], inner_mm=inner)
    if not shell.size:
        return "other"
    lung = float(np.mean((shell > LUNG_HU[0]) & (shell < LUNG_HU[1])))
    fat = float(np.mean((shell >= FAT_HU[0]) & (shell <= FAT_HU[1])))
    if lung >= REGION_PARENCHYMA_SHARE or (
        lesion_radius_mm >= REGION_TUMOUR_RADIUS_MM and lung >= REGION_HILAR_LUNG_SHARE
    ):
        return "lung"
    if fat >= REGION_FAT_SHARE:  # a node, hilar ones too: they sit in fat between lung and vessels
        return "lymph node"
    return "lung" if lung >= REGION_LUNG_SHARE else "other"


def build_lesions(
    patient,
    tracers,
    studies,
    tfm,
    out_index,
    out_crops,
    *,
    tolerance_mm=default("matching.tolerance_mm"),
    fraction=default("voi.isocontour"),
    neighbourhood_mm=default("voi.neighbourhood_mm"),
    ref_ct=None,
    ref_anatomy=None,
    out_vois=None,
    reader_masks=default("voi.reader_masks"),
):
    """Match both tracers' lesions, write ``index.tsv`` and one crop per union lesion.

    Parameters
    ----------
    patient : str
    tracers : (reference, index) tracer names.
    studies : dict
        tracer -> {"suv": array, "affine": voxel->LPS, "labels": detection regions,
        "background": background SUVmean}.
    tfm : SimpleITK transform (reference LPS -> index LPS).
    ref_ct : (hu, affine), optional
        Reference CT for the region label.
    ref_anatomy : (labels, affine), optional
        Reference study's organ map (its liver label) for the region label.
    out_vois : dict, optional
        tracer -> path of that study's ``voi.nii.gz`` (label k = lesion Lk: the VOI its
        lesion job measures, own isocontour or carried over).
    reader_masks : 'contour' or 'isocontour'
        For a study whose lesions are a reader's contours (``studies[t]['reader_masks']``):
        its VOIs are the contours, or the isocontours inside them (see :func:`lesion_vois`).
    """
    ref, idx = tracers
    cents = {t: _study_vois(studies[t], fraction, neighbourhood_mm, reader_masks) for t in tracers}
    union = _union_lesions(cents, ref, idx, tfm, tolerance_mm, studies[idx])
    liver = _liver(ref_anatomy)

    to_src = {  # destination tracer -> function mapping its LPS points into the other study
        ref: lambda pts: transform_points(tfm, pts),
        idx: lambda pts: inverse_transform_points(tfm, pts),
    }
    out_crops = Path(out_crops)
    out_crops.mkdir(parents=True, exist_ok=True)
    rows = []
    width = max(2, len(str(len(union))))
    vois = _own_vois(union, cents, studies, tracers)
    for n, u in enumerate(union, start=1):
        lesion = lesion_id(n, width)
        row = {"patient": patient, "lesion": lesion}
        row.update(dict(zip(("x_mm", "y_mm", "z_mm"), (float(v) for v in u["centroid_ref"]))))
        t_voi = ref if u[ref] is not None else idx
        row["region"] = _region(cents[t_voi][u[t_voi]], studies[t_voi], u["centroid_ref"], ref_ct, liver)
        row["match_distance_mm"] = u["distance_mm"]
        crop = {}
        for t in tracers:
            other = idx if t == ref else ref
            row[f"{t}_detected"] = int(u[t] is not None)
            row[f"{t}_label"] = u[t]
            if u[t] is not None:  # detected: its neighbourhood (the metric job draws the isocontour), or its contour
                own = cents[t][u[t]]
                crop[t] = _crop_entry(studies[t], own["box"], own["neighbourhood"], own["lo"], own["mode"], own["seed"])
            else:  # not detected: the other tracer's VOI carried onto this grid
                centre_t = u["centroid_ref"] if t == ref else transform_points(tfm, u["centroid_ref"][None])[0]
                crop[t] = _carried_crop(cents[other][u[other]], studies[t], vois[t], n, to_src[t], centre_t, other)
            row[f"{t}_voi_source"] = crop[t]["mode"]
        write_crop(out_crops / f"{lesion}.npz", fraction, crop)
        rows.append(row)
    index = pd.DataFrame(rows, columns=index_columns(tracers))
    for t, path in (out_vois or {}).items():
        write_voi(path, vois[t], studies[t]["affine"])
    write_tsv(out_index, index)
    return index


def _study_vois(study, fraction, neighbourhood_mm, reader_masks):
    """One study's lesion VOIs (:func:`lesion_vois`), reader's contours as configured."""
    return lesion_vois(
        study["suv"],
        study["labels"],
        study["affine"],
        fraction,
        neighbourhood_mm,
        reader=reader_masks if study.get("reader_masks") else None,
    )


def _union_lesions(cents, ref, idx, tfm, tolerance_mm, idx_study):
    """Union lesions (paired, then reference-only, then index-only), sorted superior first."""
    idx_in_ref = {}
    if cents[idx]:
        labs = list(cents[idx])
        mapped = inverse_transform_points(tfm, np.array([cents[idx][k]["centroid"] for k in labs]))
        idx_in_ref = dict(zip(labs, mapped))
    pairs = match({k: v["centroid"] for k, v in cents[ref].items()}, idx_in_ref, tolerance_mm)
    pairs += overlap_pairs(cents, ref, idx, idx_in_ref, pairs, idx_study, tfm)
    union = [{ref: r, idx: i, "distance_mm": d} for r, i, d in pairs]
    union += [{ref: r, idx: None, "distance_mm": None} for r in cents[ref] if r not in {p[0] for p in pairs}]
    union += [{ref: None, idx: i, "distance_mm": None} for i in cents[idx] if i not in {p[1] for p in pairs}]
    for u in union:
        u["centroid_ref"] = cents[ref][u[ref]]["centroid"] if u[ref] is not None else idx_in_ref[u[idx]]
    union.sort(key=lambda u: (-u["centroid_ref"][2], u["centroid_ref"][0]))
    return union


def _liver(ref_anatomy):
    """The liver ``(mask, affine)`` of the reference organ map, or None without one."""
    if ref_anatomy is None:
        return None
    from dualpet.anatomy import organ_voxels

    return (organ_voxels(ref_anatomy[0], "liver"), ref_anatomy[1])


def _own_vois(union, cents, studies, tracers):
    """Per tracer, a label image of the studies' own VOIs (label n = union lesion n)."""
    vois = {t: np.zeros(studies[t]["suv"].shape, dtype=np.int32) for t in tracers}
    # the studies' own VOIs first (they never overlap: each keeps to its side), so that a VOI
    # carried over from the other tracer only takes the voxels no own VOI holds, and the
    # lesion job measures exactly the VOI written to voi.nii.gz
    for n, u in enumerate(union, start=1):
        for t in tracers:
            if u[t] is not None:
                own = cents[t][u[t]]
                vois[t][own["box"]][own["voi"] & (vois[t][own["box"]] == 0)] = n
    return vois


def _region(voi, study, centroid_ref, ref_ct, liver):
    """A lesion's region label from the reference CT ('' without one), sized by its VOI."""
    vol_mm3 = float(voi["voi"].sum() * np.prod(voxel_spacing(study["affine"])))
    radius = (3.0 * vol_mm3 / (4.0 * np.pi)) ** (1.0 / 3.0)
    return region_label(*ref_ct, centroid_ref, liver=liver, lesion_radius_mm=radius) if ref_ct is not None else ""


def _crop_entry(study, box, mask, lo, mode, seed):
    """One tracer's part of a lesion crop: SUV and mask in ``box``, the crop's affine, mode, seed."""
    return {
        "suv": study["suv"][box],
        "mask": mask,
        "affine": _crop_affine(study["affine"], lo),
        "mode": mode,
        "background": study["background"],
        "seed": seed,
    }


def _carried_crop(src, study, voi, n, to_src, centre, other):
    """The crop of a lesion this tracer missed: ``src`` (the other tracer's VOI) carried onto its grid."""
    full = carry_voi(src["voi"], src["crop_affine"], study["suv"].shape, study["affine"], to_src, centre, 60.0)
    if not full.any():  # the lesion lies outside this PET's field of view
        return {"mode": "outside_field_of_view"}
    lo, hi = _crop_box(full, study["affine"], study["suv"].shape, CROP_MARGIN_MM)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    free = full[box] & (voi[box] == 0)
    mask = free if free.any() else full[box]
    voi[box][mask & (voi[box] == 0)] = n  # label n of the study's voi.nii.gz, in place
    return _crop_entry(study, box, mask, lo, f"mapped_from_{other}", None)
