"""The Snakemake workflow end to end on a tiny generated cohort, checked against its truth.

The cohort carries every vendor header variant of `dualpet synth --quirks` (3 patients =
6 studies = 6 variants) and extra NAC, localizer and MIP series in every study folder.

The tests share one working directory and run in file order: dry run on a fresh
directory, full run, audit (nothing left to do), de-identification scan, and finally
adding a patient (which plans only that patient's jobs and the cohort-level ones).
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pydicom
import pytest
from conftest import REPO

from dualpet.io import read_json
from dualpet.review import REVIEW_COLUMNS
from dualpet.synth import generate_cohort

pytestmark = pytest.mark.slow
N = 3


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("wf")
    generate_cohort(wd / "data", n_patients=N, seed=5, size="demo", quirks=True, log=lambda m: None)
    (wd / "config").mkdir()
    (wd / "config" / "config.yaml").write_text(
        "studies: data/studies.tsv\nclinical: data/clinical.tsv\nreference_tracer: fdg\nindex_tracer: pentixafor\n"
    )
    return wd


def snakemake(workdir, env, *args):
    cmd = [
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--cores",
        "2",
        "--workflow-profile",
        str(REPO / "workflow" / "profiles" / "default"),
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


def planned(proc):
    """(rule, patient) pairs of the jobs a dry run plans."""
    jobs = []
    for block in re.split(r"\n(?=\s*\S*(?:rule|checkpoint) \w+:)", proc.stdout):
        m = re.match(r"\s*\S*(?:rule|checkpoint) (\w+):", block)
        if m:
            w = re.search(r"wildcards: .*?patient=(\w+)", block)
            jobs.append((m.group(1), w.group(1) if w else None))
    return jobs


def test_dry_run_lists_jobs_and_writes_nothing(workdir, tool_env):
    proc = snakemake(workdir, tool_env, "-n")
    assert proc.returncode == 0, proc.stderr
    jobs = planned(proc)
    assert sum(r == "convert" for r, _ in jobs) == 2 * N
    assert sum(r == "register" for r, _ in jobs) == N
    assert {"cohort", "stats"} <= {r for r, _ in jobs}
    assert not (workdir / "results").exists()


def test_end_to_end_against_truth(workdir, tool_env):
    proc = snakemake(workdir, tool_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = workdir / "results"
    lesions = pd.read_csv(res / "cohort" / "lesions.tsv", sep="\t", keep_default_na=False, na_values=[""])
    patients = pd.read_csv(res / "cohort" / "patients.tsv", sep="\t")
    contract = ["patient", "lesion", "x_mm", "y_mm", "z_mm", "region"] + [
        f"{t}_{m}"
        for t in ("fdg", "pentixafor")
        for m in ("detected", "suvmax", "suvmean", "suvpeak", "tbr", "tbr_mean", "mtv_ml", "tlg")
    ]
    assert list(lesions.columns[: len(contract)]) == contract
    for t in ("fdg", "pentixafor"):
        for c in ("positive", "lesions", "background_suvmean", "background_source"):
            assert f"{t}_{c}" in patients.columns
    assert "cxcr4_ihc" in patients.columns and len(patients) == N
    assert (patients["fdg_pet_ct_registered"] == 0).all()  # synthetic studies share a frame

    # every union lesion is measured on both tracers (undetected ones too)
    assert lesions[["fdg_suvmax", "pentixafor_suvmax", "fdg_tbr", "pentixafor_tbr"]].notna().all().all()

    found = detectable = 0
    for pid in patients["patient"]:
        truth = read_json(workdir / "data" / "truth" / f"{pid}.json")
        mine = lesions[(lesions.patient == pid) & (lesions.fdg_detected == 1)][["x_mm", "y_mm", "z_mm"]].to_numpy()
        for les in truth["lesions"]:
            if les["detectable"]["fdg"]:
                detectable += 1
                d = np.linalg.norm(mine - np.array(les["center_lps"]["fdg"]), axis=1) if len(mine) else [np.inf]
                found += bool(np.min(d) <= 10.0)  # issue #2: at the true position within 10 mm
        # registration: the transform maps the reference lesion centres onto the index ones
        # viewing volumes: the index CT on the reference CT grid (whole HU), the index PET on
        # the reference PET grid; and the QC picture
        import nibabel as nib

        from dualpet.registration import load_transform, transform_points

        reg = res / pid / "registration"
        for name, grid, dtype in (
            ("pentixafor_ct_in_reference.nii.gz", "ct.nii.gz", np.int16),
            ("pentixafor_pet_suv_in_reference.nii.gz", "pet_suv.nii.gz", np.float32),
        ):
            img, ref = nib.load(reg / name), nib.load(res / pid / "fdg" / grid)
            assert img.shape == ref.shape and np.allclose(img.affine, ref.affine, atol=1e-3)
            assert img.get_data_dtype() == dtype
        assert (reg / "qc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        for tracer in ("fdg", "pentixafor"):
            assert (res / pid / tracer / "background.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        tfm = load_transform(res / pid / "registration" / "transform.tfm")
        a = np.array([les["center_lps"]["fdg"] for les in truth["lesions"]])
        b = np.array([les["center_lps"]["pentixafor"] for les in truth["lesions"]])
        assert np.linalg.norm(transform_points(tfm, a) - b, axis=1).max() < 1.0  # TRE < 1 mm
    assert detectable > 0 and found / detectable >= 0.8

    # voi.nii.gz: label k = lesion Lk, the very VOI each lesion job measured (its volume);
    # lesions_seg.dcm: the same VOIs as DICOM-SEG segments labelled Lk
    import highdicom as hd

    from dualpet.interchange import read_voi, voi_label

    for pid in patients["patient"]:
        rows = lesions[lesions.patient == pid]
        for t in ("fdg", "pentixafor"):
            voi, aff = read_voi(res / pid / t / "voi.nii.gz")
            vox_ml = abs(np.linalg.det(aff[:3, :3])) / 1000.0
            inside = rows[rows[f"{t}_voi_source"] != "outside_field_of_view"]
            assert {int(v) for v in np.unique(voi) if v} == {voi_label(les) for les in inside.lesion}
            for _, row in inside.iterrows():  # same voxel count (lesions.tsv rounds to 1e-4 mL; a voxel is 0.064 mL)
                assert (voi == voi_label(row.lesion)).sum() * vox_ml == pytest.approx(row[f"{t}_voi_ml"], abs=1e-3)
            seg = hd.seg.segread(str(res / pid / t / "lesions_seg.dcm"))
            if t == "fdg":  # the review page: self-contained, the MIPs, one picture per lesion and per candidate
                page = (res / pid / "review.html").read_text()
                n_rejected = sum(
                    len(read_json(res / pid / tr / "segmentation.json")["detection"]["rejected"])
                    for tr in ("fdg", "pentixafor")
                )
                assert page.count("<img ") == 1 + len(rows) + n_rejected
                assert "src='http" not in page and "<script" not in page
                assert all(f"<b>{les}</b>" in page for les in rows.lesion)
                assert page.count("data:image/png;base64,") == 1  # the MIPs
                assert page.count("data:image/jpeg;base64,") == len(rows) + n_rejected
            names = sorted(str(seg.get_segment_description(n).segment_label) for n in seg.get_segment_numbers())
            assert names == (sorted(inside.lesion) or ["no lesions"])

    summary = read_json(res / "cohort" / "summary.json")
    assert summary["n_patients"] == N and summary["n_lesions"] == len(lesions)
    assert summary["primary"]["result"]["test"].startswith("Random-intercept model of ln")
    assert set(summary["metrics"]["suvmax"]["sets"]) == {"both", "reference", "union"}
    assert (res / "cohort" / "summary.md").read_text().startswith("#")
    # the report's pages: statistics and tables as self-contained HTML, the cohort figures
    # (PNG and SVG), one MIP panel per patient
    for page in ("summary.html", "tables.html"):
        text = (res / "cohort" / page).read_text()
        assert "<table" in text and "<script" not in text and "http" not in text.replace("http-equiv", "")
        assert not re.search(r">\s*(None|nan|NaN)\s*<", text), page  # a missing value prints empty
    for name in ("paired", "patient_ratios", "bland_altman", "detection_by_region"):
        assert (res / "cohort" / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (res / "cohort" / "figures" / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    assert all((res / pid / "mip.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for pid in patients["patient"])


def test_segment_run_alone_detects_what_the_workflow_detects(workdir, tool_env, tmp_path):
    """Issue 25: `dualpet segment` without any setting (each takes the config schema's
    default) writes the same lesion labels and segmentation record as the workflow's
    segment step with the default config."""
    import nibabel as nib

    for tracer in ("fdg", "pentixafor"):
        study = workdir / "results" / "P001" / tracer
        cmd = [sys.executable, "-m", "dualpet", "segment", "--patient", "P001", "--tracer", tracer]
        cmd += ["--ct", str(study / "ct.nii.gz"), "--pet", str(study / "pet_suv.nii.gz")]
        cmd += ["--anatomy", str(study / "anatomy.nii.gz")]
        cmd += ["--labels", str(tmp_path / f"{tracer}.nii.gz"), "--json", str(tmp_path / f"{tracer}.json")]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=tool_env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        alone = np.asarray(nib.load(tmp_path / f"{tracer}.nii.gz").dataobj)
        assert np.array_equal(alone, np.asarray(nib.load(study / "lesions.nii.gz").dataobj)), tracer
        assert read_json(tmp_path / f"{tracer}.json") == read_json(study / "segmentation.json"), tracer


def test_nothing_to_do_after_run(workdir, tool_env):
    proc = snakemake(workdir, tool_env, "-n")
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr
    # the audit agrees: no job planned, no output made by other code, parameters or input,
    # and the rule graph has the edges the job DAG alone lacks
    audit = subprocess.run(
        [
            sys.executable,
            "-m",
            "dualpet.audit",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--profile",
            str(REPO / "workflow" / "profiles" / "default"),
            "--outdir",
            "audit",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=tool_env,
        timeout=300,
    )
    assert audit.returncode == 0, audit.stderr[-2000:]
    plan = pd.read_csv(workdir / "audit" / "plan.tsv", sep="\t")
    changes = pd.read_csv(workdir / "audit" / "changes.tsv", sep="\t")
    assert len(plan) == 0 and len(changes) == 0, (plan, changes)
    dot = (workdir / "audit" / "rulegraph.dot").read_text()
    names = dict(re.findall(r'(\d+) \[label="(\w+)"\]', dot))
    edges = {(names[a], names[b]) for a, b in re.findall(r"(\d+) -> (\d+)", dot)}
    assert {("convert", "anatomy"), ("match", "lesion_metrics"), ("lesion_metrics", "patient_table")} <= edges


def _identifiers(workdir):
    out = set()
    for p in (workdir / "data" / "truth").glob("*.json"):
        ident = read_json(p)["identifiers"]
        for key, value in ident.items():
            values = value if isinstance(value, list) else [value]
            for v in values:
                out.add(v)
                if key.endswith("Name"):
                    out |= {part for part in v.split("^") if len(part) >= 4}
    return out


def _contents(path):
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.suffix == ".npz":
        with zipfile.ZipFile(path) as z:
            return b"".join(z.read(n) for n in z.namelist())
    return data


def test_no_identifying_data_in_outputs(workdir):
    idents = _identifiers(workdir)
    assert any("^" in i for i in idents) and len(idents) > 5
    files = [p for p in (workdir / "results").rglob("*") if p.is_file()]
    assert len(files) > 30
    for path in files:
        blob = _contents(path)
        for ident in idents:
            assert ident.encode() not in blob, f"{ident!r} found in {path}"


def test_nifti_headers_carry_nothing_but_geometry(workdir):
    import nibabel as nib

    images = sorted((workdir / "results").rglob("*.nii.gz"))
    assert len(images) >= 4 * N
    for path in images:
        img = nib.load(path)
        h = img.header
        for field in ("descrip", "aux_file", "intent_name", "db_name"):
            assert bytes(h[field]).strip(b"\x00 ") == b"", (path, field)
        assert len(h.extensions) == 0, path
        assert h["sform_code"] == 1 and h["qform_code"] == 1


def test_adding_a_patient_plans_only_its_jobs(workdir, tool_env):
    generate_cohort(workdir / "data", n_patients=N + 1, seed=5, size="demo", quirks=True, log=lambda m: None)
    proc = snakemake(workdir, tool_env, "-n")
    assert proc.returncode == 0, proc.stderr
    jobs = planned(proc)
    new = f"P{N + 1:03d}"
    assert {p for _, p in jobs if p is not None} == {new}
    # cohort-level: `cohort` is planned; `stats` joins once the new patient's match
    # checkpoint has run and the DAG is re-evaluated (the next test sees its new summary)
    assert "cohort" in {r for r, p in jobs if p is None}


def test_refused_study_is_excluded_and_listed(workdir, tool_env):
    """A study the reader refuses fails its own jobs only; the cohort is still built and
    lists the patient as excluded, naming the series attribute at fault."""
    new = f"P{N + 1:03d}"
    for p in (workdir / "data" / "dicom" / new / "pentixafor" / "PT_3").glob("*.dcm"):
        ds = pydicom.dcmread(p)
        ds.Units = "CPS"
        ds.save_as(p)
    proc = snakemake(workdir, tool_env)  # the default profile keeps going
    assert proc.returncode != 0  # something failed, and says so
    res = workdir / "results"
    log = (res / "logs" / "convert" / f"{new}_pentixafor.log").read_text().strip().splitlines()
    assert len(log) == 1 and "Units" in log[0] and new in log[0]
    patients = pd.read_csv(res / "cohort" / "patients.tsv", sep="\t", keep_default_na=False)
    row = patients[patients.patient == new].iloc[0]
    assert row["status"] == "excluded" and "Units" in row["excluded_reason"]
    assert set(patients[patients.status == "included"].patient) == {f"P{i:03d}" for i in range(1, N + 1)}
    assert (res / new / "fdg" / "pet_suv.nii.gz").exists()  # its other study still converted
    summary = read_json(res / "cohort" / "summary.json")
    assert summary["n_patients"] == N and new in json.dumps(summary["excluded_patients"])


def test_reader_seeds_reach_only_their_own_study(tmp_path, tool_env):
    """detection.method 'seeds': each segment job gets its own study's seeds as a parameter
    (so a new seed reruns one study), and a config without the seed sheet is refused."""
    (tmp_path / "studies.tsv").write_text(
        "patient\ttracer\tdicom_dir\n" + "".join(f"{p}\t{t}\td/{p}/{t}\n" for p in ("A1", "A2") for t in ("fdg", "ga"))
    )
    for p in ("A1", "A2"):
        for t in ("fdg", "ga"):
            (tmp_path / "d" / p / t).mkdir(parents=True)
    (tmp_path / "seeds.tsv").write_text("patient\ttracer\tx\ty\tz\nA1\tga\t1.5\t-2\t300\nA1\tga\t10\t20\t-30.25\n")
    base = "studies: studies.tsv\nreference_tracer: fdg\nindex_tracer: ga\n"
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(base + "detection:\n  method: seeds\n  seeds: seeds.tsv\n")
    proc = snakemake(
        tmp_path, tool_env, "-n", "--forceall", "results/A1/ga/segmentation.json", "results/A2/ga/segmentation.json"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    cmds = [line for line in proc.stdout.splitlines() if "-m dualpet segment" in line]
    assert len(cmds) == 2
    a1 = next(c for c in cmds if "--patient=A1" in c)
    a2 = next(c for c in cmds if "--patient=A2" in c)
    assert "--seeds='1.5,-2,300;10,20,-30.25'" in a1 and "--seeds= " in a2
    (tmp_path / "config" / "config.yaml").write_text(base + "detection:\n  method: seeds\n")
    proc = snakemake(tmp_path, tool_env, "-n")
    assert proc.returncode != 0 and "detection.seeds" in proc.stderr + proc.stdout
    (tmp_path / "config" / "config.yaml").write_text(base + "detection:\n  method: masks\n")
    proc = snakemake(tmp_path, tool_env, "-n")
    assert proc.returncode != 0 and "lesion_mask" in proc.stderr + proc.stdout
    (tmp_path / "seeds.tsv").write_text("patient\ttracer\tx\ty\tz\nA9\tga\t1\t2\t3\n")  # a typo in the patient ID
    (tmp_path / "config" / "config.yaml").write_text(base + "detection:\n  method: seeds\n  seeds: seeds.tsv\n")
    proc = snakemake(tmp_path, tool_env, "-n")
    assert proc.returncode != 0 and "not in the studies sheet" in proc.stderr + proc.stdout


def test_failure_after_inspection_excludes_only_that_patient(workdir, tool_env):
    """A study that passes inspection and fails later (here: a background VOI outside the
    PET, given in the sheet) excludes its patient with a one-line reason; the cohort tables
    and statistics are written for the others; the run exits non-zero naming the patient.
    Fixing the sheet reruns that study and the cohort jobs and includes the patient again."""
    sheet = workdir / "data" / "studies.tsv"
    original = sheet.read_text()
    rows = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
    rows["background_lps"] = ""
    rows.loc[(rows.patient == "P002") & (rows.tracer == "pentixafor"), "background_lps"] = "0,0,9000"
    rows.to_csv(sheet, sep="\t", index=False)
    try:
        proc = snakemake(workdir, tool_env)
        assert proc.returncode != 0
        assert (
            "P002: patient P002, pentixafor: segmentation failed" in proc.stdout + proc.stderr
        )  # the final check names it
        res = workdir / "results"
        patients = pd.read_csv(res / "cohort" / "patients.tsv", sep="\t", keep_default_na=False).set_index("patient")
        assert patients.loc["P002", "status"] == "excluded"
        assert patients.loc["P002", "excluded_reason"] == (
            "patient P002, pentixafor: segmentation failed: background VOI at [0.0, 0.0, 9000.0] lies outside the PET"
        )
        assert patients.loc["P001", "status"] == "included" and patients.loc["P003", "status"] == "included"
        lesions = pd.read_csv(res / "cohort" / "lesions.tsv", sep="\t")
        assert "P002" not in set(lesions.patient) and {"P001", "P003"} <= set(lesions.patient)
        summary = read_json(res / "cohort" / "summary.json")
        assert summary["n_patients"] == N - 1
        assert "P002" in (res / "cohort" / "summary.md").read_text()
        # the failed step's outputs are placeholders naming the reason; later steps did not run
        from dualpet.failures import read_failures

        assert read_failures(res / "P002" / "pentixafor" / "segmentation.json")[0]["step"] == "segment"
        assert read_failures(res / "P002" / "lesions" / "index.tsv")[0]["step"] == "segment"
        assert read_failures(res / "P002" / "pentixafor" / "background.png")[0]["step"] == "segment"
        assert read_failures(res / "P002" / "fdg" / "segmentation.json") is None  # its other study is fine
        log = (res / "logs" / "segment" / "P002_pentixafor.log").read_text().strip().splitlines()
        assert len(log) == 1 and "outside the PET" in log[0]
    finally:
        sheet.write_text(original)
    jobs = planned(snakemake(workdir, tool_env, "-n"))
    assert {p for _, p in jobs if p is not None} == {"P002"}  # only the fixed patient's jobs rerun
    assert {r for r, p in jobs if p == "P002"} >= {"segment", "match", "patient_table"}
    assert ("convert", "P002") not in jobs
    proc = snakemake(workdir, tool_env)
    patients = pd.read_csv(workdir / "results" / "cohort" / "patients.tsv", sep="\t", keep_default_na=False)
    assert patients.set_index("patient").loc["P002", "status"] == "included"
    assert proc.returncode != 0  # P004 (refused at inspection) is still excluded


def test_fixing_a_header_in_place_reruns_that_study(workdir, tool_env):
    """Editing DICOM files in place (the refused study's Units fixed) reruns that study and
    its patient's and the cohort's jobs, nothing else; the patient is included again."""
    new = f"P{N + 1:03d}"
    for p in (workdir / "data" / "dicom" / new / "pentixafor" / "PT_3").glob("*.dcm"):
        ds = pydicom.dcmread(p)
        ds.Units = "BQML"
        ds.save_as(p)
    jobs = planned(snakemake(workdir, tool_env, "-n"))
    assert {p for _, p in jobs if p is not None} == {new}
    assert ("convert", new) in jobs
    assert sum(r == "convert" for r, _ in jobs) == 1  # the edited study only
    proc = snakemake(workdir, tool_env)
    assert proc.returncode == 0, proc.stderr[-2000:]  # every patient included: the run is complete
    patients = pd.read_csv(workdir / "results" / "cohort" / "patients.tsv", sep="\t", keep_default_na=False)
    assert set(patients.status) == {"included"} and (workdir / "results" / "cohort" / "complete.json").exists()


def test_a_missing_study_folder_is_refused_before_any_job(workdir, tool_env):
    """Issue 24: a study folder that is not there (a typo, a moved folder) is a sheet
    mistake: the dry run and the run refuse it at planning with one line naming the sheet's
    line and column and the fix, never the path (folder names can identify patients), no
    traceback, and nothing runs. Put back, nothing needs redoing."""
    folder = workdir / "data" / "dicom" / "P003" / "fdg"
    folder.rename(folder.with_name("moved"))
    try:
        for args in (("-n",), ()):
            proc = snakemake(workdir, tool_env, *args)
            out = proc.stdout + proc.stderr
            assert proc.returncode != 0
            assert re.search(
                r"studies sheet \S+, line \d+, column dicom_dir: the folder does not exist; correct the path", out
            )
            assert "Traceback" not in out and "dicom/P003" not in out and "moved" not in out
            assert "Finished jobid" not in out and "steps (" not in out
    finally:
        folder.with_name("moved").rename(folder)
    assert snakemake(workdir, tool_env).returncode == 0


def test_reader_decisions_rerun_only_their_patient(workdir, tool_env):
    """Round trip: a reader copies the review page's header line and the ready line under
    one automatic FDG lesion of P001 into the sheet, sets it to reject with name and note,
    and adds one lesion by coordinates. Only P001's jobs (its FDG segmentation and what
    follows) and the cohort jobs rerun; lesions.tsv no longer has the rejected lesion on
    FDG and shows the added one as reader-added, and a rejected candidate accepted with the
    page's own line becomes a reader-accepted lesion; the summary counts the decisions."""
    import html

    res = workdir / "results"
    before = pd.read_csv(res / "P001" / "lesions.tsv", sep="\t", keep_default_na=False, na_values=[""])
    det = before[before.fdg_detected == 1]
    assert len(det) and (det.fdg_origin == "automatic").all()
    target = det.iloc[0]
    text = (res / "P001" / "review.html").read_text()
    assert not re.search(r"\b(nan|None)\b", re.sub(r"src='[^']*'", "", text))  # no missing value printed as such
    page = [html.unescape(line) for line in re.findall(r"<pre>(.*?)</pre>", text)]
    header = page[0].split("\t")
    assert header == list(REVIEW_COLUMNS)  # the README's order
    line = next(p.split("\t") for p in page if p.startswith("P001\tfdg\t") and p.endswith(f"\t{target.lesion}"))
    row = dict(zip(header, line))
    assert row["decision"] == "reject"
    row.update(reader="dr_a", note="physiological")
    add_at = read_json(res / "P001" / "fdg" / "segmentation.json")["background"]["centre_lps"]  # aorta: no lesion there
    added_row = {
        "patient": "P001",
        "tracer": "fdg",
        "x": add_at[0],
        "y": add_at[1],
        "z": add_at[2],
        "decision": "add",
        "reader": "dr_a",
        "note": "missed",
    }
    # a rejected candidate restored with the line the page gives it (well away from the others)
    taken = [*det[["x_mm", "y_mm", "z_mm"]].to_numpy(float), np.asarray(add_at, float)]
    accept = next(
        dict(zip(header, p.split("\t")))
        for p in page
        if p.startswith("P001\tfdg\t")
        and "\taccept\t" in p
        and min(np.linalg.norm(np.array([float(v) for v in p.split("\t")[2:5]]) - q) for q in taken) > 30.0
    )
    accept.update(reader="dr_b", note="looks real")
    (workdir / "review.tsv").write_text(
        "\t".join(header)
        + "\n"
        + "\t".join(str(row[c]) for c in header)
        + "\n"
        + "\t".join(str(added_row.get(c, "")) for c in header)
        + "\n"
        + "\t".join(str(accept.get(c, "")) for c in header)
        + "\n"
    )
    config = workdir / "config" / "config.yaml"
    config.write_text(config.read_text() + "review: review.tsv\n")
    jobs = planned(snakemake(workdir, tool_env, "-n"))
    assert {p for _, p in jobs if p is not None} == {"P001"}
    assert [r for r, p in jobs if r == "segment"] == ["segment"]  # its FDG study only
    assert not {r for r, _ in jobs} & {"convert", "register", "anatomy"}
    proc = snakemake(workdir, tool_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = pd.read_csv(res / "P001" / "lesions.tsv", sep="\t", keep_default_na=False, na_values=[""])
    fdg = after[after.fdg_detected == 1]
    xyz = fdg[["x_mm", "y_mm", "z_mm"]].to_numpy()
    gone = np.linalg.norm(xyz - target[["x_mm", "y_mm", "z_mm"]].to_numpy(float), axis=1)
    assert len(fdg) == len(det) + 1 and gone.min() > 1.0  # one out, two in
    added = fdg[fdg.fdg_origin == "reader-added"]
    assert len(added) == 1
    assert np.linalg.norm(added[["x_mm", "y_mm", "z_mm"]].to_numpy(float)[0] - add_at) <= 10.0
    restored = fdg[fdg.fdg_origin == "reader-accepted"]
    assert len(restored) == 1  # VOI centroid vs the candidate's peak: within the review tolerance
    assert (
        np.linalg.norm(
            restored[["x_mm", "y_mm", "z_mm"]].to_numpy(float)[0] - np.array([float(accept[a]) for a in "xyz"])
        )
        <= 10.0
    )
    review = read_json(res / "P001" / "fdg" / "segmentation.json")["detection"]["review"]
    assert [r["decision"] for r in review] == ["reject", "add", "accept"]
    assert not any(r["applied"].startswith("not applied") for r in review)
    summary = read_json(res / "cohort" / "summary.json")["review"]
    assert summary["decisions"] == 3 and summary["reader_added"] == 1 and summary["reader_accepted"] == 1
    assert summary["patients_reviewed"] == 1


def test_a_study_without_background_keeps_its_patient_and_loses_only_tbr(workdir, tool_env):
    """Issue 23: a study whose organ map has neither aorta nor liver (an image cropped around
    the tumour; here the sheet's organ_mask is empty) keeps its patient included with every
    lesion metric but TBR; patients.tsv and the summary's QC section say why. Only that
    study's jobs and the cohort's rerun."""
    import nibabel as nib

    res = workdir / "results"
    before = pd.read_csv(res / "P002" / "lesions.tsv", sep="\t")
    ct = nib.load(res / "P002" / "fdg" / "ct.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros(ct.shape, np.uint8), ct.affine), str(workdir / "data" / "no_organs.nii.gz"))
    sheet = workdir / "data" / "studies.tsv"
    original = sheet.read_text()
    rows = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
    rows["organ_mask"] = ""
    rows.loc[(rows.patient == "P002") & (rows.tracer == "fdg"), "organ_mask"] = "no_organs.nii.gz"
    rows.to_csv(sheet, sep="\t", index=False)
    try:
        jobs = planned(snakemake(workdir, tool_env, "-n"))
        assert {p for _, p in jobs if p is not None} == {"P002"} and [r for r, _ in jobs].count("anatomy") == 1
        proc = snakemake(workdir, tool_env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        patients = pd.read_csv(res / "cohort" / "patients.tsv", sep="\t", keep_default_na=False).set_index("patient")
        assert (patients["status"] == "included").all()
        assert (
            patients.loc["P002", "fdg_background_suvmean"] == "" and patients.loc["P002", "fdg_background_source"] == ""
        )
        why = patients.loc["P002", "fdg_background_fallback"]
        assert why.startswith("no background region found (bloodpool:") and why.endswith("TBR not computed")
        lesions = pd.read_csv(res / "P002" / "lesions.tsv", sep="\t")
        fdg = lesions[lesions.fdg_voi_source != "outside_field_of_view"]
        assert len(fdg) and fdg.fdg_suvmax.notna().all() and fdg.fdg_tbr.isna().all()
        assert fdg[fdg.fdg_detected == 1].fdg_mtv_ml.notna().all()  # (no MTV where only carried over)
        assert lesions.pentixafor_tbr.notna().any()  # the other study keeps its background
        assert len(before) > 0
        qc = (res / "cohort" / "summary.md").read_text().split("## Quality control", 1)[1].split("\n## ", 1)[0]
        assert "| P002 | fdg | – | none found | no background region found (bloodpool:" in qc
    finally:
        sheet.write_text(original)


def test_jobs_use_the_interpreter_snakemake_was_started_with(cohort_dir, tmp_path):
    """`.venv/bin/snakemake` started by path, venv not activated (its bin not on PATH, no
    PYTHONPATH): jobs still run with the venv's interpreter, not whatever `python` is first."""
    import os
    import sys
    from pathlib import Path

    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = (
        os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin) or "/usr/bin:/bin"
    )
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(f"studies: {cohort_dir / 'studies.tsv'}\n")
    proc = subprocess.run(
        [
            os.path.join(venv_bin, "snakemake"),
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(tmp_path),
            "--cores",
            "1",
            "results/P001/fdg/inspect.json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_json(tmp_path / "results" / "P001" / "fdg" / "inspect.json")["ok"]
