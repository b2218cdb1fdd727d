"""Reading the user's sheets (studies, clinical, seeds): UTF-8, tab-separated, and every
error names the file and the line.

Used by the workflow at parse time (``workflow/rules/common.smk``), so it imports only
what Snakemake itself needs (pandas, jsonschema, yaml).
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd


class SheetError(ValueError):
    """A sheet dualpet refuses; the message names the file and, where it can, the line."""


def safe_json(value, **kwargs):
    """JSON text of ``value`` with ``<``, ``>`` and ``&`` written as \\u escapes: the same
    JSON, but text from a sheet (a reader's note) can never close or open markup where
    Snakemake shows a job's parameters (its report embeds them in a script block)."""
    import json

    text = json.dumps(value, **kwargs)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def read_tsv(path, *, what, required=(), allow_empty=False):
    """A tab-separated UTF-8 sheet as strings, with its file line numbers.

    Returns
    -------
    pandas.DataFrame
        One row per non-blank line below the header, every value a stripped string; the
        column ``_line`` holds the row's line number in the file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SheetError(f"{what} {path}: cannot be read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SheetError(
            f"{what} {path}, line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the sheet as UTF-8, "
            "tab-separated"
        ) from None
    if not text.strip():
        raise SheetError(f"{what} {path}: the file is empty (expected a header line and one row per entry)")
    try:
        sheet = pd.read_csv(io.StringIO(text), sep="\t", dtype=str, keep_default_na=False, skip_blank_lines=False)
    except (pd.errors.ParserError, ValueError) as exc:
        raise SheetError(f"{what} {path}: not a tab-separated table ({str(exc).splitlines()[0]})") from None
    sheet.columns = [str(c).strip() for c in sheet.columns]
    sheet = sheet.apply(lambda col: col.str.strip())
    sheet["_line"] = range(2, len(sheet) + 2)
    sheet = sheet[(sheet.drop(columns="_line") != "").any(axis=1)].reset_index(drop=True)
    missing = [c for c in required if c not in sheet.columns]
    if missing:
        found = [c for c in sheet.columns if c != "_line"]
        raise SheetError(f"{what} {path}, line 1: column(s) {missing} missing (found {found}; is it tab-separated?)")
    if not len(sheet) and not allow_empty:
        raise SheetError(f"{what} {path}: no rows below the header")
    return sheet


def validate_rows(sheet, schema, *, what, path):
    """Check every row against a JSON schema (a dict); the first error names its line and column."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema)
    for row in sheet.to_dict("records"):
        line = row.pop("_line")
        error = next(iter(sorted(validator.iter_errors(row), key=lambda e: list(e.path))), None)
        if error is not None:
            column = error.path[0] if error.path else ""
            value = row.get(column, "") if column else ""
            description = (schema.get("properties", {}).get(column, {}) or {}).get("description", "")
            raise SheetError(
                f"{what} {path}, line {line}" + (f", column {column}" if column else "") + f": {value!r} is not valid"
                + (f" ({description})" if description else f" ({error.message})")
            )  # fmt: skip


def lines(sheet, mask):
    """The file line numbers of the rows selected by ``mask``, for messages."""
    return ", ".join(str(n) for n in sheet.loc[mask, "_line"])
