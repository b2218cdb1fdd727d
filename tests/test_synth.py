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

#: The generator's phantoms, rendered (seconds each; make test-fast leaves them out).
pytestmark = pytest.mark.slow


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
    from dualpet.synth.phantom import Lesion, Phantom
    from dualpet.synth.render import grid_affine, render_pet_truth
    from dualpet.synth.shapes import MUSCLE, Shape

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
    """About 40 % of lesions Pentixafor-negative, a few Pentixafor-only; single spheres of
    radius 4-20 mm, large masses (lobulated or necrotic) of radius 15-30 mm (30-60 mm
    across); every region holds lesions."""
    from dualpet.synth.phantom import LARGE_RADIUS_MM

    cats, radii, large, regions = [], [], [], set()
    for n in range(40):
        ph = make_phantom(np.random.default_rng([5, n, 0]), ("fdg", "pentixafor"), 8, (-175.0, 135.0))
        cats += [les.category for les in ph.lesions]
        radii += [les.radius for les in ph.lesions if les.form == "sphere"]
        large += [les.radius for les in ph.lesions if les.form != "sphere"]
        regions |= {les.region for les in ph.lesions}
    frac = {c: cats.count(c) / len(cats) for c in CATEGORY_P}
    # 320 lesions: binomial SD of a proportion ~0.028; allow ~3.5 SD
    assert abs(frac["reference_only"] - CATEGORY_P["reference_only"]) < 0.1
    assert 0.03 < frac["index_only"] < 0.2
    assert min(radii) >= 4.0 and max(radii) <= 20.0
    assert large and LARGE_RADIUS_MM[0] <= min(large) and max(large) <= LARGE_RADIUS_MM[1]
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
            make_phantom(
                np.random.default_rng([seed, n, 0]), tracers, 5, (-160.0, 120.0), preset_population(name, seed, n, psf)
            )
            for n in range(1, PRESETS[name]["patients"] + 1)
        ]
        for seed in seeds
    }


def test_weich2021_lesion_counts_and_uptake():
    """Each 11-patient cohort of the preset holds the published counts exactly (FDG 102,
    Pentixafor 42, 37 on both, 107 in all), shared out unevenly (1-25 per patient); the
    SUVmax drawn for the lesions positive on a tracer follows the lognormal of the
    published mean and SD; a lesion negative on a tracer looks like its host tissue."""
    from dualpet.synth.phantom import (
        _HOSTS,
        POSITIVE_MIN_CONTRAST,
        PRESET_MAX_LESIONS,
        PRESETS,
        lognormal_params,
    )

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
                assert les.region in ("liver", "lymph node", "bone", "lung") and 4.0 <= les.radius <= 30.0
                for t in ("fdg", "pentixafor"):
                    if t in les.target_suvmax:
                        targets[t].append(les.target_suvmax[t])
                        floor = max(ph.uptake[t][h] for h in _HOSTS[les.region])
                        assert les.target_suvmax[t] >= POSITIVE_MIN_CONTRAST * floor
                        assert les.suv[t] >= les.target_suvmax[t]  # partial volume: the tissue is hotter than its peak
                    else:  # negative: the host tissue's uptake x 0.85-1.25
                        assert 0.85 * ph.uptake[t][host] <= les.suv[t] <= 1.25 * ph.uptake[t][host]
    assert [len(targets["fdg"]), len(targets["pentixafor"])] == [1020, 420]
    assert min(per_patient) >= 1 and max(per_patient) <= PRESET_MAX_LESIONS and np.std(per_patient) > 3.0
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

    def key(ph):
        return [(les.id, les.region, les.center.tolist(), les.radius, les.suv, les.category) for les in ph.lesions]

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
    from dualpet.synth.phantom import Lesion, Phantom, peak_recovery
    from dualpet.synth.render import grid_affine, render_pet_truth
    from dualpet.synth.shapes import MUSCLE, Shape

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
    from dualpet import synth
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


# --- patient-like anatomy (issue 21, item 8) -------------------------------------------
# Each test checks a fact the generator builds in, on its truth (the organ map it writes,
# the phantom's labels), never with a rule of the analysis code.

ANATOMY_SEEDS = [(21, n) for n in range(1, 7)]


def _phantom(seed, n, n_lesions=0):
    return make_phantom(np.random.default_rng([seed, n, 0]), ("fdg", "pentixafor"), n_lesions, (-160.0, 120.0))


def _organ_map(ph, lo, hi, step=2.0):
    """The truth organ map (and tissue labels) of the phantom on a grid over the anatomy box lo-hi."""
    from dualpet.synth.render import grid_affine, render_labels

    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    shape = tuple(int(v) for v in np.ceil((hi - lo) / step))
    aff = grid_affine(shape, (step,) * 3, (lo + hi) / 2.0)
    labels, organs = render_labels(ph, shape, aff, (np.eye(3), np.zeros(3)), with_lesions=False, organs=True)
    return labels, organs, aff


@pytest.mark.parametrize("seed,n", ANATOMY_SEEDS)
def test_organ_volumes_in_the_ranges_of_adults(seed, n):
    """Truth organ map volumes (domain notes): kidneys 120-170 mL each, liver 1,200-1,800,
    spleen 100-250, heart with chambers 500-900 mL. On a 2 mm grid the volume of a smooth
    organ is within about 1 % (half a voxel over its surface, errors of both signs), so
    the bounds are checked as they are."""
    from dualpet.anatomy import ORGANS

    ph = _phantom(seed, n)
    _, organs, _ = _organ_map(ph, (-190.0, -140.0, -200.0), (190.0, 140.0, 160.0))
    ml = {
        k: (organs == ORGANS[k]).sum() * 8.0 / 1000.0
        for k in ("kidney_left", "kidney_right", "liver", "spleen", "heart")
    }
    assert 120.0 <= ml["kidney_left"] <= 170.0 and 120.0 <= ml["kidney_right"] <= 170.0, ml
    assert 1200.0 <= ml["liver"] <= 1800.0, ml
    assert 100.0 <= ml["spleen"] <= 250.0, ml
    assert 500.0 <= ml["heart"] <= 900.0, ml


@pytest.mark.parametrize("seed,n", ANATOMY_SEEDS[:4])
def test_kidneys_lie_in_fat_beside_the_psoas_and_in_front_of_the_back_muscles(seed, n):
    """Each kidney: at T12-L3, lateral to the psoas, hilum facing anteromedially, and a fat
    plane between it and the back muscles of the same density: the nearest back-muscle
    voxel (erector spinae, quadratus lumborum, psoas) is at least 4 mm away (perirenal fat
    of 7-12 mm is painted over the muscles; 4 mm leaves two 1.5 mm voxels for the grid)
    and the straight line to it crosses fat."""
    from scipy import ndimage

    from dualpet.synth.shapes import BACK_MUSCLE, FAT, KIDNEY, MUSCLE, RENAL_PELVIS, RP_FAT
    from dualpet.synth.torso import _level

    ph = _phantom(seed, n)
    lm = ph.landmarks
    spine = lm["vertebrae"]
    for name, k in lm["kidneys"].items():
        c = k["center"]
        side = -1.0 if name == "right" else 1.0
        assert _level(spine, "L3")["center"][2] - 30.0 <= c[2] <= _level(spine, "T12")["center"][2] + 10.0
        assert k["hilum"][0] * side < 0 and k["hilum"][1] < 0  # medial and anterior
        step = 1.5
        labels, _, _ = _organ_map(ph, c - 90.0, c + 90.0, step)
        kidney = np.isin(labels, (KIDNEY, RENAL_PELVIS))
        muscle = np.isin(labels, (MUSCLE, BACK_MUSCLE))
        dist, nearest = ndimage.distance_transform_edt(~kidney, sampling=step, return_indices=True)
        m = np.argwhere(muscle)
        i = int(np.argmin(dist[tuple(m.T)]))
        assert dist[tuple(m[i])] >= 4.0, (name, dist[tuple(m[i])])
        a, b = np.array([nearest[d][tuple(m[i])] for d in range(3)]), m[i]
        line = np.rint(a[None, :] + np.linspace(0.0, 1.0, 50)[:, None] * (b - a)[None, :]).astype(int)
        assert np.isin(labels[tuple(line.T)], (FAT, RP_FAT)).any()
        # the psoas (MUSCLE beside the L2 body) is medial to the kidney
        v = _level(spine, "L2")
        psoas_x = side * (v["semi"][0] + 8.0)
        assert (
            ph.labels_at(np.array([[psoas_x, v["center"][1] - 4.0, v["center"][2]]]), with_lesions=False)[0] == MUSCLE
        )
        assert abs(c[0]) > abs(psoas_x) + 20.0


def test_spine_has_processes_and_back_muscles_behind_it():
    """Vertebrae are not cylinders: the lumbar transverse processes reach 35-50 mm from the
    midline, the spinous process 50-80 mm behind the body's centre; erector spinae lies
    behind the spine beside the spinous process, the canal holds no bone."""
    from dualpet.synth.shapes import BACK_MUSCLE, BONE, CANAL

    ph = _phantom(21, 1)
    for v in ph.landmarks["vertebrae"]:
        if v["name"] not in ("L2", "L3"):
            continue
        c, d = v["center"], v["semi"][1]
        lateral = [
            x
            for x in np.arange(20.0, 70.0, 1.0)
            if ph.labels_at(np.array([[x, v["tp_tip"][1][1], c[2]]]), False)[0] == BONE
        ]
        assert 35.0 <= max(lateral) <= 50.0
        back = [
            y
            for y in np.arange(0.0, 100.0, 1.0)
            if ph.labels_at(np.array([[0.0, c[1] + y, c[2] + 1.0]]), False)[0] == BONE
        ]
        assert 50.0 <= max(back) <= 80.0
        canal_y = c[1] + d + v["canal"][1] + 2.0
        assert ph.labels_at(np.array([[0.0, canal_y, c[2]]]), False)[0] == CANAL
        for side in (-1, 1):
            assert ph.labels_at(np.array([[side * 25.0, canal_y + 25.0, c[2]]]), False)[0] == BACK_MUSCLE


@pytest.mark.parametrize("seed,n", ANATOMY_SEEDS[:3])
def test_aorta_course_and_diameters(seed, n):
    """The aorta in the truth map, by segment (domain notes): ascending 30-35 mm across,
    descending thoracic 20-28, abdominal 15-24, left-anterior of the vertebral bodies from
    T5 to the bifurcation at L4; one organ ``aorta`` from the valve to the bifurcation.
    Diameters are measured as the area-equivalent diameter of the organ map's cross-section
    (0.5 mm grid, the tube's tilt makes it at most 3 % wider: 1 mm)."""
    from scipy import ndimage

    from dualpet.anatomy import ORGANS
    from dualpet.synth.render import grid_affine, render_labels
    from dualpet.synth.torso import _level

    ph = _phantom(seed, n)
    lm = ph.landmarks
    spine = lm["vertebrae"]
    path = lm["aorta_path"][0]
    d = lm["aorta_diameters_mm"]
    assert 30.0 <= d["ascending"] <= 35.0 and 20.0 <= d["descending"] <= 28.0 and 15.0 <= d["abdominal"] <= 24.0
    assert abs(lm["aorta_bifurcation_z"] - _level(spine, "L4")["center"][2]) <= 10.0

    def diameter(z, x0):  # of the cross-section through x0 (its connected part)
        shape = (160, 160, 1)
        aff = grid_affine(shape, (0.5, 0.5, 1.0), (x0[0], x0[1], z))
        _, organs = render_labels(ph, shape, aff, (np.eye(3), np.zeros(3)), with_lesions=False, organs=True)
        parts, _ = ndimage.label(organs[:, :, 0] == ORGANS["aorta"])
        area = (parts == parts[80, 80]).sum() * 0.25 if parts[80, 80] else 0.0
        return 2.0 * np.sqrt(area / np.pi)

    for name, (lo, hi) in (("T8", (20.0, 28.0)), ("L2", (15.0, 24.0))):
        v = _level(spine, name)
        z = v["center"][2]
        p = path[np.argmin(np.abs(path[:, 2] - z) + 1000.0 * (path[:, 1] < -30.0))]  # the descending knot
        assert p[0] > 0.0 and p[1] < v["center"][1]  # left of the midline, in front of the body's centre
        assert lo - 1.0 <= diameter(z, p) <= hi + 1.0
    asc = path[1]
    assert asc[0] < 0.0 and asc[1] < path[-1][1]  # right and anterior
    assert 30.0 - 1.0 <= diameter(asc[2], asc) <= 35.0 * 1.15  # oblique there: up to 15 % wider


def test_aorta_blood_on_plain_and_enhanced_ct(cohort_dir, truth):
    """The aorta's blood in the written CT: the patient's unenhanced value (35-55 HU) or the
    study's enhanced one (150-400 HU, CONTRAST_HU); mean over the truth map's aorta voxels
    2 voxels inside its wall (3 mm voxels, blur 0.6 voxel): within 10 HU of it (noise SD
    20-40 HU per voxel, hundreds of voxels; partial volume is kept out by the erosion)."""
    import nibabel as nib
    from scipy import ndimage

    from dualpet.anatomy import ORGANS
    from dualpet.synth.shapes import BLOOD

    for pid, t in truth.items():
        for tracer in t["tracers"]:
            organs = np.asarray(nib.load(cohort_dir / t["organ_maps"][tracer]).dataobj)
            core = ndimage.binary_erosion(organs == ORGANS["aorta"], iterations=2)
            dss = _read_series(cohort_dir / "dicom" / pid / tracer / "CT_2")
            hu = np.stack([d.pixel_array.T * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss], axis=2)
            enhanced = t["studies"][tracer]["ct_contrast"]
            expected = enhanced[str(BLOOD)] if enhanced else t["anatomy"]["ct_numbers_hu"]["blood"]
            assert (150.0 <= expected <= 400.0) if enhanced else (35.0 <= expected <= 55.0)
            assert core.sum() > 100
            assert hu[core].mean() == pytest.approx(expected, abs=10.0)


@pytest.mark.parametrize("seed,n", ANATOMY_SEEDS[:3])
def test_heart_position_wall_and_hila(seed, n):
    """Heart: between the lungs above the diaphragm's level, anterior and left of the
    midline; the LV myocardium a ring of LV_WALL_MM around the blood-filled cavity in the
    short axis (sampled at 0.5 mm: 10 +- 1 mm); the hila (main bronchi, pulmonary
    arteries) lie lateral to the mediastinum and outside the heart."""
    from dualpet.anatomy import ORGANS
    from dualpet.synth.shapes import AIRWAY, BLOOD, MYOCARDIUM, VESSEL
    from dualpet.synth.torso import LV_WALL_MM

    ph = _phantom(seed, n)
    lm = ph.landmarks
    heart = lm["heart"]
    _, organs, aff = _organ_map(ph, (-150.0, -150.0, -60.0), (150.0, 100.0, 180.0), 3.0)
    idx = np.argwhere(organs == ORGANS["heart"])
    pts = idx * 3.0 + aff[:3, 3]
    assert pts[:, 0].mean() > 0.0 and pts[:, 1].mean() < 0.0  # left, anterior
    assert pts[:, 2].min() > -25.0  # on the diaphragm
    lv_c = heart["parts"]["lv"][0]
    r = np.arange(0.0, 70.0, 0.5)
    e3 = np.cross(heart["axis"], heart["e2"])
    for direction in (heart["e2"], -heart["e2"], e3, -e3):  # short axis through the LV's centre
        labels = ph.labels_at(lv_c + r[:, None] * direction, with_lesions=False)
        first_wall = int(np.argmax(labels == MYOCARDIUM))
        assert first_wall > 0 and (labels[:first_wall] == BLOOD).all()
        wall = np.argmax(labels[first_wall:] != MYOCARDIUM) * 0.5
        # the cavity is shifted 11-13 mm towards the base: 10-11 mm here; 0.5 mm sampling
        assert LV_WALL_MM - 1.0 <= wall <= LV_WALL_MM + 2.0, wall
    for side, h in zip((-1, 1), lm["hila"]):
        assert side * h[0] > 40.0  # lateral to the mediastinum (half width about 30 mm)
        near = h + _sphere(12.0)
        lab = ph.labels_at(near, with_lesions=False)
        assert np.isin(lab, (VESSEL, AIRWAY)).any()  # pulmonary arteries and bronchi meet there
        ijk = np.rint((near - aff[:3, 3]) / 3.0).astype(int)
        ok = np.all((ijk >= 0) & (ijk < organs.shape), axis=1)
        assert not (organs[tuple(ijk[ok].T)] == ORGANS["heart"]).any()


def _sphere(r, n=60):
    from dualpet.synth.phantom import _sphere_dirs

    return np.vstack([np.zeros((1, 3)), _sphere_dirs(n) * r, _sphere_dirs(n) * r / 2.0])


@pytest.mark.parametrize("seed,n", ANATOMY_SEEDS[:4])
def test_stomach_under_the_left_diaphragm_with_a_horizontal_air_fluid_level(seed, n):
    """Stomach in the left upper quadrant below the diaphragm's level, its wall, fluid and
    gas labelled ``bowel`` in the truth map; in a supine patient its gas lies anterior (-y)
    and its fluid posterior, separated by one coronal plane (a horizontal line on axial
    images): every gas point in front of the level, every fluid point behind it (exact:
    the gas is the lumen cut by that plane)."""
    from dualpet.anatomy import ORGANS
    from dualpet.synth.shapes import STOMACH, STOMACH_FLUID, STOMACH_GAS

    ph = _phantom(seed, n)
    st = ph.landmarks["stomach"]
    lo, hi = st["points"].min(axis=0) - 40.0, st["points"].max(axis=0) + 40.0
    labels, organs, aff = _organ_map(ph, lo, hi, 2.0)
    pts = np.argwhere(np.isin(labels, (STOMACH, STOMACH_FLUID, STOMACH_GAS))) * 2.0 + aff[:3, 3]
    assert pts[:, 0].mean() > 0.0 and pts[:, 2].mean() < 0.0  # left, below the diaphragm's level
    assert (organs[np.isin(labels, (STOMACH, STOMACH_FLUID, STOMACH_GAS))] == ORGANS["bowel"]).all()
    gas = np.argwhere(labels == STOMACH_GAS) * 2.0 + aff[:3, 3]
    fluid = np.argwhere(labels == STOMACH_FLUID) * 2.0 + aff[:3, 3]
    assert len(fluid) > 0
    if st["gas"]:
        assert len(gas) > 0 and gas[:, 1].max() <= st["level_y"] < fluid[:, 1].min() + 2.0 * 1.0
        # where both lie in one axial plane, the gas is in front of the fluid
        z = np.intersect1d(np.round(gas[:, 2]), np.round(fluid[:, 2]))
        assert z.size > 0
    else:
        assert len(gas) == 0


def test_stomach_gas_level_is_common_and_supine():
    """Most patients show an air-fluid level (75 % drawn; 40 patients: SD 7 %), some a
    stomach without gas."""
    gas = [_phantom(22, n).landmarks["stomach"]["gas"] for n in range(1, 41)]
    assert 0.5 <= np.mean(gas) <= 0.95


def test_truth_organ_map_labels_new_structures():
    """What the truth map calls each new structure (TotalSegmentator v2 numbers of dualpet's
    ORGANS): stomach and bowel 18, heart (myocardium, walls and chambers) 51, aorta 52,
    vertebrae with their processes 26; muscles, oesophagus, venae cavae, pulmonary vessels,
    airways, discs, canal and brown fat are body (200)."""
    from dualpet.anatomy import ORGANS
    from dualpet.synth import phantom as P
    from dualpet.synth import shapes as S

    ph = _phantom(21, 1)
    labels, organs, _ = _organ_map(ph, (-200.0, -140.0, -240.0), (200.0, 140.0, 300.0), 4.0)
    expect = {
        S.STOMACH: "bowel",
        S.STOMACH_FLUID: "bowel",
        S.BOWEL: "bowel",
        S.MYOCARDIUM: "heart",
        S.BLOOD: "heart",
        S.HEART_WALL: "heart",
        S.AORTA: "aorta",
        S.MARROW: "vertebrae",
        S.BACK_MUSCLE: "body",
        S.NECK_MUSCLE: "body",
        S.MUSCLE: "body",
        S.OESOPHAGUS: "body",
        S.VEIN: "body",
        S.VESSEL: "body",
        S.AIRWAY: "body",
        S.DISC: "body",
        S.CANAL: "body",
        S.BROWN_FAT: "body",
        S.RP_FAT: "body",
        S.SOFT: "body",
    }
    for label, organ in expect.items():
        got = set(np.unique(organs[labels == label]).tolist())
        assert got, P.TISSUES[label]
        if label == S.MARROW:  # marrow of the vertebrae, and of the other bones (body)
            assert ORGANS["vertebrae"] in got
        else:
            assert got == {ORGANS[organ]}, (P.TISSUES[label], got)
    # the processes are vertebrae: bone behind the canal is labelled so
    v = next(v for v in ph.landmarks["vertebrae"] if v["name"] == "L2")
    tip = v["tp_tip"][1] - [3.0, 0.0, 0.0]
    from dualpet.synth.render import organ_code

    assert ph.labels_at(tip[None], False)[0] == S.BONE
    bone_shapes = [s for s in ph.shapes if s.label == S.BONE and s.kind == "tube" and s.contains(tip[None])[0]]
    assert bone_shapes and all(organ_code(s) == ORGANS["vertebrae"] for s in bone_shapes)


@pytest.mark.parametrize("n", range(1, 9))
def test_shoulders_and_arms(n):
    """Arms up: the humeri run up beside the head (bone lateral to the skull at the head's
    level) and the shoulder girdle (humeral heads, scapulae, clavicles) lies at the top of
    the trunk; arms down: the humeri beside the trunk 150 mm below the shoulders, nothing
    beside the head. Deltoids and rotator cuff are shoulder muscle (NECK_MUSCLE)."""
    from dualpet.synth.shapes import BONE, MARROW, NECK_MUSCLE

    ph = _phantom(23, n)
    lm = ph.landmarks
    S, head = lm["shoulder_z"], lm["head_center"]
    xs = np.arange(60.0, 260.0, 2.0)

    def bone_at(z, y=0.0, x0=60.0):
        x = xs[xs >= x0]
        pts = np.concatenate([np.stack([s * x, np.full_like(x, y), np.full_like(x, z)], 1) for s in (-1, 1)])
        lab = ph.labels_at(pts, False).reshape(2, -1)
        return [np.isin(lab[i], (BONE, MARROW)).any() for i in range(2)]

    # humeral heads at the glenoid, under a deltoid, on both sides
    for side in (-1, 1):
        ray = np.stack(
            [side * xs, np.full_like(xs, 10.0), np.full_like(xs, S - 28.0 + (18.0 if lm["arms"] == "up" else 0.0))], 1
        )
        lab = ph.labels_at(ray, False)
        assert np.isin(lab, (BONE, MARROW)).any() and (lab == NECK_MUSCLE).any()
    if lm["arms"] == "up":
        assert all(bone_at(S + 150.0, -3.0))
        assert not any(bone_at(S - 200.0))
    else:
        assert all(bone_at(S - 150.0, 12.0))
        assert not any(bone_at(head[2], -6.0, x0=lm["head_semi"][0] + 10.0))  # beside the skull


def test_physiological_uptake_varies_between_patients():
    """FDG (domain notes): myocardium from blood level (about 30 % of patients) to intense
    (> 10 in some); symmetric uptake in the neck and shoulder muscles (SUV 1.5-4) in about a
    quarter, brown fat (SUV 2-10) in about a fifth (100 patients: binomial SD 4-5 %, bounds
    at about 3 SD); Pentixafor low in both. The depots come in mirror pairs (one label, so
    one uptake for both sides)."""
    from dualpet.synth.phantom import sample_uptake
    from dualpet.synth.shapes import BLOOD, BROWN_FAT, FAT, MUSCLE, MYOCARDIUM, NECK_MUSCLE

    kinds, muscles, brown, myo = [], [], [], []
    for n in range(100):
        u, phys = sample_uptake(np.random.default_rng([24, n]), ("fdg", "pentixafor"))
        kinds.append(phys["myocardial_fdg"])
        myo.append(u["fdg"][MYOCARDIUM] / u["fdg"][BLOOD])
        if phys["neck_shoulder_muscle_fdg"]:
            muscles.append(u["fdg"][NECK_MUSCLE])
        else:
            assert u["fdg"][NECK_MUSCLE] == u["fdg"][MUSCLE]
        if phys["brown_fat_fdg"]:
            brown.append(u["fdg"][BROWN_FAT])
        else:
            assert u["fdg"][BROWN_FAT] == u["fdg"][FAT]
        assert (
            u["pentixafor"][BROWN_FAT] == u["pentixafor"][FAT]
            and u["pentixafor"][NECK_MUSCLE] == u["pentixafor"][MUSCLE]
        )
    assert 0.15 <= kinds.count("none") / 100 <= 0.45
    assert min(myo) <= 1.3 and max(u_ for u_ in myo) * 1.5 > 10.0 / 1.7  # blood level to intense
    assert 0.12 <= len(muscles) / 100 <= 0.4 and all(1.5 <= m <= 4.0 for m in muscles)
    assert 0.08 <= len(brown) / 100 <= 0.33 and all(2.0 <= b <= 10.0 for b in brown)
    ph = _phantom(21, 1)
    depots = [s for s in ph.shapes if s.label == BROWN_FAT]
    centres = {tuple(np.round(s.center, 3)) for s in depots}
    assert len(depots) >= 6 and all((-c[0], c[1], c[2]) in centres for c in centres)


def test_ct_noise_is_correlated_and_starves_through_the_shoulders():
    """Low-dose CT noise: neighbouring voxels correlated (2 mm voxels: correlation of
    horizontally adjacent voxels > 0.2; white noise would give 0 +- 0.01), the noise SD
    where the patient is thin is the study's (5 %: the SD of 80,000 correlated samples);
    a slice whose lateral rays cross more tissue (400 mm of dense tissue: the shoulders
    with the arms down) is noisier and carries horizontal streaks (the row means vary more
    than the column means)."""
    from dualpet.synth.render import add_ct_noise

    hu = np.full((200, 200, 4), -1000.0, np.float32)
    hu[70:130, 70:130, :2] = 40.0  # thin: 120 mm
    hu[0:200, 80:120, 2:] = 400.0  # wide and dense: 400 mm of bone-like tissue
    outside = np.zeros(hu.shape, bool)
    clean = hu.copy()
    add_ct_noise(hu, outside, np.diag([2.0, 2.0, 3.0, 1.0]), np.random.default_rng(0), 30.0)
    noise = hu - clean
    thin = noise[:, :, :2]
    assert thin.std() == pytest.approx(30.0, rel=0.05)
    r = np.corrcoef(thin[:-1].ravel(), thin[1:].ravel())[0, 1]
    assert r > 0.2
    wide = noise[:, 80:120, 2:]
    assert wide.std() > 1.5 * thin.std()
    rows, cols = wide[:, :, 0].mean(axis=0), wide[:, :, 0].mean(axis=1)
    assert rows.std() > 3.0 * cols.std()


def _lesions_of(seed, count=40, n_lesions=8):
    return [(ph, les) for n in range(1, count + 1) for ph in [_phantom(seed, n, n_lesions)] for les in ph.lesions]


def test_large_tumours_are_one_lesion_with_several_peaks_or_a_cold_core():
    """A lobulated mass (30-60 mm) is one truth lesion whose noiseless PET shows several
    peaks (local maxima above half its maximum) and whose CT voxels form one connected
    region; a necrotic mass has a cold core (its centre's noiseless SUV below the rim's
    maximum by at least a third)."""
    from scipy import ndimage

    from dualpet.synth.render import grid_affine, render_labels, render_pet_truth

    pairs = _lesions_of(25)
    lob = [(ph, les) for ph, les in pairs if les.form == "lobulated" and les.category != "index_only"]
    nec = [(ph, les) for ph, les in pairs if les.form == "necrotic" and les.category != "index_only"]
    assert lob and nec
    for ph, les in lob[:3] + nec[:3]:
        assert 15.0 <= les.radius <= 30.0 and sum(1 for o in ph.lesions if o is les) == 1
        shape = (40, 40, 40)
        aff = grid_affine(shape, (2.0, 2.0, 2.0), les.center)
        img = render_pet_truth(ph, "fdg", shape, aff, (np.eye(3), np.zeros(3)), 6.5)
        pts = np.indices(shape).reshape(3, -1).T * 2.0 + aff[:3, 3]
        inside = (np.linalg.norm(pts - les.center, axis=1) <= les.radius).reshape(shape)
        if les.form == "lobulated":
            peaks = (img == ndimage.maximum_filter(img, size=5)) & inside & (img > 0.5 * img[inside].max())
            assert peaks.sum() >= 2
            labels = render_labels(ph, shape, aff, (np.eye(3), np.zeros(3)))
            i = ph.lesions.index(les)
            assert ndimage.label(labels == 100 + i)[1] == 1
        else:
            core = les.center + les.parts[1].offset
            c = tuple(np.rint((core - aff[:3, 3]) / 2.0).astype(int))
            assert img[c] < (2.0 / 3.0) * img[inside].max()


def test_close_pairs_stay_two_lesions_and_hilar_sites_exist():
    """Lesions placed as a pair lie 10-20 mm apart edge to edge and are two lesions; lung
    tumours beside a hilum are region 'lung', mediastinal and hilar nodes 'lymph node';
    every lesion keeps 10 mm from hot organs (the outer shell holds none of them)."""
    from dualpet.synth.phantom import HOT_ORGANS, _sphere_dirs
    from dualpet.synth.shapes import BLOOD

    pairs = _lesions_of(26)
    paired = [les for _, les in pairs if les.pair is not None]
    assert paired
    for les in paired:
        gap = np.linalg.norm(les.center - les.pair.center) - les.radius - les.pair.radius
        assert 10.0 - 1e-9 <= gap <= 20.0 + 1e-9 and les.pair is not les and les.pair.pair is les
    stations = {(les.region, les.station) for _, les in pairs}
    assert ("lung", "perihilar") in stations and ("lymph node", "hilar") in stations
    assert any(
        r == "lymph node" and s in ("subcarinal", "prevascular", "hilar", "aortopulmonary", "paratracheal")
        for r, s in stations
    )
    for ph, les in pairs:
        shell = ph.labels_at(les.center + _sphere_dirs() * (les.radius + 9.5), with_lesions=False)
        assert not set(shell.tolist()) & (set(HOT_ORGANS) | {BLOOD})


def test_truth_records_forms_parts_and_pairs(truth):
    """The truth lists each lesion once with its form ('sphere', 'lobulated', 'necrotic'),
    the parts of a large one inside its enclosing radius, its station and its pair."""
    ids = {les["id"] for t in truth.values() for les in t["lesions"]}
    for t in truth.values():
        for les in t["lesions"]:
            assert les["form"] in ("sphere", "lobulated", "necrotic") and les["station"]
            for p in les.get("parts", []):
                assert np.linalg.norm(p["offset_mm"]) + p["radius_mm"] <= les["radius_mm"] + 1e-3  # rounded to 1 um
            if "pair_with" in les:
                assert les["pair_with"] in ids and les["pair_with"] != les["id"]
            # the enclosing sphere's volume (radius rounded to 1 um in the truth)
            assert 0.0 < les["volume_ml"] <= 4.0 / 3.0 * np.pi * (les["radius_mm"] + 1e-3) ** 3 / 1000.0
