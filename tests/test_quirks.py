"""`dualpet synth --quirks`: every vendor header variant converts to the true SUVbw."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from dualpet.convert import convert_study
from dualpet.dicom import scan_folder
from dualpet.geometry import apply_affine, lps_affine
from dualpet.io import read_json
from dualpet.synth import QUIRKS, generate_cohort

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


def test_extra_series_are_present_and_ignored(quirky):
    series = scan_folder(quirky / "dicom" / "P001" / "fdg")
    assert sorted(s.kind for s in series.values()) == ["ct_axial", "derived", "localizer", "pet_ac", "pet_nac"]


@pytest.mark.parametrize("pid", ["P001", "P002", "P003"])
def test_quirks_convert_to_true_suv(quirky, tmp_path, pid):
    t = read_json(quirky / "truth" / f"{pid}.json")
    for tracer in t["tracers"]:
        quirk = t["studies"][tracer]["quirk"]
        side = convert_study(quirky / "dicom" / pid / tracer, patient=pid, tracer=tracer, ct_out=tmp_path / "ct.nii.gz",
                             pet_out=tmp_path / "pet.nii.gz", json_out=tmp_path / "pet.json")  # fmt: skip
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
