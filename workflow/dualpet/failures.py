"""Failure isolation: a patient whose step fails is excluded, the cohort goes on.

Snakemake runs a job only when all its inputs exist, so one failed job would keep the
cohort tables from ever being written. Per-patient steps therefore run *isolated*
(``--isolate-failures``): when the step fails on its data (or on a bug that its data
triggers), it writes a **placeholder** in place of each output, carrying the one-line
reason, and ends successfully. A later step that finds a placeholder among its inputs
does not run; it passes the reasons on in its own placeholders. The cohort step reads
the reasons from its inputs and lists the patient as excluded; a final check makes the
run exit non-zero while any patient is excluded, so the failure is not missed.

Placeholders are small files starting with :data:`MAGIC` followed by JSON (a list of
failure records); a PNG output becomes a picture stating the failure, with the records
in a PNG text chunk. Failures of the machine rather than of a patient (out of memory,
disk full) are not isolated: the job fails as usual and reruns next time.

A failed step reruns when its inputs, parameters or code change (Snakemake's rerun
triggers); ``snakemake --forcerun RULE`` reruns it otherwise.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
import sys
from pathlib import Path

from dualpet.errors import DualpetInputError, redact_paths
from dualpet.io import atomic_path

MAGIC = b"DUALPET-FAILED v1\n"
PNG_KEY = "dualpet-failed"
#: What each step is called in an excluded patient's reason.
STEP_NAMES = {
    "inspect": "header check",
    "convert": "conversion",
    "register": "registration",
    "segment": "segmentation",
    "match": "lesion matching",
    "lesion-metrics": "lesion metrics",
    "patient-table": "patient table",
}
#: OSError numbers that are the machine's fault, not the patient's (not isolated).
MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.ENOMEM, errno.EIO, errno.EROFS}
#: Words of other exceptions' messages meaning the same (e.g. SimpleITK's RuntimeError).
MACHINE_MESSAGES = re.compile(
    r"failed to allocate|bad_alloc|out of memory|cannot allocate|no space left|disk quota", re.IGNORECASE
)


class UpstreamFailure(DualpetInputError):
    """A step cannot run because an earlier one failed; carries the failure records."""

    def __init__(self, failures):
        self.failures = list(failures)
        super().__init__(reasons(self.failures))


def one_line(message, limit=400):
    """The first line of an error message, shortened, absolute paths redacted."""
    line = redact_paths((str(message).strip().splitlines() or [""])[0].strip())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def record(step, patient, tracer, error):
    """A failure record: which patient/study, which step, the one-line error."""
    where = f"patient {patient}" + (f", {tracer}" if tracer else "")
    message = one_line(error)
    if message.startswith(where + ": "):
        message = message[len(where) + 2 :]
    return {"patient": patient, "tracer": tracer or None, "step": step, "error": message}


def reason(rec):
    """One line: 'patient P003, fdg: segmentation failed: <error>'."""
    where = f"patient {rec['patient']}" + (f", {rec['tracer']}" if rec.get("tracer") else "")
    return f"{where}: {STEP_NAMES.get(rec['step'], rec['step'])} failed: {rec['error']}"


def reasons(failures):
    """The distinct reasons of a list of records, joined with ' | '."""
    return " | ".join(dict.fromkeys(reason(r) for r in failures))


def read_failures(path):
    """The failure records of a placeholder, or None for a real output."""
    path = Path(path)
    if not path.is_file():
        return None
    if path.suffix.lower() == ".png":
        from PIL import Image

        try:
            with Image.open(path) as img:
                text = img.text.get(PNG_KEY)
        except OSError:
            return None
        return json.loads(text) if text else None
    if path.suffix.lower() in (".html", ".htm"):
        import html

        with open(path, "rb") as fh:  # a placeholder page is small; a real page may be megabytes
            text = fh.read(1 << 20).decode("utf-8", errors="replace")
        if HTML_RECORDS not in text or "</pre>" not in text.split(HTML_RECORDS, 1)[1]:
            return None
        return json.loads(html.unescape(text.split(HTML_RECORDS, 1)[1].split("</pre>", 1)[0]))
    with open(path, "rb") as fh:
        head = fh.read(len(MAGIC))
        if head != MAGIC:
            return None
        return json.loads(fh.read().decode())


def failures_in(paths):
    """All failure records found among ``paths`` (nested lists allowed), deduplicated."""
    found = {}
    for path in _flat(paths):
        for rec in read_failures(path) or []:
            found[json.dumps(rec, sort_keys=True)] = rec
    return list(found.values())


def _flat(paths):
    for p in paths:
        if isinstance(p, (list, tuple)):
            yield from _flat(p)
        elif p:
            yield p


def write_placeholders(files, dirs, failures):
    """Replace each output by a placeholder carrying ``failures`` (directories: emptied)."""
    for d in _flat(dirs):
        shutil.rmtree(d, ignore_errors=True)
        Path(d).mkdir(parents=True, exist_ok=True)
    payload = json.dumps(failures, indent=1)
    for f in _flat(files):
        with atomic_path(f) as tmp:
            if str(f).lower().endswith(".png"):
                _failure_picture(tmp, failures, payload)
            elif str(f).lower().endswith((".html", ".htm")):
                tmp.write_text(_failure_page(failures, payload), encoding="utf-8")
            else:
                tmp.write_bytes(MAGIC + payload.encode())


#: How an HTML placeholder carries its records: escaped JSON in this element (a page that
#: opens in a browser as a page saying why, never as markup made of the reasons' text).
HTML_RECORDS = "<pre id='dualpet-failed' hidden>"


def _failure_page(failures, payload):
    import html

    from dualpet.io import html_page

    items = "".join(f"<li>{html.escape(reason(r))}</li>" for r in failures)
    body = f"<h1>Not produced: the patient is excluded</h1><ul>{items}</ul>{HTML_RECORDS}{html.escape(payload)}</pre>"
    return html_page("dualpet: not produced", body)


def _failure_picture(path, failures, payload):
    """A picture saying the output was not produced and why, the records in a PNG text chunk
    (drawn with Pillow: a refused patient's placeholder jobs finish in a fraction of a second)."""
    import textwrap

    from PIL import Image, ImageDraw, ImageFont
    from PIL.PngImagePlugin import PngInfo

    lines = [line for r in failures for line in textwrap.wrap(reason(r), 100)]
    img = Image.new("RGB", (760, 60 + 16 * len(lines)), "white")
    draw = ImageDraw.Draw(img)
    draw.text((16, 14), "Not produced: the patient is excluded", fill=(0, 0, 0), font=ImageFont.load_default(size=18))
    font = ImageFont.load_default(size=12)
    for n, line in enumerate(lines):
        draw.text((16, 46 + 16 * n), line, fill=(40, 40, 40), font=font)
    info = PngInfo()
    info.add_text(PNG_KEY, payload)
    img.save(path, format="PNG", pnginfo=info)


def run_isolated(args):
    """Run a workflow step so that a patient's failure excludes the patient, not the cohort.

    ``args`` is the parsed command line; ``args._io`` names its input and output
    arguments (see :func:`dualpet.cli.isolation`). Returns the exit status.
    """
    io = args._io
    value = lambda name: getattr(args, name, None)  # noqa: E731
    kept = {value(n) for n in io["kept"] if value(n)}
    for stale in kept:  # an earlier run's verdict is never taken for this run's
        Path(stale).unlink(missing_ok=True)
    # a kept output (a verdict) is replaced only when the step failed before writing it
    outputs = lambda: [o for o in map(value, io["outputs"]) if o not in kept or not Path(o).is_file()]  # noqa: E731
    dirs = [value(n) for n in io["dirs"]]
    patient, tracer = value("patient") or "?", value("tracer") or None
    upstream = failures_in(value(n) for n in io["inputs"])
    try:
        if upstream:
            raise UpstreamFailure(upstream)
        args.func(args)
        return 0
    except UpstreamFailure as exc:
        write_placeholders(outputs(), dirs, exc.failures)
        print(f"dualpet {args.command}: not run, the patient is excluded: {reasons(exc.failures)}", file=sys.stderr)
        return 0
    except OSError as exc:
        if exc.errno in MACHINE_ERRNOS:  # the machine's failure, not the patient's: fail the job
            print(f"dualpet {args.command}: error: {one_line(exc)}", file=sys.stderr)
            return 1
        failure = record(args.command, patient, tracer, exc)
    except MemoryError:
        print(f"dualpet {args.command}: error: out of memory (raise the rule's mem_mb)", file=sys.stderr)
        return 1
    except Exception as exc:
        if not isinstance(exc, DualpetInputError) and MACHINE_MESSAGES.search(str(exc)):
            print(f"dualpet {args.command}: error (machine, not patient): {one_line(exc)}", file=sys.stderr)
            return 1
        message = str(exc) if isinstance(exc, DualpetInputError) else f"{type(exc).__name__}: {exc}"
        failure = record(args.command, patient, tracer, message)
    write_placeholders(outputs(), dirs, [failure])
    print(f"dualpet {args.command}: error, the patient is excluded: {reason(failure)}", file=sys.stderr)
    return 0
