"""Where every patient of the sheet stands: ``dualpet status`` (``make status``).

One row per patient of the studies sheet, read from what the workflow has written under
``results/`` (nothing is run or changed; it works while a run goes on):

- ``stage``: the last step whose outputs are all there, in the workflow's order
  (:data:`STAGES`);
- ``state``: ``done`` (every per-patient output there), ``excluded`` (a step refused the
  patient's data: a placeholder output or a refused header check), ``running`` (Snakemake
  is writing one of its outputs now), ``waiting`` (nothing started) or ``in progress``;
- ``reason``: why it was excluded (the one-line reason the cohort tables give);
- ``open``: the file to look at (the review page, or the failed step's log).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

#: Per-patient stages in workflow order: (name, outputs relative to results/{patient}/ with
#: {t} for each tracer, the log of the step relative to results/logs/).
STAGES = (
    ("header check", ("{t}/inspect.json",), "convert/{p}_{t}.log"),
    ("conversion", ("{t}/pet_suv.nii.gz", "{t}/ct.nii.gz"), "convert/{p}_{t}.log"),
    ("organ map", ("{t}/anatomy.json",), "anatomy/{p}_{t}.log"),
    ("detection", ("{t}/segmentation.json",), "segment/{p}_{t}.log"),
    ("registration", ("registration/transform.tfm",), "register/{p}.log"),
    ("matching", ("lesions/index.tsv",), "match/{p}.log"),
    ("lesion table", ("lesions.tsv",), "patient_table/{p}.log"),
    ("review page", ("review.html",), "review_page/{p}.log"),
    ("DICOM-SEG", ("{t}/lesions_seg.dcm",), "export_seg/{p}.log"),
)
COLUMNS = ("patient", "stage", "state", "reason", "open")


def _running(workdir):
    """Files Snakemake is writing now: its .snakemake/incomplete markers, named by the
    URL-safe base64 of the path (long names split into folders prefixed '@')."""
    out = set()
    folder = Path(workdir) / ".snakemake" / "incomplete"
    if folder.is_dir():
        for marker in folder.rglob("*"):
            if not marker.is_file():
                continue
            name = "".join(part.lstrip("@") for part in marker.relative_to(folder).parts)
            try:
                out.add(base64.urlsafe_b64decode(name.encode()).decode())
            except (ValueError, UnicodeDecodeError):
                continue
    return out


def patient_status(results, patient, tracers, running=frozenset()):
    """The status row of one patient (see the module's docstring)."""
    from dualpet.failures import read_failures, reasons, record

    base = Path(results) / patient
    stage, reason, opened, state = "", "", "", "waiting"
    for name, outputs, log in STAGES:
        paths = [base / o.format(t=t) for o in outputs for t in (tracers if "{t}" in o else (None,))]
        rel = [
            str(Path("results") / patient / o.format(t=t))
            for o in outputs
            for t in (tracers if "{t}" in o else (None,))
        ]
        if any(r in running for r in rel):
            state = "running"
            break
        failures = [f for p in paths for f in (read_failures(p) or [])]
        if name == "header check":
            for p in paths:
                if p.is_file() and read_failures(p) is None:
                    verdict = json.loads(p.read_text())
                    if not verdict.get("ok", True):
                        failures.append(
                            record("inspect", patient, verdict.get("tracer"), verdict.get("error", "refused"))
                        )
        if failures:
            state, reason = "excluded", reasons(failures)
            first = failures[0]
            step_log = log.format(p=patient, t=first.get("tracer") or tracers[0])
            opened = str(Path("results") / "logs" / step_log)
            break
        if not all(p.is_file() for p in paths):
            state = "in progress" if stage else "waiting"
            break
        stage = name
    else:
        state, opened = "done", str(Path("results") / patient / "review.html")
    return {"patient": patient, "stage": stage or "-", "state": state, "reason": reason, "open": opened}


def cohort_status(studies, results="results", workdir="."):
    """Status rows of every patient of the studies sheet (a DataFrame with patient, tracer)."""
    running = _running(workdir)
    tracers = list(dict.fromkeys(studies["tracer"]))
    return [patient_status(results, p, tracers, running) for p in sorted(dict.fromkeys(studies["patient"]))]


def format_table(rows):
    """A plain-text table (one line per patient), reasons shortened to the terminal."""
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) if rows else len(c) for c in COLUMNS}
    widths["reason"] = min(widths["reason"], 70)
    line = "  ".join(c.ljust(widths[c]) for c in COLUMNS).rstrip()
    out = [line, "  ".join("-" * widths[c] for c in COLUMNS).rstrip()]
    for r in rows:
        reason = r["reason"] if len(r["reason"]) <= 70 else r["reason"][:67] + "..."
        out.append("  ".join(str({**r, "reason": reason}[c]).ljust(widths[c]) for c in COLUMNS).rstrip())
    counts = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    out.append(f"{len(rows)} patients: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return "\n".join(out)


def follow(lines, log, studies, *, results="results", workdir=".", out=None, every_s=5.0):
    """Follow a run: every line of Snakemake's output (``lines``) goes to ``log``; the
    console (``out``) gets one line per patient as it finishes, is excluded (with the
    reason) or fails, and a running total of patients settled that never goes backwards.
    Returns the number of patients excluded."""
    import sys
    import time

    out = out or sys.stderr
    total = len(dict.fromkeys(studies["patient"]))
    told, last = {}, 0.0

    def report(final=False):
        rows = [r for r in cohort_status(studies, results, workdir) if r["state"] in ("done", "excluded")]
        for row in rows:  # the count is of every patient settled so far, this one included
            state = row["state"]
            if told.get(row["patient"]) != state:
                told[row["patient"]] = state
                text = (
                    f"{row['patient']}: done ({row['open']})"
                    if state == "done"
                    else f"{row['patient']}: excluded: {row['reason']} (log: {row['open']})"
                )
                print(f"[{len(told)}/{total} patients] {text}", file=out, flush=True)
        settled = len(rows)
        if final:
            left = [p for p in dict.fromkeys(studies["patient"]) if p not in told]
            excluded = [p for p, s in told.items() if s == "excluded"]
            tail = f"; excluded: {', '.join(excluded)} (fix or remove them; `make status` says why)" if excluded else ""
            tail += f"; not finished: {', '.join(left)}" if left else ""
            print(f"[{settled}/{total} patients] run ended{tail} (full output: {log})", file=out, flush=True)
        return sum(1 for s in told.values() if s == "excluded")

    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line)
            fh.flush()
            # the run's own failures, as they come (check_cohort's failure, the verdict that
            # patients were excluded, and Snakemake's closing error after it are the final line's)
            if line.startswith(("Error in rule", "MissingInputException", "dualpet: ")) and "check_cohort" not in line:
                print(line.rstrip(), file=out, flush=True)
            now = time.monotonic()
            if "Finished jobid" in line or now - last > every_s:
                last = now
                report()
    return report(final=True)
