"""Background VOIs against the generator's truth, and sheet coordinates."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from dualpet.background import blood_pool, liver, measure_at
from dualpet.convert import convert_study
from dualpet.errors import DualpetInputError
from dualpet.geometry import lps_affine


@pytest.fixture(scope="module")
def converted(cohort_dir, truth, tmp_path_factory):
    out = {}
    for pid in truth:
        for tracer in truth[pid]["tracers"]:
            d = tmp_path_factory.mktemp(f"{pid}{tracer}")
            convert_study(cohort_dir / "dicom" / pid / tracer, patient=pid, tracer=tracer, ct_out=d / "ct.nii.gz",
                          pet_out=d / "pet.nii.gz", json_out=d / "pet.json")  # fmt: skip
            ct, pet = nib.load(d / "ct.nii.gz"), nib.load(d / "pet.nii.gz")
            out[pid, tracer] = (np.asarray(ct.dataobj), lps_affine(ct.affine), np.asarray(pet.dataobj), lps_affine(pet.affine))
    return out


def test_blood_pool_against_truth(converted, truth):
    # 15 %: the 10 x 20 mm VOI holds ~25 correlated PET voxels; measured SD of the error on
    # 16 phantom studies 6.4 %, so 15 % is more than 2 SD
    for (pid, tracer), args in converted.items():
        expected = truth[pid]["studies"][tracer]["background"]["blood_pool_suvmean_noiseless"]
        assert blood_pool(*args)["suvmean"] == pytest.approx(expected, rel=0.15), (pid, tracer)


def test_liver_against_truth(converted, truth):
    # 10 %: a 30 mm sphere (~220 voxels) inside liver parenchyma; measured on 16 phantom
    # studies: mean -0.4 %, SD 2.9 %, max 6 %
    for (pid, tracer), args in converted.items():
        expected = truth[pid]["studies"][tracer]["background"]["liver_suv_true"]
        got = liver(*args)
        assert got["suvmean"] == pytest.approx(expected, rel=0.10), (pid, tracer)
        assert got["source"].startswith("liver:auto") and got["n_voxels"] > 150


def test_measure_at_sheet_coordinates():
    suv = np.full((40, 40, 40), 2.0, np.float32)
    suv[:, :, 30:] = 9.0
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    bp = measure_at(suv, aff, [40.0, 40.0, 30.0], "bloodpool")
    assert bp["suvmean"] == pytest.approx(2.0) and "sheet coordinates" in bp["source"]
    # a 10 mm x 20 mm cylinder at 2 mm voxels: ~ pi 5^2 x 20 / 8 = 196 voxel centres
    assert 150 < bp["n_voxels"] < 250
    lv = measure_at(suv, aff, [40.0, 40.0, 30.0], "liver")
    assert lv["suvmean"] == pytest.approx(2.0) and lv["source"].startswith("liver:sheet")


def test_background_outside_the_pet_is_named():
    """A sheet coordinate far outside the PET (a typo in background_lps) is refused by name."""
    suv = np.ones((20, 20, 20), np.float32)
    for method in ("bloodpool", "liver"):
        with pytest.raises(DualpetInputError, match=r"background VOI at \[0.0, 0.0, 9000.0\] lies outside the PET"):
            measure_at(suv, np.diag([4.0, 4.0, 4.0, 1.0]), [0.0, 0.0, 9000.0], method)
