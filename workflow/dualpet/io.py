"""Atomic output writers: a file appears complete under its final name or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary name keeps the final suffix(es) (``.nii.gz``, ``.tsv``) so that
    libraries choosing a format by extension behave as for the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(path.suffixes) or ".tmp"
    prefix = f".{path.name.split('.')[0]}."
    _remove_stale(path.parent, prefix, suffix)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs follow the umask like any file
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _remove_stale(folder, prefix, suffix):
    """Remove the temporaries of an earlier write of the same output that never reached its
    rename (its job killed: kill -9, a lost node). The job writing an output is the only
    one (Snakemake runs one job per output), so none of them is in use. mkstemp's names are
    the prefix, 8 characters of [a-z0-9_] and the suffix."""
    stale = re.compile(re.escape(prefix) + "[a-z0-9_]{8}" + re.escape(suffix))
    for entry in os.scandir(folder):
        if stale.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path, data):
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")


def read_json(path):
    return json.loads(Path(path).read_text())


def write_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_tsv(path, df):
    """Write a pandas DataFrame as TSV (no index, empty string for missing), atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, na_rep="", float_format="%.6g")


#: The report pages' style (the Snakemake report shows them in a frame).
PAGE_STYLE = (
    "body{font-family:sans-serif;margin:1.2em;max-width:1300px;font-size:14px}"
    "table{border-collapse:collapse;margin:0.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 7px;"
    "vertical-align:top}th{background:#f3f3f3}"
)


def html_page(title: str, body: str) -> str:
    """A self-contained HTML page (no scripts, no external links)."""
    import html

    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{PAGE_STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )
