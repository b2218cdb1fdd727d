"""The organ map (dualpet.anatomy) and the background VOIs from it, against the generator's
truth (organ maps, background SUVs), and sheet coordinates."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from dualpet.anatomy import ORGAN_CLASSES, ORGANS, segment_ct
from dualpet.background import background_from_anatomy, liver_centres, measure_at
from dualpet.convert import convert_study
from dualpet.errors import DualpetInputError
from dualpet.geometry import apply_affine, lps_affine


@pytest.fixture(scope="module")
def converted(cohort_dir, truth, tmp_path_factory):
    """Per study: CT, its affine, PET, its affine, the organ map and its report."""
    out = {}
    for pid in truth:
        for tracer in truth[pid]["tracers"]:
            d = tmp_path_factory.mktemp(f"{pid}{tracer}")
            convert_study(
                cohort_dir / "dicom" / pid / tracer,
                patient=pid,
                tracer=tracer,
                ct_out=d / "ct.nii.gz",
                pet_out=d / "pet.nii.gz",
                json_out=d / "pet.json",
            )
            ct, pet = nib.load(d / "ct.nii.gz"), nib.load(d / "pet.nii.gz")
            hu, ct_aff = np.asarray(ct.dataobj, dtype=np.float32), lps_affine(ct.affine)
            labels, report = segment_ct(hu, ct_aff)
            out[pid, tracer] = (hu, ct_aff, np.asarray(pet.dataobj), lps_affine(pet.affine), labels, report)
    return out


def _dice(a, b):
    return 2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1)


#: Least Dice per organ on the demo phantoms (3 mm CT voxels; organs are a few hundred to
#: tens of thousands of voxels). Measured with tests/benchmarks/bench_anatomy.py over 12
#: plain and 12 contrast-enhanced studies: see docs/methods.md, anatomy; the bounds sit
#: below every measured value so that only a real regression fails.
#: The spleen's bound is low: on plain CT it has nearly the density of the body-wall muscle
#: it touches (measured 0.52-0.54 plain, 0.76-0.88 enhanced).
#: Generator revision 9 (vertebrae with arches and processes, the aorta's whole course from
#: the valve): the map's vertebrae are the column's bone near the bodies (measured
#: 0.72-0.79 plain and enhanced, on enhanced CT the bodies' marrow completed below the
#: blood's density) and its aorta the descending one (0.49-0.63 of the whole course).
MIN_DICE = {
    "lung_left": 0.9,
    "lung_right": 0.9,
    "liver": 0.7,
    "vertebrae": 0.6,
    "aorta": 0.4,
    "urinary_bladder": 0.7,
    "heart": 0.7,
    "kidney_left": 0.6,
    "kidney_right": 0.6,
    "spleen": 0.6,
}
#: Known limit (issue 21, left open): on unenhanced CT the liver (50-65 HU) can grow into the
#: heart (40-55 HU) where the lungs' bases leave the diaphragm's surface under the heart
#: too high; the heart is then too small and dropped. Not required there.
NOT_REQUIRED_UNENHANCED = ("heart",)


def test_organ_map_against_truth(converted, truth, cohort_dir):
    for (pid, tracer), (_, _, _, _, labels, report) in converted.items():
        ref = np.asarray(nib.load(cohort_dir / truth[pid]["organ_maps"][tracer]).dataobj)
        enhanced = truth[pid]["studies"][tracer]["ct_contrast"] is not None
        assert report["contrast_enhanced"] == enhanced, (pid, tracer)
        for name, least in MIN_DICE.items():
            t = ref == ORGANS[name]
            if t.sum() < 200 or (not enhanced and name in NOT_REQUIRED_UNENHANCED):  # not in view / known limit
                continue
            assert report[name]["found"], (pid, tracer, name, report[name])
            assert _dice(t, labels == ORGANS[name]) >= least, (pid, tracer, name)


def test_blood_pool_against_truth(converted, truth):
    # 15 %: the 10 x 20 mm VOI holds ~25 correlated PET voxels; measured SD of the error on
    # 24 phantom studies about 5 %, so 15 % is about 3 SD
    for (pid, tracer), (hu, ct_aff, suv, pet_aff, labels, _) in converted.items():
        expected = truth[pid]["studies"][tracer]["background"]["blood_pool_suvmean_noiseless"]
        got = background_from_anatomy(labels, ct_aff, hu, suv, pet_aff, "bloodpool")
        assert got["region"] == "bloodpool" and "fallback" not in got
        assert got["suvmean"] == pytest.approx(expected, rel=0.15), (pid, tracer)
        assert got["lumen_radius_mm"] >= 7.0


def test_liver_against_truth(converted, truth):
    # 10 %: a 30 mm sphere (~220 voxels) inside liver parenchyma; measured on 24 phantom
    # studies within 4 %
    for (pid, tracer), (hu, ct_aff, suv, pet_aff, labels, _) in converted.items():
        expected = truth[pid]["studies"][tracer]["background"]["liver_suv_true"]
        got = background_from_anatomy(labels, ct_aff, hu, suv, pet_aff, "liver")
        assert got["suvmean"] == pytest.approx(expected, rel=0.10), (pid, tracer)
        assert got["source"].startswith("liver:anatomy") and got["n_voxels"] > 150


def test_liver_voi_keeps_clear_of_a_lesion(converted, truth):
    """A hot lesion (SUV 15, 20 mm) where the deepest liver sphere sits: the VOI is still
    normal liver. 10 %: as in test_liver_against_truth."""
    (pid, tracer), (hu, ct_aff, suv, pet_aff, labels, _) = next(iter(converted.items()))
    centres, _ = liver_centres(labels, ct_aff)
    assert len(centres) >= 3
    world = apply_affine(pet_aff, np.indices(suv.shape).reshape(3, -1).T).reshape(*suv.shape, 3)
    hot = np.where(np.linalg.norm(world - centres[0], axis=-1) <= 20.0, np.float32(15.0), suv)
    got = background_from_anatomy(labels, ct_aff, hu, hot, pet_aff, "liver")
    expected = truth[pid]["studies"][tracer]["background"]["liver_suv_true"]
    assert got["suvmean"] == pytest.approx(expected, rel=0.10), got
    assert np.linalg.norm(np.subtract(got["centre_lps"], centres[0])) > 20.0 + 15.0


def test_background_falls_back_and_says_so(converted):
    """No aorta in the field of view (an abdomen-only scan): the liver is used and recorded;
    neither region: one error naming both reasons."""
    hu, ct_aff, suv, pet_aff, labels, _ = next(iter(converted.values()))
    no_aorta = np.where(np.isin(labels, ORGAN_CLASSES["aorta"]), ORGANS["body"], labels).astype(np.uint8)
    got = background_from_anatomy(no_aorta, ct_aff, hu, suv, pet_aff, "bloodpool", where="patient P9, fdg")
    assert got["region"] == "liver" and got["fallback"].startswith("bloodpool not available (no thoracic")
    with pytest.raises(DualpetInputError, match="no background region"):
        background_from_anatomy(no_aorta, ct_aff, hu, suv, pet_aff, "bloodpool", fallback=False)
    neither = np.where(np.isin(no_aorta, ORGAN_CLASSES["liver"]), ORGANS["body"], no_aorta).astype(np.uint8)
    with pytest.raises(
        DualpetInputError, match=r"patient P9, fdg: no background region found \(bloodpool: .*; liver: no liver"
    ):
        background_from_anatomy(neither, ct_aff, hu, suv, pet_aff, "bloodpool", where="patient P9, fdg")


def test_calcified_aorta_moves_the_voi(converted):
    """Calcified plaque in the lumen at the chosen level: the VOI moves to a clean level."""
    hu, ct_aff, suv, pet_aff, labels, _ = next(iter(converted.values()))
    first = background_from_anatomy(labels, ct_aff, hu, suv, pet_aff, "bloodpool")
    from dualpet.geometry import world_to_voxel

    c = np.rint(world_to_voxel(ct_aff, first["centre_lps"])).astype(int)
    plaque = hu.copy()
    plaque[c[0] - 1 : c[0] + 2, c[1] - 1 : c[1] + 2, c[2] - 1 : c[2] + 2] = 1200.0
    moved = background_from_anatomy(labels, ct_aff, plaque, suv, pet_aff, "bloodpool")
    assert abs(moved["centre_lps"][2] - first["centre_lps"][2]) >= 5.0


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


@pytest.mark.slow
def test_abdomen_only_field_of_view(tmp_path):
    """An abdomen-and-pelvis CT (no chest, contrast-enhanced): liver, kidneys, bladder and the
    abdominal aorta are still found (the contrast decision comes from the abdominal aorta),
    and the blood pool, with no thoracic aorta in view, is read in the abdominal aorta and
    says why; without the aorta at all it falls back to the liver."""
    from dualpet.io import read_json
    from dualpet.synth import generate_cohort

    generate_cohort(tmp_path, 1, seed=5, size="demo", contrast="all", fov="abdomen", log=lambda m: None)
    truth = read_json(tmp_path / "truth" / "P001.json")
    tracer = truth["tracers"][0]
    d = tmp_path / "conv"
    convert_study(
        tmp_path / "dicom" / "P001" / tracer,
        patient="P001",
        tracer=tracer,
        ct_out=d / "ct.nii.gz",
        pet_out=d / "pet.nii.gz",
        json_out=d / "pet.json",
    )
    ct, pet = nib.load(d / "ct.nii.gz"), nib.load(d / "pet.nii.gz")
    hu, ct_aff = np.asarray(ct.dataobj, dtype=np.float32), lps_affine(ct.affine)
    labels, report = segment_ct(hu, ct_aff)
    assert report["contrast_enhanced"] is True
    ref = np.asarray(nib.load(tmp_path / truth["organ_maps"][tracer]).dataobj)
    for name in ("liver", "kidney_left", "kidney_right", "urinary_bladder", "aorta"):
        assert report[name]["found"], (name, report[name])
        assert _dice(ref == ORGANS[name], labels == ORGANS[name]) >= MIN_DICE.get(name, 0.5), name
    suv, pet_aff = np.asarray(pet.dataobj), lps_affine(pet.affine)
    got = background_from_anatomy(labels, ct_aff, hu, suv, pet_aff, "bloodpool")
    assert got["region"] == "bloodpool" and "abdominal aorta" in got["source"]
    assert got["fallback"].endswith(": the abdominal aorta used instead") and "thoracic aorta" in got["fallback"]
    expected = truth["studies"][tracer]["background"]["blood_pool_suvmean_noiseless"]
    assert got["suvmean"] == pytest.approx(expected, rel=0.15)  # as in test_blood_pool_against_truth
    no_aorta = np.where(np.isin(labels, ORGAN_CLASSES["aorta"]), ORGANS["body"], labels).astype(np.uint8)
    got = background_from_anatomy(no_aorta, ct_aff, hu, suv, pet_aff, "bloodpool")
    assert got["region"] == "liver" and "bloodpool not available" in got["fallback"]
    expected = truth["studies"][tracer]["background"]["liver_suv_true"]
    assert got["suvmean"] == pytest.approx(expected, rel=0.10)  # as in test_liver_against_truth


@pytest.mark.slow
def test_blood_pool_is_in_the_aorta_not_the_psoas(tmp_path):
    """A patient (seed 3, P004: plain CT, arms down) whose thoracic aorta the map misses:
    the psoas beside the lumbar bodies is as round and as dense as the aorta on plain CT,
    and the blood-pool VOI once sat in it (SUV 0.81 for a blood pool of 2.04). The
    abdominal aorta lies in front of the bodies: the VOI reads the blood (15 %: as in
    test_blood_pool_against_truth)."""
    from dualpet.synth import generate_patient

    truth = generate_patient(tmp_path, "P004", 4, 3, "demo", ["fdg", "pentixafor"])
    convert_study(
        tmp_path / "dicom" / "P004" / "fdg",
        patient="P004",
        tracer="fdg",
        ct_out=tmp_path / "ct.nii.gz",
        pet_out=tmp_path / "pet.nii.gz",
        json_out=tmp_path / "pet.json",
    )
    ct, pet = nib.load(tmp_path / "ct.nii.gz"), nib.load(tmp_path / "pet.nii.gz")
    hu, ct_aff = np.asarray(ct.dataobj, dtype=np.float32), lps_affine(ct.affine)
    labels, _ = segment_ct(hu, ct_aff)
    got = background_from_anatomy(labels, ct_aff, hu, np.asarray(pet.dataobj), lps_affine(pet.affine), "bloodpool")
    expected = truth["studies"]["fdg"]["background"]["blood_pool_suvmean_noiseless"]
    assert got["suvmean"] == pytest.approx(expected, rel=0.15), got


def test_no_background_in_view_loses_only_tbr(cohort_dir, tmp_path):
    """Issue 23: an image cropped around the tumour shows no aorta and no liver. The study
    keeps its lesions and every metric that needs no background; its background record says
    why there is none, its TBR is empty, its picture says so. Only the threshold method
    'background' (a multiple of the background) fails, naming that need."""
    from dualpet.detection.study import segment_study
    from dualpet.interchange import read_segmentation
    from dualpet.io import read_json
    from dualpet.metrics import lesion_metrics
    from dualpet.nifti import nifti_image, save_nifti

    convert_study(
        cohort_dir / "dicom" / "P001" / "fdg",
        patient="P001",
        tracer="fdg",
        ct_out=tmp_path / "ct.nii.gz",
        pet_out=tmp_path / "pet.nii.gz",
        json_out=tmp_path / "pet.json",
    )
    ct = nib.load(tmp_path / "ct.nii.gz")
    labels, _ = segment_ct(np.asarray(ct.dataobj, np.float32), lps_affine(ct.affine))
    labels[np.isin(labels, [ORGANS["aorta"], ORGANS["liver"]])] = 0  # neither in view
    save_nifti(tmp_path / "anatomy.nii.gz", nifti_image(labels.astype(np.uint8), lps_affine(ct.affine)))
    args = (tmp_path / "ct.nii.gz", tmp_path / "pet.nii.gz", tmp_path / "l.nii.gz", tmp_path / "s.json")
    bg, info = segment_study(
        *args,
        detection={"method": "local"},
        anatomy=tmp_path / "anatomy.nii.gz",
        patient="P001",
        tracer="fdg",
        background_png=tmp_path / "bg.png",
    )
    assert bg["suvmean"] is None and bg["missing"].startswith("no background region found (bloodpool:")
    assert "liver:" in bg["missing"]
    assert len(info["lesions"]) > 0
    seg = read_segmentation(tmp_path / "s.json")
    assert seg["background_suvmean"] is None and seg["background_fallback"].endswith("TBR not computed")
    assert read_json(tmp_path / "s.json")["background"]["missing"] == bg["missing"]
    assert (tmp_path / "bg.png").read_bytes()[:4] == b"\x89PNG"
    suv = np.asarray(nib.load(tmp_path / "pet.nii.gz").dataobj, np.float32)
    voi = np.asarray(nib.load(tmp_path / "l.nii.gz").dataobj) == 1
    m = lesion_metrics(suv, voi, lps_affine(nib.load(tmp_path / "pet.nii.gz").affine), seg["background_suvmean"])
    assert m["suvmax"] == pytest.approx(float(suv[voi].max())) and np.isnan(m["tbr"]) and np.isnan(m["tbr_mean"])
    with pytest.raises(DualpetInputError, match="detection method 'background' needs one"):
        segment_study(
            *args,
            detection={"method": "background", "factor": 2.0},
            anatomy=tmp_path / "anatomy.nii.gz",
            patient="P001",
            tracer="fdg",
        )
