"""Reliability and security of whole runs (slow): the same numbers at any core count, a
killed run resumes to identical outputs, hostile names never reach a shell, and PACS-style
folder names and DICOM UIDs never reach an output."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import time

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from conftest import REPO

from dualpet.geometry import ras_affine
from dualpet.synth import generate_cohort

#: Whole runs repeated, killed and resumed (some four minutes together): the reliability
#: campaign's, run by `make test-reliability` (CI runs it too), not by `make test`.
pytestmark = [pytest.mark.slow, pytest.mark.campaign]
INJECTION = "x'; touch pwned; 'y $(touch pwned2) `touch pwned3`"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("reliability") / "data"
    generate_cohort(d, n_patients=2, seed=17, size="demo", quirks=True, log=lambda m: None)
    return d


def _workdir(root, data, **config):
    (root / "config").mkdir(parents=True)
    lines = {"studies": str(data / "studies.tsv"), "clinical": str(data / "clinical.tsv"), **config}
    (root / "config" / "config.yaml").write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in lines.items()))
    return root


def snakemake(workdir, env, *args, cores=2, popen=False):
    cmd = [
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--cores",
        str(cores),
        "--workflow-profile",
        str(REPO / "workflow" / "profiles" / "default"),
        *args,
    ]
    if popen:
        return subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
        )
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


def _comparable(results):
    """Every result that carries numbers, as comparable content (timings and pictures out)."""
    out = {}
    for path in sorted(results.rglob("*")):
        rel = path.relative_to(results).as_posix()
        if not path.is_file() or rel.startswith(("logs/", "benchmarks/")) or path.suffix == ".png":
            continue
        if rel.endswith(".nii.gz"):
            img = nib.load(path)
            out[rel] = (np.asarray(img.dataobj).tobytes(), img.affine.tobytes())
        elif rel.endswith(".json"):
            doc = json.loads(path.read_text())
            for key in ("wall_time_s", "elapsed_s"):
                doc.pop(key, None)
            out[rel] = json.dumps(doc, sort_keys=True)
        elif rel.endswith(".npz"):
            with np.load(path) as z:
                out[rel] = {k: z[k].tobytes() for k in z.files}
        else:
            out[rel] = path.read_bytes()
    return out


def _differences(a, b):
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


@pytest.fixture(scope="module")
def reference_run(data, tmp_path_factory, tool_env):
    wd = _workdir(tmp_path_factory.mktemp("c2"), data)
    proc = snakemake(wd, tool_env, cores=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return wd


#: One patient's final outputs: the one-core and the killed run redo only this patient
#: (every per-patient step runs; the cohort steps are functions of the tables) and are
#: compared with the reference run's files of that patient (halves the suite's longest tests).
ONE_PATIENT = "P001"
ONE_PATIENT_TARGETS = [
    f"results/{ONE_PATIENT}/{f}"
    for f in (
        "lesions.tsv",
        "review.html",
        "mip.png",
        "registration/qc.png",
        "fdg/lesions_seg.dcm",
        "pentixafor/lesions_seg.dcm",
    )
]


def _one_patient(results):
    return {k: v for k, v in _comparable(results).items() if k.startswith(f"{ONE_PATIENT}/")}


def test_same_outputs_at_one_and_two_cores(reference_run, data, tmp_path, tool_env):
    wd = _workdir(tmp_path / "c1", data)
    proc = snakemake(wd, tool_env, *ONE_PATIENT_TARGETS, cores=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _one_patient(reference_run / "results"), _one_patient(wd / "results")
    assert len(a) > 20 and any(k.endswith("transform.tfm") for k in a)
    assert _differences(a, b) == []


def test_killed_run_resumes_to_identical_outputs(reference_run, data, tmp_path, tool_env):
    """kill -9 in the middle of a run: the next run is refused until `--unlock` (the README
    says so), then completes, redoing what was interrupted, and equals an uninterrupted run."""
    wd = _workdir(tmp_path / "killed", data)
    proc = snakemake(wd, tool_env, *ONE_PATIENT_TARGETS, popen=True)
    marker = wd / "results" / "P001" / "registration" / "transform.tfm"
    deadline = time.time() + 300
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    again = snakemake(wd, tool_env, *ONE_PATIENT_TARGETS)
    assert again.returncode != 0 and "--unlock" in again.stdout + again.stderr
    assert snakemake(wd, tool_env, "--unlock").returncode == 0
    resumed = snakemake(wd, tool_env, *ONE_PATIENT_TARGETS)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _differences(_one_patient(reference_run / "results"), _one_patient(wd / "results")) == []


def _identifiers_and_uids(folder):
    """Every identifying value and UID the DICOM files under ``folder`` carry."""
    found = set()
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        for keyword in (
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "AccessionNumber",
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "SOPInstanceUID",
            "FrameOfReferenceUID",
        ):
            value = str(ds.get(keyword, "") or "")
            if len(value) >= 6:
                found.add(value)
    return found


def test_hostile_names_never_run_and_paths_never_leak(data, tmp_path, tool_env):
    """Sheet values and config paths carrying shell code (quotes, $(...), backticks) are
    passed as data; a folder called "Dr O'Neil lab" works; PACS-style folder names (patient
    name and record number) and DICOM UIDs appear in no output, also when a study is
    refused and its patient excluded."""
    root = tmp_path / f"Dr O'Neil lab {INJECTION}"
    # patient P001: both studies in PACS-style folders under a hostile root
    rows = []
    for tracer in ("fdg", "pentixafor"):
        dst = root / "Richter^Frank_MRN3787556" / f"PET_{tracer}"
        shutil.copytree(data / "dicom" / "P001" / tracer, dst)
        rows.append({"patient": "P001", "tracer": tracer, "dicom_dir": str(dst)})
    # patient P002: its fdg study, in a PACS-style folder whose name must not leak, is refused
    # (its PET is not quantitative); a missing folder is refused at planning (test_workflow)
    refused = root / "Weber^Anna_MRN1234567" / "PET_fdg"
    shutil.copytree(data / "dicom" / "P002" / "fdg", refused)
    for path in refused.rglob("*"):
        if path.is_file():
            ds = pydicom.dcmread(path, force=True)
            if str(ds.get("Modality", "")) == "PT":
                ds.Units = "CPS"
                ds.save_as(path)
    rows.append({"patient": "P002", "tracer": "fdg", "dicom_dir": str(refused)})
    rows.append({"patient": "P002", "tracer": "pentixafor", "dicom_dir": str(data / "dicom" / "P002" / "pentixafor")})
    truth = json.loads((data / "truth" / "P001.json").read_text())
    sheet = pd.DataFrame(rows)
    for column in ("exclusion_mask", "background_mask", "lesion_mask"):
        sheet[column] = ""
    for i, tracer in enumerate(("fdg", "pentixafor")):
        centre = np.array(truth["studies"][tracer]["fov_center_lps"])
        affine = np.diag([4.0, 4.0, 4.0, 1.0])
        affine[:3, 3] = centre - 20.0  # a 40 mm cube at the field of view's centre (soft tissue)
        for column, value in (("exclusion_mask", 0), ("background_mask", 1), ("lesion_mask", 0)):
            path = root / f"{tracer} {column} {INJECTION}.nii.gz"
            nib.save(nib.Nifti1Image(np.full((10, 10, 10), value, np.int16), ras_affine(affine)), str(path))
            sheet.loc[i, column] = str(path)
    studies = root / f"studies {INJECTION}.tsv"
    sheet.to_csv(studies, sep="\t", index=False)
    clinical = root / f"clinical {INJECTION}.tsv"
    shutil.copy(data / "clinical.tsv", clinical)
    wd = tmp_path / "wd"
    (wd / "config").mkdir(parents=True)
    (wd / "config" / "config.yaml").write_text(
        f"studies: {json.dumps(str(studies))}\nclinical: {json.dumps(str(clinical))}\n"
    )
    proc = snakemake(wd, tool_env)
    assert proc.returncode != 0  # P002 is excluded: the run says so
    for where in (wd, root, tmp_path, REPO):
        assert not list(where.rglob("pwned*")), "a value reached the shell as code"
    patients = pd.read_csv(wd / "results" / "cohort" / "patients.tsv", sep="\t", keep_default_na=False).set_index(
        "patient"
    )
    assert patients.loc["P001", "status"] == "included", patients.loc["P001"].to_dict()
    assert patients.loc["P002", "status"] == "excluded"
    assert "Units CPS are not quantitative" in patients.loc["P002", "excluded_reason"]
    assert patients.loc["P001", "fdg_background_source"].startswith("mask:sheet")  # the hostile-named mask was read
    forbidden = {"Richter", "MRN3787556", "Weber", "MRN1234567", "O'Neil", "pwned"}
    forbidden |= _identifiers_and_uids(root) | _identifiers_and_uids(data / "dicom" / "P002")
    files = [p for p in (wd / "results").rglob("*") if p.is_file()]
    assert len(files) > 30
    # lesions_seg.dcm is the one output that must name the original PET's study, series and
    # instance UIDs (a viewer lays it over that PET); it still carries no identifying value
    uids = {v for v in forbidden if re.fullmatch(r"[0-9.]+", v)}
    seg_files = [p for p in files if p.name == "lesions_seg.dcm"]
    assert {p.parent.name for p in seg_files} >= {"fdg", "pentixafor"}
    for path in files:
        blob = path.read_bytes()
        if blob[:2] == b"\x1f\x8b":  # gzip (placeholders of excluded patients are not)
            blob = gzip.decompress(blob)
        for value in forbidden - (uids if path in seg_files else set()):
            assert value.encode() not in blob, f"{value!r} in {path.relative_to(wd)}"
    p001_seg = next(p for p in seg_files if p.parent.parent.name == "P001")
    assert pydicom.dcmread(p001_seg).ReferencedSeriesSequence[0].SeriesInstanceUID in uids
