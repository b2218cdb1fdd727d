"""Exclusion masks of physiological uptake (e.g. TotalSegmentator organ labels)."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from dualpet.convert import convert_study
from dualpet.detection.study import segment_study
from dualpet.geometry import apply_affine, lps_affine, ras_affine
from dualpet.io import read_json
from dualpet.nifti import mask_on_grid


def test_mask_on_grid_matches_the_world_positions(tmp_path):
    """A label sphere on a 2 mm grid lands on a 4 mm grid with another origin where the
    target voxel centres lie inside it (nearest neighbour: within one source voxel)."""
    src_aff = np.diag([2.0, 2.0, 2.0, 1.0])
    src_aff[:3, 3] = [-40.0, -30.0, 100.0]
    idx = np.indices((50, 50, 50))
    world = np.moveaxis(apply_affine(src_aff, np.moveaxis(idx, 0, -1)), -1, 0)
    centre = np.array([5.0, 8.0, 150.0])
    labels = np.zeros((50, 50, 50), np.int16)
    labels[np.linalg.norm(world - centre[:, None, None, None], axis=0) <= 12.0] = 5
    labels[:3, :3, :3] = 7  # another organ, not selected
    nib.save(nib.Nifti1Image(labels, ras_affine(src_aff)), str(tmp_path / "m.nii.gz"))
    tgt_aff = np.diag([4.0, 4.0, 4.0, 1.0])
    tgt_aff[:3, 3] = [-38.0, -27.0, 103.0]
    out = mask_on_grid(tmp_path / "m.nii.gz", [5], (25, 25, 25), tgt_aff)
    tgt_world = apply_affine(tgt_aff, np.argwhere(np.ones((25, 25, 25), bool)))
    d = np.linalg.norm(tgt_world - centre, axis=1).reshape(25, 25, 25)
    assert out[d <= 12.0 - 2.0].all() and not out[d >= 12.0 + 2.0].any()  # 2 mm: one source voxel
    assert not mask_on_grid(tmp_path / "m.nii.gz", [9], (25, 25, 25), tgt_aff).any()
    assert mask_on_grid(tmp_path / "m.nii.gz", None, (25, 25, 25), tgt_aff).sum() >= out.sum()


def test_excluded_uptake_is_not_a_lesion(cohort_dir, truth, tmp_path):
    pid, tracer = "P001", "fdg"
    t = truth[pid]
    convert_study(
        cohort_dir / "dicom" / pid / tracer,
        patient=pid,
        tracer=tracer,
        ct_out=tmp_path / "ct.nii.gz",
        pet_out=tmp_path / "pet.nii.gz",
        json_out=tmp_path / "pet.json",
    )
    detection = {"method": "background", "factor": 2.0}
    segment_study(
        tmp_path / "ct.nii.gz",
        tmp_path / "pet.nii.gz",
        tmp_path / "l0.nii.gz",
        tmp_path / "s0.json",
        detection=detection,
        patient=pid,
        tracer=tracer,
    )
    found = [np.array(les["peak_lps"]) for les in read_json(tmp_path / "s0.json")["detection"]["lesions"]]
    target = next(
        les
        for les in t["lesions"]
        if les["detectable"][tracer] and min(np.linalg.norm(f - les["center_lps"][tracer]) for f in found) < 10
    )
    # a "TotalSegmentator-like" label image on the CT grid: label 21 around that lesion
    ct = nib.load(tmp_path / "ct.nii.gz")
    world = apply_affine(lps_affine(ct.affine), np.argwhere(np.ones(ct.shape, bool))).reshape(*ct.shape, 3)
    lab = np.where(np.linalg.norm(world - target["center_lps"][tracer], axis=-1) <= target["radius_mm"] + 12, 21, 0)
    nib.save(nib.Nifti1Image(lab.astype(np.int16), ct.affine), str(tmp_path / "organs.nii.gz"))
    segment_study(
        tmp_path / "ct.nii.gz",
        tmp_path / "pet.nii.gz",
        tmp_path / "l1.nii.gz",
        tmp_path / "s1.json",
        detection={**detection, "exclusion_labels": {tracer: [21]}},
        patient=pid,
        tracer=tracer,
        exclusion_mask=tmp_path / "organs.nii.gz",
    )
    seg = read_json(tmp_path / "s1.json")["detection"]
    after = [np.array(les["peak_lps"]) for les in seg["lesions"]]
    assert seg["exclusion_mask"]["provided"] and seg["exclusion_mask"]["voxels"] > 0
    assert len(after) == len(found) - 1
    assert all(np.linalg.norm(f - target["center_lps"][tracer]) > 10 for f in after)
