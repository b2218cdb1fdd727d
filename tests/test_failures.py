"""Failure isolation (dualpet.failures): placeholders carry the reason downstream; machine
failures are not isolated; the cohort lists the patient as excluded."""

from __future__ import annotations

import errno
import json

import pandas as pd

from dualpet.cli import main
from dualpet.cohort import check_cohort, merge_cohort
from dualpet.failures import MAGIC, read_failures, reason, record, write_placeholders


def test_placeholders_round_trip(tmp_path):
    rec = record("segment", "P007", "fdg", "patient P007, fdg: no blood pool found\nsecond line")
    assert rec == {"patient": "P007", "tracer": "fdg", "step": "segment", "error": "no blood pool found"}
    assert reason(rec) == "patient P007, fdg: segmentation failed: no blood pool found"
    files = [tmp_path / "a.nii.gz", tmp_path / "b.json", tmp_path / "c.png"]
    (tmp_path / "crops").mkdir()
    (tmp_path / "crops" / "L01.npz").write_bytes(b"old")
    write_placeholders(files, [tmp_path / "crops"], [rec])
    for f in files:
        assert read_failures(f) == [rec], f
    assert files[0].read_bytes().startswith(MAGIC)
    assert files[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # a real picture saying why
    assert list((tmp_path / "crops").iterdir()) == []
    real = tmp_path / "real.json"
    real.write_text("{}")
    assert read_failures(real) is None and read_failures(tmp_path / "missing.tsv") is None


def test_an_html_placeholder_is_a_page_saying_why_with_every_reason_as_text(tmp_path):
    """Issue 23 (campaign): an excluded patient's review.html was raw JSON served as HTML,
    so a SeriesDescription in its reason became markup. It is now a page stating the
    reason as text, and still carries the records."""
    rec = record("convert", "P001", "fdg", "no usable PET series (found: series 3 '<img src=x onerror=alert(1)>')")
    page = tmp_path / "review.html"
    write_placeholders([page], [], [rec])
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "Not produced: the patient is excluded" in text
    assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text and "<script" not in text
    assert read_failures(page) == [rec]
    real = tmp_path / "real.html"
    real.write_text("<!DOCTYPE html><html><body><pre>x</pre></body></html>")
    assert read_failures(real) is None


def _register_args(tmp_path, fixed):
    return [
        "register",
        "--fixed",
        str(fixed),
        "--moving",
        str(fixed),
        "--tfm",
        str(tmp_path / "t.tfm"),
        "--qc",
        str(tmp_path / "qc.json"),
        "--reference-pet",
        str(fixed),
        "--index-pet",
        str(fixed),
        "--ct-out",
        str(tmp_path / "ct_in_reference.nii.gz"),
        "--pet-out",
        str(tmp_path / "pet_in_reference.nii.gz"),
        "--png",
        str(tmp_path / "qc.png"),
        "--patient",
        "P009",
        "--isolate-failures",
    ]


def test_a_failing_step_writes_placeholders_and_exits_0(tmp_path, capsys):
    bad = tmp_path / "ct.nii.gz"
    bad.write_bytes(b"not a NIfTI")
    assert main(_register_args(tmp_path, bad)) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "patient P009: registration failed" in err[0]
    recs = read_failures(tmp_path / "t.tfm")
    assert recs == read_failures(tmp_path / "qc.json") and recs[0]["step"] == "register"
    assert recs == read_failures(tmp_path / "qc.png") == read_failures(tmp_path / "ct_in_reference.nii.gz")
    # without --isolate-failures the same step fails as before
    assert main(_register_args(tmp_path, bad)[:-1]) != 0


def test_a_step_after_a_failure_passes_the_reason_on(tmp_path, capsys):
    upstream = record("convert", "P009", "fdg", "cannot decode pixel data of file x.dcm (attribute PixelData)")
    ct = tmp_path / "ct.nii.gz"
    write_placeholders([ct], [], [upstream])
    assert main(_register_args(tmp_path, ct)) == 0
    assert read_failures(tmp_path / "t.tfm") == [upstream]
    assert "not run, the patient is excluded" in capsys.readouterr().err


def test_machine_failures_are_not_isolated(tmp_path, monkeypatch):
    """Disk full or out of memory is the machine's failure: the job fails and reruns next time."""
    import dualpet.registration as reg

    ct = tmp_path / "ct.nii.gz"
    ct.write_bytes(b"x")
    for exc in (OSError(errno.ENOSPC, "No space left on device"), MemoryError()):

        def boom(*a, _exc=exc, **k):
            raise _exc

        monkeypatch.setattr(reg, "read_ct", lambda path: None)
        monkeypatch.setattr(reg, "register_ct", boom)
        assert main(_register_args(tmp_path, ct)) == 1
        assert not (tmp_path / "t.tfm").exists()


def test_cohort_lists_failed_patients_and_the_check_fails(tmp_path, capsys):
    tracers = ("fdg", "ga")
    ok = tmp_path / "P1"
    ok.mkdir()
    (ok / "patient.json").write_text(json.dumps({"patient": "P1", "fdg_positive": 1, "ga_positive": 0}))
    pd.DataFrame(
        [
            {
                "patient": "P1",
                "lesion": "L01",
                "x_mm": 1,
                "y_mm": 2,
                "z_mm": 3,
                "region": "liver",
                "fdg_detected": 1,
                "ga_detected": 0,
            }
        ]
    ).to_csv(ok / "lesions.tsv", sep="\t", index=False)
    bad = tmp_path / "P2"
    bad.mkdir()
    recs = [record("segment", "P2", "ga", "no blood pool"), record("segment", "P2", "fdg", "no blood pool")]
    write_placeholders([bad / "patient.json", bad / "lesions.tsv"], [], recs)
    views = tmp_path / "P1_qc.png"  # P1's registration picture is a placeholder although its table was written
    write_placeholders([views], [], [record("register", "P1", None, "ValueError: x")])
    lesions, patients = merge_cohort(
        [ok / "lesions.tsv", bad / "lesions.tsv"],
        [ok / "patient.json", bad / "patient.json"],
        tracers,
        tmp_path / "l.tsv",
        tmp_path / "p.tsv",
        other_outputs=[views],
    )
    rows = patients.set_index("patient")
    assert rows.loc["P2", "status"] == "excluded"
    assert rows.loc["P2", "excluded_reason"] == (
        "patient P2, ga: segmentation failed: no blood pool | patient P2, fdg: segmentation failed: no blood pool"
    )
    assert rows.loc["P1", "status"] == "excluded" and "registration failed" in rows.loc["P1", "excluded_reason"]
    assert len(lesions) == 0  # excluded patients' lesions are left out
    assert check_cohort(tmp_path / "p.tsv", tmp_path / "done.json") == 1
    assert "P2: patient P2, ga: segmentation failed" in capsys.readouterr().err
    assert not (tmp_path / "done.json").exists()


def test_a_killed_writes_temporary_goes_with_the_next_write(tmp_path):
    """kill -9 during a write leaves the temporary beside the output (the rename never came):
    the job's next run, writing the same output, removes it; other files stay."""
    from dualpet.io import atomic_path

    out = tmp_path / "pentixafor_ct_in_reference.nii.gz"
    left = tmp_path / ".pentixafor_ct_in_reference.7r0184x8.nii.gz"  # as mkstemp names it
    others = [
        tmp_path / ".pentixafor_ct_in_reference.7r0184x8.tsv",  # another output's suffix
        tmp_path / ".pentixafor_pet_suv_in_reference.7r0184x8.nii.gz",  # another output
        tmp_path / ".pentixafor_ct_in_reference.notmkstemp.nii.gz",
        tmp_path / "pentixafor_ct_in_reference.7r0184x8.nii.gz",
    ]
    for f in [left, *others]:
        f.write_bytes(b"\x1f\x8b partial")
    with atomic_path(out) as tmp:
        tmp.write_bytes(b"complete")
    assert out.read_bytes() == b"complete" and not left.exists()
    assert all(f.exists() for f in others)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, *(f.name for f in others)])


def _convert_args(tmp_path):
    out = {name: tmp_path / name for name in ("inspect.json", "ct.nii.gz", "pet_suv.nii.gz", "pet.json")}
    args = ["convert", str(tmp_path / "dicom"), "--patient", "P009", "--tracer", "fdg", "--isolate-failures"]
    for flag, name in zip(("--inspect", "--ct", "--pet", "--json"), out):
        args += [flag, str(out[name])]
    return args, out


def test_the_header_checks_verdict_is_kept_when_the_conversion_fails_after_it(tmp_path, monkeypatch):
    """The conversion step writes the header check's verdict first: a study that passes it
    and fails later keeps its real verdict (ok), its images become placeholders naming the
    conversion; a verdict left by an earlier run is never kept for a run that wrote none."""
    import dualpet.convert as conv
    from dualpet.errors import DualpetInputError
    from dualpet.io import write_json

    def passes(folder, *, out_json, keep_choice, **kw):
        verdict = {"patient": "P009", "tracer": "fdg", "ok": True}
        write_json(out_json, verdict)
        return verdict, None

    def fails(*a, **k):
        raise DualpetInputError("patient P009, fdg: PET series 3: RescaleSlope (0028,1053) is 0")

    monkeypatch.setattr(conv, "inspect_study", passes)
    monkeypatch.setattr(conv, "convert_study", fails)
    args, out = _convert_args(tmp_path)
    assert main(args) == 0
    assert json.loads(out["inspect.json"].read_text())["ok"] is True
    for name in ("ct.nii.gz", "pet_suv.nii.gz", "pet.json"):
        assert [r["step"] for r in read_failures(out[name])] == ["convert"], name

    def bug(*a, **k):  # fails before any verdict is written
        raise RuntimeError("a bug")

    write_json(out["inspect.json"], {"ok": True})  # an earlier run's verdict
    monkeypatch.setattr(conv, "inspect_study", bug)
    assert main(args) == 0
    assert read_failures(out["inspect.json"]) == read_failures(out["ct.nii.gz"])
    assert "RuntimeError: a bug" in read_failures(out["inspect.json"])[0]["error"]
