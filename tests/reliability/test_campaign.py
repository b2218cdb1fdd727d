"""The reliability campaign of issue 23 as tests: every DICOM corruption of
:mod:`campaign_cases` gives its stated outcome (included with the same numbers, or excluded
with one line naming the study and the attribute), and every hostile sheet or config is
refused by the dry run before any job runs.

``make test`` runs the short subset (``SHORT``, ``SHORT_ATTACKS``); ``make
test-reliability`` runs every case (marker ``campaign``).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest
from campaign_cases import ATTACKS, CASES, SHORT, SHORT_ATTACKS
from conftest import REPO

from dualpet.convert import convert_study, inspect_study


def _params(items, short):
    return [
        pytest.param(item, id=item.name, marks=() if item.name in short else pytest.mark.campaign) for item in items
    ]


@pytest.fixture(scope="module")
def baseline(cohort_dir, tmp_path_factory):
    """The untouched study (P001, FDG) converted: the numbers every 'included' case keeps."""
    out = tmp_path_factory.mktemp("baseline")
    convert_study(
        cohort_dir / "dicom" / "P001" / "fdg",
        patient="P001",
        tracer="fdg",
        ct_out=out / "ct.nii.gz",
        pet_out=out / "pet.nii.gz",
        json_out=out / "pet.json",
    )
    return {name: nib.load(out / f"{name}.nii.gz") for name in ("pet", "ct")}


@pytest.mark.parametrize("case", _params(CASES, SHORT))
def test_a_corrupted_study_gives_its_stated_outcome(case, cohort_dir, baseline, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(cohort_dir / "dicom" / "P001" / "fdg", study)
    case.apply(study)
    verdict = inspect_study(
        study,
        patient="P001",
        tracer="fdg",
        out_json=tmp_path / "inspect.json",
        other_study=(cohort_dir / "dicom" / "P001" / "pentixafor", "pentixafor"),
    )
    error = verdict.get("error", "")
    if case.outcome == "excluded":
        if verdict["ok"]:  # inspection reads headers only: conversion must then refuse it
            try:
                convert_study(
                    study,
                    patient="P001",
                    tracer="fdg",
                    ct_out=tmp_path / "ct.nii.gz",
                    pet_out=tmp_path / "pet.nii.gz",
                    json_out=tmp_path / "pet.json",
                )
            except Exception as exc:
                error = f"patient P001, fdg: {exc}" if not str(exc).startswith("patient P001") else str(exc)
        assert error, f"{case.name}: accepted, expected an exclusion matching {case.expect!r}"
        assert error.startswith(("patient P001, fdg: ", "patient P001, fdg, series")) and "\n" not in error, error
        assert re.search(case.expect, error), f"{case.name}: {error}"
        return
    assert verdict["ok"], f"{case.name}: {error}"
    convert_study(
        study,
        patient="P001",
        tracer="fdg",
        ct_out=tmp_path / "ct.nii.gz",
        pet_out=tmp_path / "pet.nii.gz",
        json_out=tmp_path / "pet.json",
    )
    pet = nib.load(tmp_path / "pet.nii.gz")
    assert np.allclose(pet.affine, baseline["pet"].affine, atol=1e-4)
    assert np.array_equal(np.asarray(pet.dataobj), np.asarray(baseline["pet"].dataobj)), case.name
    if case.numbers:
        ct = nib.load(tmp_path / "ct.nii.gz")
        assert np.array_equal(np.asarray(ct.dataobj), np.asarray(baseline["ct"].dataobj)), case.name


@pytest.mark.parametrize("attack", _params(ATTACKS, SHORT_ATTACKS))
def test_a_hostile_sheet_or_config_is_refused_before_any_job(attack, tmp_path, tool_env):
    for rel, text in attack.files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    proc = subprocess.run(
        ["snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n"],
        capture_output=True,
        text=True,
        env=tool_env,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"{attack.name}: not refused"
    assert re.search(attack.expect, out), f"{attack.name}: {out[-1500:]}"
    assert not [word for word in attack.never if word in out], f"{attack.name}: {out[-1500:]}"
    assert not (tmp_path / "results").exists() and not list(tmp_path.glob("pwned*"))
