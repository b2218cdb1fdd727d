"""The reference-data generator: its truth must agree with its pixels and headers.

The SUVs here are recomputed from the raw DICOM attributes with the textbook formula,
independently of :mod:`dualpet.suv`, so that generator and reader check each other.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import numpy as np
import pydicom
import pytest

from dualpet.synth import SIZES, generate_cohort
from dualpet.synth.phantom import CATEGORY_P, make_phantom


def _read_series(folder):
    dss = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    dss.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    return dss


def _textbook_suv(dss):
    """SUVbw volume [i, j, k] from raw attributes: BQML, DecayCorrection START."""
    d0 = dss[0]
    rp = d0.RadiopharmaceuticalInformationSequence[0]
    inj = dt.datetime.strptime(str(rp.RadiopharmaceuticalStartDateTime)[:14], "%Y%m%d%H%M%S")
    ser = dt.datetime.strptime(d0.SeriesDate + d0.SeriesTime[:6], "%Y%m%d%H%M%S")
    dose = float(rp.RadionuclideTotalDose) * 2 ** (-(ser - inj).total_seconds() / float(rp.RadionuclideHalfLife))
    factor = float(d0.PatientWeight) * 1000.0 / dose
    return np.stack([d.pixel_array.T * float(d.RescaleSlope) * factor for d in dss], axis=2)


def _positions(dss):
    """LPS coordinates of the voxel centres of an axial series: x[i], y[j], z[k], half diagonal."""
    d0 = dss[0]
    origin = np.array(d0.ImagePositionPatient, float)
    col, row = float(d0.PixelSpacing[1]), float(d0.PixelSpacing[0])
    z = np.array([float(d.ImagePositionPatient[2]) for d in dss])
    x = origin[0] + np.arange(d0.Columns) * col
    y = origin[1] + np.arange(d0.Rows) * row
    return x, y, z, np.sqrt(col**2 + row**2 + (z[1] - z[0]) ** 2) / 2


def test_truth_suvs_match_pixels(cohort_dir, truth):
    """The truth's image SUVmax/SUVmean are what the pixels hold (same voxel sets)."""
    for pid, t in truth.items():
        for tracer in t["tracers"]:
            dss = _read_series(cohort_dir / "dicom" / pid / tracer / "PT_3")
            assert dss[0].Units == "BQML" and dss[0].DecayCorrection == "START"
            suv = _textbook_suv(dss)
            x, y, z, half_diag = _positions(dss)
            for les in t["lesions"]:
                c = les["center_lps"][tracer]
                d = np.sqrt(
                    (x[:, None, None] - c[0]) ** 2 + (y[None, :, None] - c[1]) ** 2 + (z[None, None, :] - c[2]) ** 2
                )
                inside = d <= max(les["radius_mm"], half_diag)
                # rel 1e-4: the generator writes the dose with 6 significant digits
                assert suv[inside].max() == pytest.approx(les["image_suvmax"][tracer], rel=1e-4)
                core = d <= les["radius_mm"]
                if core.any():
                    assert suv[core].mean() == pytest.approx(les["image_suvmean"][tracer], rel=1e-4)


def test_partial_volume_of_a_large_sphere():
    """A 15 mm sphere of SUV 10 in a uniform body keeps its value at the centre (PSF FWHM
    6.5 mm: recovery erf(15/(2.76*sqrt2)) ~ 1.0; 2 % allows the 4 mm voxel averaging),
    and the blur conserves the activity (1 %: discretisation of the sphere)."""
    from dualpet.synth.phantom import MUSCLE, Lesion, Phantom, Shape
    from dualpet.synth.render import grid_affine, render_pet_truth

    body = Shape(MUSCLE, np.zeros(3), np.array([150.0, 100.0, 1000.0]), "cylinder")
    shape = (64, 64, 40)
    aff = grid_affine(shape, (4.0, 4.0, 4.0), (0.0, 0.0, 0.0))
    pose = (np.eye(3), np.zeros(3))
    base = render_pet_truth(Phantom(shapes=[body], uptake={"fdg": {MUSCLE: 1.0}}), "fdg", shape, aff, pose, 6.5)
    ph = Phantom(shapes=[body], uptake={"fdg": {MUSCLE: 1.0}})
    ph.lesions = [Lesion("T01", "lymph node", np.array([10.0, -5.0, 3.0]), 15.0, {"fdg": 10.0}, "both")]
    img = render_pet_truth(ph, "fdg", shape, aff, pose, 6.5)
    assert img.max() == pytest.approx(10.0, rel=0.02)
    excess = (img - base).sum() * 0.064  # SUV x mL
    assert excess == pytest.approx(9.0 * 4 / 3 * np.pi * 15.0**3 / 1000.0, rel=0.01)


def test_transform_maps_lesion_centres(truth):
    for t in truth.values():
        M = np.array(t["transform_reference_to_index"]["matrix_lps"])
        assert np.allclose(M[:3, :3] @ M[:3, :3].T, np.eye(3), atol=1e-9)  # rigid
        for les in t["lesions"]:
            a = np.array(les["center_lps"][t["reference_tracer"]])
            b = np.array(les["center_lps"][t["index_tracer"]])
            assert np.allclose(M[:3, :3] @ a + M[:3, 3], b, atol=1e-6)
        angles = t["studies"][t["index_tracer"]]["pose"]["angles_deg"]
        assert max(abs(a) for a in angles) <= 5.0


def test_headers_complete_and_frames(cohort_dir, truth):
    for pid, t in truth.items():
        frames = []
        for tracer in t["tracers"]:
            ct = pydicom.dcmread(next((cohort_dir / "dicom" / pid / tracer / "CT_2").glob("*.dcm")))
            pets = _read_series(cohort_dir / "dicom" / pid / tracer / "PT_3")
            pt = pets[0]
            assert ct.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
            assert pt.SOPClassUID == "1.2.840.10008.5.1.4.1.1.128"
            assert ct.FrameOfReferenceUID == pt.FrameOfReferenceUID
            frames.append(pt.FrameOfReferenceUID)
            for kw in ("PatientWeight", "PatientSize", "PatientSex", "CorrectedImage", "ImageOrientationPatient"):
                assert kw in pt, kw
            assert "ATTN" in pt.CorrectedImage
            rp = pt.RadiopharmaceuticalInformationSequence[0]
            assert float(rp.RadionuclideTotalDose) > 1e7 and float(rp.RadionuclideHalfLife) > 0
            assert rp.RadionuclideCodeSequence[0].CodeValue in ("C-111A1", "C-131A3")
            # synthetic identifying data, so that de-identification can be tested
            assert str(pt.PatientName) == t["identifiers"]["PatientName"]
            assert pt.PatientID == t["identifiers"]["PatientID"]
            assert pt.PatientBirthDate == t["identifiers"]["PatientBirthDate"]
            # int16 with per-slice RescaleSlope that really differs between slices
            slopes = {float(d.RescaleSlope) for d in pets}
            assert len(slopes) > len(pets) // 2
            assert pt.BitsAllocated == 16 and pt.PixelRepresentation == 1
        assert frames[0] != frames[1]  # two studies, two frames of reference
        half_lives = {t["studies"][x]["half_life_s"] for x in t["tracers"]}
        assert half_lives == {6586.2, 4062.6}


def test_adding_patients_keeps_earlier_ones(tmp_path, cohort_dir):
    """Patient 1 of a 1-patient cohort equals patient 1 of the 2-patient cohort, bit for bit."""
    generate_cohort(tmp_path, n_patients=1, seed=11, size="demo", log=lambda m: None)

    def digest(root):
        h = hashlib.sha256()
        for p in sorted((root / "dicom" / "P001").rglob("*.dcm")):
            h.update(p.read_bytes())
        return h.hexdigest()

    assert digest(tmp_path) == digest(cohort_dir)
    assert json.loads((tmp_path / "truth" / "P001.json").read_text()) == json.loads(
        (cohort_dir / "truth" / "P001.json").read_text()
    )
    # a second call keeps the existing patient untouched (no rewrite, same mtime)
    mtime = (tmp_path / "truth" / "P001.json").stat().st_mtime_ns
    generate_cohort(tmp_path, n_patients=1, seed=11, size="demo", log=lambda m: None)
    assert (tmp_path / "truth" / "P001.json").stat().st_mtime_ns == mtime


def test_lesion_mix_like_the_study():
    """About 40 % of lesions Pentixafor-negative, a few Pentixafor-only, sizes 4-20 mm."""
    cats, radii, regions = [], [], set()
    for n in range(40):
        ph = make_phantom(np.random.default_rng([5, n, 0]), ("fdg", "pentixafor"), 8, (-175.0, 135.0))
        cats += [les.category for les in ph.lesions]
        radii += [les.radius for les in ph.lesions]
        regions |= {les.region for les in ph.lesions}
    frac = {c: cats.count(c) / len(cats) for c in CATEGORY_P}
    # 320 lesions: binomial SD of a proportion ~0.028; allow ~3.5 SD
    assert abs(frac["reference_only"] - CATEGORY_P["reference_only"]) < 0.1
    assert 0.03 < frac["index_only"] < 0.2
    assert 4.0 <= min(radii) and max(radii) <= 20.0
    assert regions == {"liver", "lymph node", "bone", "lung"}


def test_size_presets():
    c = SIZES["clinical"]
    assert c["ct_matrix"] == 512 and abs(c["ct_pixel"] - 1.0) < 0.05 and c["ct_slice"] == 3.0
    assert round(c["z_extent"] / c["ct_slice"]) == 300
    assert c["pet_matrix"] == 200 and abs(c["pet_pixel"] - 4.0) < 0.1


@pytest.mark.parametrize("bad", ["tiny", ""])
def test_unknown_size_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="unknown size"):
        generate_cohort(tmp_path, n_patients=1, size=bad)


def test_pet_end_planes_are_noisier():
    """The generator's whole-body PET has the scanner's falling sensitivity at both axial
    ends: the noise of the outermost planes is about 1/sqrt(0.1) = 3.2x that of the middle."""
    from dualpet.synth.render import add_pet_noise, axial_noise_profile

    profile = axial_noise_profile(100, 4.0)
    assert profile[0] == pytest.approx(1 / np.sqrt(0.1 + 0.9 * 2 / 40), rel=1e-6) and profile[50] == 1.0
    assert np.all(np.diff(profile[:50]) <= 0) and np.allclose(profile, profile[::-1])
    clean = np.full((40, 40, 100), 2.0, np.float32)
    noisy = add_pet_noise(clean, np.random.default_rng(0), 0.1, axial_profile=profile)
    # plane 3 (14 mm in): clear of the smoothing kernel's edge effect on the outermost planes;
    # 10 %: the standard deviation of 1,600 correlated samples
    ratio = noisy[:, :, 3].std() / noisy[:, :, 45:55].std()
    assert ratio == pytest.approx(profile[3], rel=0.1)
    assert noisy[:, :, 0].std() > 2.5 * noisy[:, :, 45:55].std()


def test_metal_streaks_only_on_slices_with_metal():
    """Metal streaks: lines through the metal on its slices (bright and dark, reaching far
    beyond it), nothing on the other slices."""
    from dualpet.synth.render import add_metal_streaks

    hu = np.zeros((101, 101, 6), np.float32)
    metal = np.zeros(hu.shape, bool)
    metal[49:52, 49:52, 2:4] = True
    add_metal_streaks(hu, metal, np.diag([2.0, 2.0, 3.0, 1.0]), np.random.default_rng(3))
    assert not hu[:, :, [0, 1, 4, 5]].any()
    ring = np.hypot(*np.meshgrid(np.arange(101) - 50, np.arange(101) - 50, indexing="ij")) * 2.0
    far = hu[:, :, 2][(ring > 60) & (ring < 90)]
    # 8-16 lines of 150-600 HU at 30/r: tens of HU at 60-90 mm, on a small share of the ring
    assert far.max() > 20.0 or far.min() < -20.0
    assert np.mean(np.abs(far) > 20.0) < 0.5


def test_visibility_truth_is_the_readers_rule(truth):
    """Every lesion's 'visible' flag follows from its recorded noiseless peak, the host
    tissue around it and the noise there (contrast >= 1.5 and contrast-to-noise >= 3),
    never from the blood pool; the noise SD is the noise model's at the host's SUV. A
    bone lesion's host is the marrow: on Pentixafor (marrow 2.3) its host background is
    above the shell's mean, which mixes in the muscle and fat around the bone."""
    from dualpet.synth import VISIBLE_CNR, VISIBLE_CONTRAST

    n, bone = 0, []
    for t in truth.values():
        assert "visibility_rule" in t and "host tissue" in t["visibility_rule"]
        for les in t["lesions"]:
            if les["region"] == "bone":
                bone.append(les["host_background_suv"]["pentixafor"] - les["local_background_suv"]["pentixafor"])
            for tracer in t["tracers"]:
                peak, bg = les["noiseless_suvmax"][tracer], les["host_background_suv"][tracer]
                sd = les["local_noise_sd"][tracer]
                cov = t["studies"][tracer]["pet"]["noise_cov_at_suv2"]
                # the SD at SUV bg: cov x sqrt(bg x 2), times the plane's factor (1 in the middle, up to 3 at the ends)
                assert cov * np.sqrt(bg * 2.0) * 0.999 <= sd <= 3.2 * cov * np.sqrt(bg * 2.0)
                assert les["contrast_to_noise"][tracer] == pytest.approx((peak - bg) / sd)
                assert les["visible"][tracer] == (peak >= VISIBLE_CONTRAST * bg and (peak - bg) / sd >= VISIBLE_CNR)
                n += 1
    assert n > 0
    assert not bone or np.median(bone) > 0


# --- replication presets (dualpet synth --preset) -------------------------------------


def _preset_cohorts(seeds, name="weich2021"):
    """Phantoms (no images) of whole preset cohorts: {seed: [phantom of patient 1..P]}."""
    from dualpet.synth import PET_PHYSICS
    from dualpet.synth.phantom import PRESETS, TRACER_NUCLIDE, preset_population

    tracers = PRESETS[name]["tracers"]
    psf = {t: PET_PHYSICS[TRACER_NUCLIDE[t]]["fwhm"] for t in tracers}
    return {
        seed: [
            make_phantom(np.random.default_rng([seed, n, 0]), tracers, 5, (-160.0, 120.0), preset_population(name, seed, n, psf))
            for n in range(1, PRESETS[name]["patients"] + 1)
        ]
        for seed in seeds
    }


def test_weich2021_lesion_counts_and_uptake():
    """Each 11-patient cohort of the preset holds the published counts exactly (FDG 102,
    Pentixafor 42, 37 on both, 107 in all), shared out unevenly (1-25 per patient); the
    SUVmax drawn for the lesions positive on a tracer follows the lognormal of the
    published mean and SD; a lesion negative on a tracer looks like its host tissue."""
    from dualpet.synth.phantom import _HOSTS, POSITIVE_MIN_CONTRAST, PRESET_MAX_LESIONS, PRESETS, lognormal_params

    targets = {"fdg": [], "pentixafor": []}
    per_patient = []
    for phantoms in _preset_cohorts(range(10)).values():
        lesions = [les for ph in phantoms for les in ph.lesions]
        per_patient += [len(ph.lesions) for ph in phantoms]
        cats = [les.category for les in lesions]
        assert (cats.count("both"), cats.count("reference_only"), cats.count("index_only")) == (37, 65, 5)
        assert len(lesions) == 107
        for ph in phantoms:
            for les in ph.lesions:
                host = ph.labels_at(les.center[None], with_lesions=False)[0]
                assert les.region in ("liver", "lymph node", "bone", "lung") and 4.0 <= les.radius <= 20.0
                for t in ("fdg", "pentixafor"):
                    if t in les.target_suvmax:
                        targets[t].append(les.target_suvmax[t])
                        floor = max(ph.uptake[t][h] for h in _HOSTS[les.region])
                        assert les.target_suvmax[t] >= POSITIVE_MIN_CONTRAST * floor
                        assert les.suv[t] >= les.target_suvmax[t]  # partial volume: the tissue is hotter than its peak
                    else:  # negative: the host tissue's uptake x 0.85-1.25
                        assert 0.85 * ph.uptake[t][host] <= les.suv[t] <= 1.25 * ph.uptake[t][host]
    assert [len(targets["fdg"]), len(targets["pentixafor"])] == [1020, 420]
    assert 1 <= min(per_patient) and max(per_patient) <= PRESET_MAX_LESIONS and np.std(per_patient) > 3.0
    for t, v in targets.items():
        v = np.array(v)
        mean, sd = PRESETS["weich2021"]["suvmax"][t]
        mu, sigma = lognormal_params(mean, sd)
        # log SUVmax is normal: SE of its mean sigma/sqrt(n) (0.021 FDG, 0.031 Pentixafor), of
        # its SD sigma/sqrt(2n) (0.015, 0.022); 4 SE (the redraw of the ~1 % of Pentixafor
        # draws below every region's floor moves the log mean up by ~0.02)
        assert abs(np.log(v).mean() - mu) < 4 * sigma / np.sqrt(len(v)) + 0.02
        assert abs(np.log(v).std(ddof=1) - sigma) < 4 * sigma / np.sqrt(2 * len(v))
        # the mean itself: SE 2.4 % (FDG) and 3.5 % (Pentixafor) of the published mean
        assert v.mean() == pytest.approx(mean, rel=0.1)


def test_preset_is_deterministic_per_patient():
    """A preset patient depends only on (seed, n): the same lesions twice, its lesion
    categories the same whatever the cohort's size (the 11-patient blocks are drawn from
    (seed, block) alone), other seeds give other cohorts; its anatomy is the one the
    patient has without the preset."""
    from dualpet.synth.phantom import preset_categories

    a, b = _preset_cohorts([3])[3], _preset_cohorts([3])[3]
    key = lambda ph: [(les.id, les.region, les.center.tolist(), les.radius, les.suv, les.category) for les in ph.lesions]  # noqa: E731
    assert [key(p) for p in a] == [key(p) for p in b]
    assert preset_categories("weich2021", 3, 2) == preset_categories("weich2021", 3, 2)
    assert [preset_categories("weich2021", 3, n) for n in range(1, 12)] != [
        preset_categories("weich2021", 4, n) for n in range(1, 12)
    ]
    # patients 12-22 are a second block with the same published counts
    cats = [c for n in range(12, 23) for c in preset_categories("weich2021", 3, n)]
    assert sorted(set(cats)) == ["both", "index_only", "reference_only"] and len(cats) == 107
    plain = make_phantom(np.random.default_rng([3, 1, 0]), ("fdg", "pentixafor"), 5, (-160.0, 120.0))
    assert np.allclose(plain.landmarks["liver_center"], a[0].landmarks["liver_center"])
    assert plain.uptake == a[0].uptake


@pytest.mark.parametrize("fwhm", [6.5, 7.0])
def test_peak_recovery_matches_the_renderer(fwhm):
    """The partial-volume model that turns a preset's SUVmax into lesion uptake: the
    noiseless rendered peak of a sphere of SUV 11 in tissue of SUV 1 (4 mm voxels, sphere
    centre anywhere in its voxel) is 1 + 10 x peak_recovery within 0.08 x 10: the model
    lumps the voxel averaging and the peak voxel's offset into one Gaussian, which is right
    on average (within 0.03 over 12 placements per radius) but not for every placement
    (0.08 the worst of 384 spheres of 4-20 mm radius)."""
    from dualpet.geometry import apply_affine
    from dualpet.synth.phantom import MUSCLE, Lesion, Phantom, Shape, peak_recovery
    from dualpet.synth.render import grid_affine, render_pet_truth

    body = Shape(MUSCLE, np.zeros(3), np.array([150.0, 100.0, 1000.0]), "cylinder")
    shape = (32, 32, 24)
    aff = grid_affine(shape, (4.0, 4.0, 4.0), (0.0, 0.0, 0.0))
    world = apply_affine(aff, np.indices(shape).reshape(3, -1).T)
    for radius, offset in ((5.0, (0.4, -1.3, 1.9)), (7.0, (-1.8, 0.6, -0.2)), (10.0, (1.1, 1.7, -1.4))):
        ph = Phantom(shapes=[body], uptake={"fdg": {MUSCLE: 1.0}})
        ph.lesions = [Lesion("T01", "lymph node", np.array(offset), radius, {"fdg": 11.0}, "both")]
        img = render_pet_truth(ph, "fdg", shape, aff, (np.eye(3), np.zeros(3)), fwhm)
        peak = img.ravel()[np.linalg.norm(world - np.array(offset), axis=1) <= radius].max()
        assert (peak - 1.0) / 10.0 == pytest.approx(peak_recovery(radius, fwhm), abs=0.08)


def test_preset_cohort_size_and_refusals(tmp_path, monkeypatch):
    """``preset`` sets the number of patients unless given; unknown presets and other
    tracers are refused; the CLI offers exactly the presets there are and leaves
    ``--patients`` to the preset."""
    import dualpet.synth as synth
    from dualpet.cli import build_parser
    from dualpet.synth.phantom import PRESETS

    calls = []

    def fake_patient(outdir, pid, n, seed, size, tracers, *args):
        calls.append((n, args[-1]))
        return {"clinical": {}}

    monkeypatch.setattr(synth, "generate_patient", fake_patient)
    generate_cohort(tmp_path, preset="weich2021", log=lambda m: None)
    assert calls == [(n, "weich2021") for n in range(1, 12)]
    calls.clear()
    generate_cohort(tmp_path / "b", n_patients=3, preset="weich2021", log=lambda m: None)
    generate_cohort(tmp_path / "c", log=lambda m: None)
    assert calls == [(n, "weich2021") for n in (1, 2, 3)] + [(n, None) for n in (1, 2, 3, 4)]
    with pytest.raises(ValueError, match="unknown preset"):
        generate_cohort(tmp_path, preset="weich2022")
    with pytest.raises(ValueError, match="tracers"):
        generate_cohort(tmp_path, preset="weich2021", tracers=("fdg", "psma"))
    parser = build_parser()
    synth_parser = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith("synth"))
    preset_action = next(a for a in synth_parser._actions if a.dest == "preset")
    assert sorted(preset_action.choices) == sorted(PRESETS)
    args = parser.parse_args(["synth", str(tmp_path), "--preset", "weich2021"])
    assert args.patients is None and args.preset == "weich2021"


def test_preset_recorded_and_regenerated(tmp_path, cohort_dir):
    """A patient generated without the preset is generated anew with it (and kept on the
    next call); the truth records the preset and, per lesion, the SUVmax drawn for it,
    which the noiseless image peak shows (partial-volume model) and which makes the lesion
    visible on exactly the tracers it is positive on."""
    import shutil

    from dualpet.synth.phantom import preset_categories

    for sub in ("dicom/P001", "truth/P001.json", "truth/organs/P001_fdg.nii.gz", "truth/organs/P001_pentixafor.nii.gz"):
        src, dst = cohort_dir / sub, tmp_path / sub
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    logs = []
    generate_cohort(tmp_path, n_patients=1, seed=11, size="demo", preset="weich2021", log=logs.append)
    generate_cohort(tmp_path, n_patients=1, seed=11, size="demo", preset="weich2021", log=logs.append)
    assert logs == ["P001: generating (demo)", "P001: present, kept"]
    t = json.loads((tmp_path / "truth" / "P001.json").read_text())
    assert t["preset"] == "weich2021" and "Weich" in t["preset_description"]
    assert sorted(les["category"] for les in t["lesions"]) == sorted(preset_categories("weich2021", 11, 1))
    for les in t["lesions"]:
        for tracer in t["tracers"]:
            positive = tracer in les["target_suvmax"]
            assert les["visible"][tracer] == positive
            if positive:
                assert les["noiseless_suvmax"][tracer] == pytest.approx(les["target_suvmax"][tracer], rel=0.1)
