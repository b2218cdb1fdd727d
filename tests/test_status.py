"""`dualpet status` (issue 24): one row per patient of the sheet, read from results/ while
a run goes on: the stage reached, done / running / excluded / waiting, the reason, the
file to open."""

from __future__ import annotations

import base64
import json

import pandas as pd

from dualpet.failures import record, write_placeholders
from dualpet.status import STAGES, cohort_status, format_table

TRACERS = ("fdg", "pentixafor")


def _outputs(results, patient, upto):
    """Write every output of the stages before ``upto`` (by name) for a patient."""
    for name, outputs, _ in STAGES:
        if name == upto:
            return
        for o in outputs:
            for t in TRACERS if "{t}" in o else (None,):
                path = results / patient / o.format(t=t)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"ok": True}) if path.name == "inspect.json" else "x")


def test_status_of_every_patient(tmp_path):
    results = tmp_path / "results"
    studies = pd.DataFrame(
        [(p, t) for p in ("P001", "P002", "P003", "P004", "P005") for t in TRACERS], columns=["patient", "tracer"]
    )
    _outputs(results, "P001", None)  # everything
    _outputs(results, "P002", "matching")  # registered, matching not yet written
    _outputs(results, "P003", "detection")
    write_placeholders(
        [results / "P003" / "fdg" / "segmentation.json"],
        [],
        [record("segment", "P003", "fdg", "no background region found (bloodpool: ...)")],
    )
    (results / "P004" / "fdg").mkdir(parents=True)
    (results / "P004" / "fdg" / "inspect.json").write_text(
        json.dumps({"ok": False, "tracer": "fdg", "error": "patient P004, fdg: no usable PET series (found: ...)"})
    )
    (results / "P004" / "pentixafor").mkdir(parents=True)
    (results / "P004" / "pentixafor" / "inspect.json").write_text(json.dumps({"ok": True}))
    # P002's matching is being written now (Snakemake's marker)
    marker = (
        tmp_path / ".snakemake" / "incomplete" / base64.urlsafe_b64encode(b"results/P002/lesions/index.tsv").decode()
    )
    marker.parent.mkdir(parents=True)
    marker.write_text("{}")
    rows = {r["patient"]: r for r in cohort_status(studies, results, tmp_path)}
    assert rows["P001"] == {
        "patient": "P001",
        "stage": "DICOM-SEG",
        "state": "done",
        "reason": "",
        "open": "results/P001/review.html",
    }
    assert (rows["P002"]["stage"], rows["P002"]["state"]) == ("registration", "running")
    assert (rows["P003"]["stage"], rows["P003"]["state"]) == ("organ map", "excluded")
    assert (
        rows["P003"]["reason"] == "patient P003, fdg: segmentation failed: no background region found (bloodpool: ...)"
    )
    assert rows["P003"]["open"] == "results/logs/segment/P003_fdg.log"
    assert rows["P004"]["state"] == "excluded" and "header check failed: no usable PET series" in rows["P004"]["reason"]
    assert (rows["P005"]["stage"], rows["P005"]["state"]) == ("-", "waiting")
    table = format_table(list(rows.values()))
    assert table.splitlines()[0].split() == ["patient", "stage", "state", "reason", "open"]
    assert table.splitlines()[-1] == "5 patients: 1 done, 2 excluded, 1 running, 1 waiting"


def test_a_run_followed_patient_by_patient(tmp_path):
    """`make run`'s console: one line per patient as it finishes or is excluded (with the
    reason), a total that never goes backwards, the run's own errors as they come; every
    line of Snakemake's output in the log."""
    import io

    from dualpet.status import follow

    results = tmp_path / "results"
    studies = pd.DataFrame([(p, t) for p in ("P001", "P002") for t in TRACERS], columns=["patient", "tracer"])

    def lines():
        yield "Building DAG of jobs...\n"
        _outputs(results, "P001", None)
        yield "Finished jobid: 7 (Rule: export_seg)\n"
        # the conversion's header check refused the study: its verdict kept, its images placeholders
        (results / "P002" / "fdg").mkdir(parents=True)
        verdict = {"ok": False, "tracer": "fdg", "error": "patient P002, fdg: Units CPS"}
        (results / "P002" / "fdg" / "inspect.json").write_text(json.dumps(verdict))
        write_placeholders(
            [results / "P002" / "fdg" / n for n in ("ct.nii.gz", "pet_suv.nii.gz", "pet.json")],
            [],
            [record("inspect", "P002", "fdg", "Units CPS")],
        )
        yield "Finished jobid: 9 (Rule: convert)\n"
        yield "Error in rule segment:\n"  # a step that failed outright: shown as it comes
        yield "Error in rule check_cohort:\n"  # the verdict on excluded patients: the final line's

    console = io.StringIO()
    excluded = follow(
        lines(), tmp_path / "run.log", studies, results=results, workdir=tmp_path, out=console, every_s=1e9
    )
    out = console.getvalue().splitlines()
    assert out[0] == "[1/2 patients] P001: done (results/P001/review.html)"
    assert (
        out[1]
        == "[2/2 patients] P002: excluded: patient P002, fdg: header check failed: Units CPS (log: results/logs/convert/P002_fdg.log)"
    )
    assert out[2] == "Error in rule segment:" and len(out) == 4
    assert out[3].startswith("[2/2 patients] run ended; excluded: P002 (fix or remove them; `make status` says why)")
    assert excluded == 1
    assert (tmp_path / "run.log").read_text().count("\n") == 5


def test_the_count_includes_patients_settled_earlier_further_down_the_sheet(tmp_path):
    """A patient further down the sheet excluded before one above it finishes: each console
    line counts every patient settled so far (seen live: 1/4, 2/4, then 2/4 again)."""
    import io

    from dualpet.status import follow

    results = tmp_path / "results"
    studies = pd.DataFrame([(p, t) for p in ("P001", "P002", "P003") for t in TRACERS], columns=["patient", "tracer"])

    def lines():
        _outputs(results, "P001", None)
        yield "Finished jobid: 1 (Rule: export_seg)\n"
        write_placeholders(
            [results / "P003" / "fdg" / "inspect.json"], [], [record("inspect", "P003", "fdg", "no PET")]
        )
        yield "Finished jobid: 2 (Rule: convert)\n"
        _outputs(results, "P002", None)
        yield "Finished jobid: 3 (Rule: export_seg)\n"

    console = io.StringIO()
    follow(lines(), tmp_path / "run.log", studies, results=results, workdir=tmp_path, out=console, every_s=1e9)
    counts = [line.split("]")[0] for line in console.getvalue().splitlines()]
    assert counts == ["[1/3 patients", "[2/3 patients", "[3/3 patients", "[3/3 patients"]
