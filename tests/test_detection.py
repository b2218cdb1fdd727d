"""Detection rules on constructed images with a known answer, and the reader-driven methods."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from dualpet.background import measure_mask
from dualpet.convert import convert_study
from dualpet.detection.reader import lesions_from_mask, lesions_from_seeds
from dualpet.detection.study import segment_study
from dualpet.detection.threshold import detect_lesions, detection_threshold
from dualpet.geometry import apply_affine, lps_affine, ras_affine
from dualpet.io import read_json
from dualpet.nifti import labels_on_grid

AFF = np.diag([4.0, 4.0, 4.0, 1.0])  # 4 mm voxels like a clinical PET: 0.064 mL each


def _ball(shape, centre, radius_vox):
    idx = np.indices(shape)
    return sum((idx[a] - centre[a]) ** 2 for a in range(3)) <= radius_vox**2


def test_lesion_inside_an_organ_above_the_threshold_is_found_and_trimmed():
    """Organ SUV 5 > threshold 3 (~113 mL); a 12 mm metastasis of SUV 12 inside it is one
    lesion whose region is the metastasis, not the organ; the organ itself is rejected."""
    shape = (40, 40, 40)
    suv = np.full(shape, 0.8, np.float32)
    organ = _ball(shape, (20, 20, 20), 7.5)
    suv[organ] = 5.0
    met = _ball(shape, (20, 20, 22), 1.5)
    suv[met] = 12.0
    labels, info = detect_lesions(suv, AFF, 3.0)
    assert len(info["lesions"]) == 1, info["rejected"]
    les = info["lesions"][0]
    assert les["suvmax"] == 12.0 and met[tuple(les["peak_ijk"])]
    region = labels == les["label"]
    assert np.array_equal(region, met)  # trimmed at 1.5 x the organ's 5.0: exactly the metastasis


def test_noisy_hot_organ_gives_no_lesion_but_a_real_one_beside_it_does():
    """A kidney-like organ (SUV 3.6, 4.6x noise of a Ga-68 scan) above a threshold of 3.0:
    its noise maxima are not lesions; a lesion of SUV 8 in fat 25 mm away is."""
    rng = np.random.default_rng(3)
    shape = (48, 48, 48)
    suv = np.full(shape, 0.5, np.float32)
    kidney = _ball(shape, (16, 24, 24), 8)  # ~137 mL
    suv[kidney] = 3.6
    lesion = _ball(shape, (36, 24, 24), 2)
    suv[lesion] = 8.0
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.normal(size=shape), 0.8)
    suv = suv + (noise / noise.std() * 0.14 * 2.0 * np.sqrt(suv / 2.0)).astype(np.float32)
    labels, info = detect_lesions(suv, AFF, 3.0)
    assert [les["peak_ijk"] for les in info["lesions"]] and len(info["lesions"]) == 1, info["lesions"]
    assert np.linalg.norm(np.subtract(info["lesions"][0]["peak_ijk"], (36, 24, 24))) <= 2
    assert any("physiological" in r["reason"] for r in info["rejected"])


@pytest.mark.parametrize("hu_value, is_lesion", [(8.0, False), (40.0, True)])
def test_urine_rule_uses_the_ct(hu_value, is_lesion):
    """A 30 mL hot blob (SUV 20) is bladder urine if the CT there is water (8 HU), a tumour
    if it is soft tissue (40 HU)."""
    shape = (40, 40, 40)
    suv = np.full(shape, 0.6, np.float32)
    blob = _ball(shape, (20, 20, 20), 4.8)  # ~30 mL
    suv[blob] = 20.0
    hu = np.where(blob, hu_value, 45.0).astype(np.float32)
    _, info = detect_lesions(suv, AFF, 3.0, hu=hu)
    assert (len(info["lesions"]) == 1) == is_lesion
    if not is_lesion:
        assert "urinary" in info["rejected"][0]["reason"]


def test_percist_threshold():
    liver = {"suvmean": 2.0, "suvsd": 0.3}
    assert detection_threshold({"method": "percist"}, 1.7, liver) == pytest.approx(1.5 * 2.0 + 2 * 0.3)
    with pytest.raises(ValueError):
        detection_threshold({"method": "percist"}, 1.7)


def test_seeds_find_the_maximum_near_the_click():
    shape = (30, 30, 30)
    suv = np.full(shape, 1.0, np.float32)
    suv[_ball(shape, (10, 10, 10), 2)] = 6.0
    suv[10, 11, 10] = 9.0
    aff = AFF.copy()
    aff[:3, 3] = [-50.0, -20.0, 300.0]
    click = apply_affine(aff, (11.5, 12.0, 10.5))  # ~8 mm off the maximum
    (les,) = lesions_from_seeds(suv, aff, [click], radius_mm=10.0)
    assert les["peak_ijk"] == [10, 11, 10] and les["suvmax"] == 9.0
    region = les["_region"]
    # >= 50 % of 9.0: the SUV-6 ball, as far as it lies within 10 mm (2.5 voxels) of the maximum
    expected = _ball(shape, (10, 10, 10), 2) & _ball(shape, (10, 11, 10), 2.5)
    assert np.array_equal(region, expected) and expected.sum() == _ball(shape, (10, 10, 10), 2).sum() - 1
    from dualpet.errors import DualpetInputError

    with pytest.raises(DualpetInputError, match="seed 1"):
        lesions_from_seeds(suv, aff, [(1e4, 0.0, 0.0)], where="patient X, fdg")


def test_masks_labels_and_binary_components():
    shape = (20, 20, 20)
    suv = np.ones(shape, np.float32)
    lab = np.zeros(shape, np.int32)
    lab[2:5, 2:5, 2:5] = 3
    lab[10:13, 10:13, 10:13] = 7
    suv[11, 11, 11] = 5.0
    out, dropped = lesions_from_mask(suv, AFF, lab)
    assert sorted(o["mask_part"] for o in out) == ["label 3", "label 7"] and dropped == []
    assert max(o["suvmax"] for o in out) == 5.0
    binary = (lab > 0).astype(np.int32)  # one label value: its connected components are lesions
    assert len(lesions_from_mask(suv, AFF, binary)[0]) == 2
    # the file's labels decide: label 9 never reached the PET grid, so it is reported, and
    # the two labels left are still two labelled lesions, not a binary mask
    out, dropped = lesions_from_mask(suv, AFF, lab, file_labels=[3, 7, 9])
    assert len(out) == 2 and dropped == [9]
    out, dropped = lesions_from_mask(suv, AFF, np.where(lab == 3, 3, 0), file_labels=[3, 7])
    assert [o["mask_part"] for o in out] == ["label 3"] and dropped == [7]


def test_seeds_clicked_twice_and_tiny_radius():
    """Two clicks on one lesion are one lesion; regions never overlap; a radius smaller
    than the distance to the nearest voxel centre still finds the voxel under the click."""
    shape = (30, 30, 30)
    suv = np.full(shape, 1.0, np.float32)
    suv[_ball(shape, (10, 10, 10), 2)] = 6.0
    suv[_ball(shape, (14, 10, 10), 1)] = 5.0  # a neighbour touching it
    out = lesions_from_seeds(
        suv,
        AFF,
        [apply_affine(AFF, (10, 10, 10)), apply_affine(AFF, (10.4, 10, 10)), apply_affine(AFF, (14, 10, 10))],
        radius_mm=10.0,
    )
    assert len(out) == 2 and out[0]["merged_seeds"] == [2]
    assert not (out[0]["_region"] & out[1]["_region"]).any() and out[1]["_region"].any()
    (one,) = lesions_from_seeds(suv, AFF, [apply_affine(AFF, (20.3, 20.3, 20.3))], radius_mm=0.5)
    assert one["peak_ijk"] == [20, 20, 20]


def test_background_mask_and_reader_methods_end_to_end(cohort_dir, truth, tmp_path):
    """On a generated study: a background mask drawn in the aorta gives the blood pool; a
    lesion mask and seeds at the true centres give exactly the true lesions."""
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
    ct = nib.load(tmp_path / "ct.nii.gz")
    world = apply_affine(lps_affine(ct.affine), np.argwhere(np.ones(ct.shape, bool))).reshape(*ct.shape, 3)
    wanted = [les for les in t["lesions"] if les["detectable"][tracer]][:3]
    lab = np.zeros(ct.shape, np.int16)
    for n, les in enumerate(wanted, start=1):
        lab[np.linalg.norm(world - les["center_lps"][tracer], axis=-1) <= les["radius_mm"]] = n
    nib.save(nib.Nifti1Image(lab, ct.affine), str(tmp_path / "lesions.nii.gz"))
    seg = {}
    for name, kw in {
        "masks": {"lesion_mask": tmp_path / "lesions.nii.gz"},
        "seeds": {"seeds": [les["center_lps"][tracer] for les in wanted]},
    }.items():
        segment_study(
            tmp_path / "ct.nii.gz",
            tmp_path / "pet.nii.gz",
            tmp_path / f"{name}.nii.gz",
            tmp_path / f"{name}.json",
            detection={"method": name},
            patient=pid,
            tracer=tracer,
            **kw,
        )
        seg[name] = read_json(tmp_path / f"{name}.json")["detection"]
        assert len(seg[name]["lesions"]) == len(wanted)
        for les in wanted:  # every true lesion has its detection at its maximum: noise moves the
            # hottest voxel of a small lesion by up to one voxel diagonal (sqrt(3) x 4 mm = 6.9 mm);
            # a large uniform one has a plateau (its radius less one PSF FWHM, 6.5 mm) where the
            # hottest voxel may lie anywhere, plus half a voxel diagonal (3.5 mm)
            d = [np.linalg.norm(np.subtract(f["peak_lps"], les["center_lps"][tracer])) for f in seg[name]["lesions"]]
            assert min(d) <= max(7.0, les["radius_mm"] - 6.5 + 3.5)
        labels = np.asarray(nib.load(tmp_path / f"{name}.nii.gz").dataobj)
        assert set(np.unique(labels)) == set(range(len(wanted) + 1))
    # background mask: a 6 mm sphere in the aorta at the automatic blood-pool centre (at
    # least 5 mm clear of the 11-13.5 mm lumen's wall: the PET blur's half width)
    bp = t["studies"][tracer]["background"]
    auto = read_json(tmp_path / "masks.json")["background"]
    sphere = np.linalg.norm(world - np.array(auto["centre_lps"]), axis=-1) <= 6.0
    nib.save(nib.Nifti1Image(sphere.astype(np.uint8), ct.affine), str(tmp_path / "bg.nii.gz"))
    segment_study(
        tmp_path / "ct.nii.gz",
        tmp_path / "pet.nii.gz",
        tmp_path / "b.nii.gz",
        tmp_path / "b.json",
        detection={"method": "background"},
        patient=pid,
        tracer=tracer,
        background_mask=tmp_path / "bg.nii.gz",
        background_png=tmp_path / "b.png",
    )
    got = read_json(tmp_path / "b.json")["background"]
    assert got["source"].startswith("mask:sheet")
    # 15 %: as for the automatic VOI (test_background): the noise of a ~15-voxel VOI at the
    # generator's 10-14 % CoV, plus partial volume where the centre sits off the lumen's axis
    assert got["suvmean"] == pytest.approx(bp["blood_pool_suvmean_noiseless"], rel=0.15)
    assert (tmp_path / "b.png").stat().st_size > 1000
    pet = nib.load(tmp_path / "pet.nii.gz")
    voi = labels_on_grid(tmp_path / "bg.nii.gz", pet.shape, lps_affine(pet.affine)) != 0
    assert measure_mask(np.asarray(pet.dataobj), lps_affine(pet.affine), voi)["suvmean"] == pytest.approx(
        got["suvmean"]
    )


def test_unreadable_mask_is_a_clear_error(tmp_path):
    from dualpet.errors import DualpetInputError

    (tmp_path / "bad.nii.gz").write_text("not an image")
    with pytest.raises(DualpetInputError, match=r"lesion mask \(studies sheet\): not a readable NIfTI") as err:
        labels_on_grid(tmp_path / "bad.nii.gz", (4, 4, 4), np.eye(4), "lesion mask")
    assert str(tmp_path) not in str(err.value)  # the sheet's path may hold a patient's name
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3, 2), np.int16), ras_affine(np.eye(4))), str(tmp_path / "4d.nii.gz"))
    with pytest.raises(DualpetInputError, match="3-D"):
        labels_on_grid(tmp_path / "4d.nii.gz", (4, 4, 4), np.eye(4))


def test_region_labels_against_truth(cohort_dir, truth, tmp_path):
    """Every lesion of the generated patients gets its true region (bone, lung, liver,
    lymph node) from the reference CT alone."""
    from dualpet.anatomy import ORGAN_CLASSES, segment_ct
    from dualpet.matching import region_label

    for pid, t in truth.items():
        ref = t["tracers"][0]
        out = tmp_path / pid
        convert_study(
            cohort_dir / "dicom" / pid / ref,
            patient=pid,
            tracer=ref,
            ct_out=out / "ct.nii.gz",
            pet_out=out / "pet.nii.gz",
            json_out=out / "pet.json",
        )
        ct = nib.load(out / "ct.nii.gz")
        hu, aff = np.asarray(ct.dataobj, dtype=np.float32), lps_affine(ct.affine)
        labels, report = segment_ct(hu, aff)
        assert report["liver"]["found"]
        liver = (np.isin(labels, ORGAN_CLASSES["liver"]), aff)
        for les in t["lesions"]:
            radius = (3.0 * les["volume_ml"] * 1000.0 / (4.0 * np.pi)) ** (
                1.0 / 3.0
            )  # as the workflow passes its VOI's
            got = region_label(hu, aff, np.array(les["center_lps"][ref]), liver=liver, lesion_radius_mm=radius)
            assert got == les["region"], (pid, les["id"])


def test_lymph_node_label_needs_surrounding_fat():
    """A soft-tissue nodule in fat is a lymph node; in muscle it is 'other'; in aerated
    lung 'lung'; next to outside air (a nodule under the skin) not 'lung'."""
    from dualpet.matching import region_label

    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    for host, expected in ((-100.0, "lymph node"), (45.0, "other"), (-840.0, "lung"), (-1000.0, "other")):
        hu = np.full((40, 40, 40), host, np.float32)
        hu[_ball((40, 40, 40), (20, 20, 20), 4)] = 35.0
        assert region_label(hu, aff, apply_affine(aff, (20, 20, 20))) == expected


def test_h_maxima_per_component_equals_the_whole_image():
    """The per-component shortcut gives exactly skimage's h-maxima of the masked image."""
    from scipy import ndimage
    from skimage.morphology import h_maxima

    from dualpet.detection.regions import h_maxima_in

    rng = np.random.default_rng(0)
    values = ndimage.gaussian_filter(rng.gamma(2.0, 1.0, size=(40, 40, 40)), 1.0).astype(np.float32) * 3
    mask = values >= np.percentile(values, 90)
    whole = h_maxima(np.where(mask, values, 0.0), 0.2).astype(bool) & mask
    assert whole.sum() > 5 and np.array_equal(h_maxima_in(mask, values, 0.2), whole)


def test_what_lives_only_in_the_end_planes_is_noise():
    """A hot speck in the first 2 planes of the axial field of view (4 mm planes, 12 mm
    rule: 3 planes) is rejected as end-plane noise; the same speck mid-volume, and a lesion
    that reaches from the end planes into the volume, are lesions."""
    shape = (30, 30, 40)
    suv = np.full(shape, 0.6, np.float32)
    suv[14:17, 14:17, 0:2] = 6.0  # end planes only
    suv[14:17, 14:17, 20:22] = 6.0  # the same speck in the middle
    suv[5:9, 5:9, 34:40] = 6.0  # from the last plane 6 planes (24 mm) into the volume
    labels, info = detect_lesions(suv, AFF, 3.0, min_volume_ml=0.05)
    ks = sorted(les["peak_ijk"][2] for les in info["lesions"])
    assert len(ks) == 2 and 20 <= ks[0] <= 21 and ks[1] >= 34, info
    assert any("first or last 3 planes" in r["reason"] for r in info["rejected"])
    _, kept = detect_lesions(suv, AFF, 3.0, min_volume_ml=0.05, end_planes_mm=0)
    assert len(kept["lesions"]) == 3


def test_plane_noise_profile_is_measured_from_the_image():
    """Noise 3x higher in the end planes (the generator's sensitivity model) is measured
    from the image alone, and a noise blob there must stand out further than mid-volume."""
    from dualpet.detection.noise import plane_noise_profile
    from dualpet.synth.render import add_pet_noise, axial_noise_profile

    true = axial_noise_profile(60, 4.0)
    clean = np.full((40, 40, 60), 1.0, np.float32)
    clean[5:35, 5:35, :] = 2.0  # a "body" in air-like surroundings
    noisy = add_pet_noise(clean, np.random.default_rng(1), 0.12, axial_profile=true)
    est = plane_noise_profile(noisy)
    # 15 %: a robust SD of ~900 correlated voxels per plane; the two outermost planes are
    # further raised by the smoothing kernel's reflection at the volume's edge
    assert np.allclose(est[2:-2], true[2:-2], rtol=0.15)
    assert est[0] > 2.0 and est[-1] > 2.0 and 0.85 < np.median(est[20:40]) < 1.15
