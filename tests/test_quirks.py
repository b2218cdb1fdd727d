"""`dualpet synth --quirks`: every vendor header variant converts to the true SUVbw."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from dualpet.convert import convert_study
from dualpet.dicom import scan_folder, select_series
from dualpet.geometry import apply_affine, lps_affine
from dualpet.io import read_json
from dualpet.synth import QUIRKS, generate_cohort

#: Each test reads a generated cohort with every vendor quirk (make test-fast leaves them out).
pytestmark = pytest.mark.slow

#: rule the sidecar must name for each variant
EXPECTED = {
    "philips_cnts": ("factor_source", "philips_suv_scale_factor"),
    "mbq_dose": ("dose_source", "MBq_converted"),
    "midnight_injection": ("injection_time_source", "start_time_previous_day"),
    "postprocessed_series_time": ("reference_time_source", "frame_reference_time"),
    "ge_private_datetime": ("reference_time_source", "ge_private_scan_datetime"),
    "feet_first": ("reference_time_source", "series_time"),
}


@pytest.fixture(scope="module")
def quirky(tmp_path_factory):
    out = tmp_path_factory.mktemp("quirks")
    generate_cohort(out, n_patients=3, seed=3, size="demo", quirks=True, log=lambda m: None)
    return out


def test_every_quirk_is_generated(quirky):
    seen = set()
    for p in (quirky / "truth").glob("*.json"):
        t = read_json(p)
        seen |= {t["studies"][tr]["quirk"] for tr in t["tracers"]}
    assert seen == set(QUIRKS) == set(EXPECTED)


@pytest.mark.parametrize("pid, tracer", [("P001", "fdg"), ("P001", "pentixafor")])
def test_extra_series_are_present_and_ignored(quirky, pid, tracer):
    """A scanner export: AC and NAC PET (GE style in every other study: ATTN listed, Units
    PROPCNTS), CT, localizer, MIP, three RWV, a SEG and an SR. The AC PET is chosen without
    help, and inspect.json-style reporting says why the others were left aside."""
    series = scan_folder(quirky / "dicom" / pid / tracer)
    kinds = sorted(s.kind for s in series.values())
    assert kinds == [
        "ct_axial",
        "derived",
        "localizer",
        "object",
        "object",
        "object",
        "object",
        "object",
        "pet_ac",
        "pet_nac",
    ]
    choice = select_series(series)
    assert choice.pet.description.endswith("AC") and "NAC" not in choice.pet.description
    report = choice.report()
    assert report["non_image_objects_skipped"] == {"RWV": 3, "SEG": 1, "SR": 1}
    nac = next(s for s in report["other_image_series"] if "NAC" in s["series"])
    ge_style = "Units PROPCNTS are not quantitative" in nac["not_used_because"]
    assert ge_style != ("CorrectedImage lacks ATTN" in nac["not_used_because"])  # one style or the other
    assert "SeriesDescription says not attenuation-corrected" in nac["not_used_because"]
    t = read_json(quirky / "truth" / f"{pid}.json")["studies"][tracer]
    assert ge_style == any("GE style" in e for e in t["extra_series"])
    assert not any(uid in json.dumps(report) for uid in series)  # series named by number, never UID


def test_both_nac_styles_are_generated(quirky):
    styles = {
        any("GE style" in e for e in read_json(p)["studies"][t]["extra_series"])
        for p in (quirky / "truth").glob("*.json")
        for t in ("fdg", "pentixafor")
    }
    assert styles == {True, False}


def test_slice_positions_jitter_and_convert(quirky, tmp_path):
    """Recorded slice positions jitter by up to 0.05 mm: accepted, recorded, affine fitted."""
    side = convert_study(
        quirky / "dicom" / "P002" / "fdg",
        patient="P002",
        tracer="fdg",
        ct_out=tmp_path / "ct.nii.gz",
        pet_out=tmp_path / "pet.nii.gz",
        json_out=tmp_path / "pet.json",
    )
    t = read_json(quirky / "truth" / "P002.json")["studies"]["fdg"]
    for key, grid, path in (("pet_series", "pet", "pet.nii.gz"), ("ct_series", "ct", "ct.nii.gz")):
        geo = side[key]
        # distance from the fitted line <= jitter (0.05) + the fit's own error (<= jitter)
        assert 0.0 < geo["slice_position_max_deviation_mm"] <= 0.1
        assert geo["slice_gaps_mm"][1] - geo["slice_gaps_mm"][0] > 0.02  # real jitter, not a uniform stack
        # the fitted slice axis lies on the true (uniform) grid: every slice centre within
        # 0.05 mm (a least-squares line through ~100-300 points jittered +-0.05 mm; its
        # error is ~0.01 mm)
        true = np.array(t[grid]["affine_lps"])
        fitted = lps_affine(nib.load(tmp_path / path).affine)
        k = np.stack([np.zeros(geo["slices"]), np.zeros(geo["slices"]), np.arange(geo["slices"])], 1)
        assert np.abs(apply_affine(fitted, k) - apply_affine(true, k)).max() < 0.05


@pytest.mark.parametrize("pid", ["P001", "P002", "P003"])
def test_quirks_convert_to_true_suv(quirky, tmp_path, pid):
    t = read_json(quirky / "truth" / f"{pid}.json")
    for tracer in t["tracers"]:
        quirk = t["studies"][tracer]["quirk"]
        side = convert_study(
            quirky / "dicom" / pid / tracer,
            patient=pid,
            tracer=tracer,
            ct_out=tmp_path / "ct.nii.gz",
            pet_out=tmp_path / "pet.nii.gz",
            json_out=tmp_path / "pet.json",
        )
        key, value = EXPECTED[quirk]
        assert side[key] == value, (quirk, side)
        img = nib.load(tmp_path / "pet.nii.gz")
        suv = np.asarray(img.dataobj)
        world = apply_affine(lps_affine(img.affine), np.indices(suv.shape).reshape(3, -1).T)
        for les in t["lesions"]:
            d = np.linalg.norm(world - les["center_lps"][tracer], axis=1)
            inside = d <= max(les["radius_mm"], np.sqrt(3) * 2.0)  # truth: sphere or nearest voxel
            # 0.5 %: the tolerance (observed: float32 rounding, ~1e-6)
            assert suv.ravel()[inside].max() == pytest.approx(les["image_suvmax"][tracer], rel=0.005), quirk


def test_suv_command_on_a_scanner_export(quirky, tmp_path):
    """`dualpet suv FOLDER` on a whole export (NAC with ATTN and PROPCNTS, RWV, SEG, SR,
    localizer, MIP, CT) needs no series UID and names its choice in the sidecar."""
    from dualpet.cli import main

    pid, tracer = next(
        (p.stem, t)
        for p in sorted((quirky / "truth").glob("*.json"))
        for t in ("fdg", "pentixafor")
        if any("GE style" in e for e in read_json(p)["studies"][t]["extra_series"])
    )
    code = main(
        [
            "suv",
            str(quirky / "dicom" / pid / tracer),
            "-o",
            str(tmp_path / "s.nii.gz"),
            "--json",
            str(tmp_path / "s.json"),
        ]
    )
    assert code == 0
    side = read_json(tmp_path / "s.json")
    assert "quantitative units" in side["series_choice"]["pet"]["chosen_because"]
