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
    studies = pd.DataFrame([(p, t) for p in ("P001", "P002", "P003", "P004", "P005") for t in TRACERS],
                           columns=["patient", "tracer"])  # fmt: skip
    _outputs(results, "P001", None)  # everything
    _outputs(results, "P002", "matching")  # registered, matching not yet written
    _outputs(results, "P003", "detection")
    write_placeholders([results / "P003" / "fdg" / "segmentation.json"], [],
                       [record("segment", "P003", "fdg", "no background region found (bloodpool: ...)")])  # fmt: skip
    (results / "P004" / "fdg").mkdir(parents=True)
    (results / "P004" / "fdg" / "inspect.json").write_text(json.dumps(
        {"ok": False, "tracer": "fdg", "error": "patient P004, fdg: no usable PET series (found: ...)"}))  # fmt: skip
    (results / "P004" / "pentixafor").mkdir(parents=True)
    (results / "P004" / "pentixafor" / "inspect.json").write_text(json.dumps({"ok": True}))
    # P002's matching is being written now (Snakemake's marker)
    marker = tmp_path / ".snakemake" / "incomplete" / base64.urlsafe_b64encode(b"results/P002/lesions/index.tsv").decode()
    marker.parent.mkdir(parents=True)
    marker.write_text("{}")
    rows = {r["patient"]: r for r in cohort_status(studies, results, tmp_path)}
    assert rows["P001"] == {"patient": "P001", "stage": "DICOM-SEG", "state": "done", "reason": "",
                            "open": "results/P001/review.html"}  # fmt: skip
    assert (rows["P002"]["stage"], rows["P002"]["state"]) == ("registration", "running")
    assert (rows["P003"]["stage"], rows["P003"]["state"]) == ("organ map", "excluded")
    assert rows["P003"]["reason"] == "patient P003, fdg: segmentation failed: no background region found (bloodpool: ...)"
    assert rows["P003"]["open"] == "results/logs/segment/P003_fdg.log"
    assert rows["P004"]["state"] == "excluded" and "header check failed: no usable PET series" in rows["P004"]["reason"]
    assert (rows["P005"]["stage"], rows["P005"]["state"]) == ("-", "waiting")
    table = format_table(list(rows.values()))
    assert table.splitlines()[0].split() == ["patient", "stage", "state", "reason", "open"]
    assert table.splitlines()[-1] == "5 patients: 1 done, 2 excluded, 1 running, 1 waiting"
