"""Reading the user's sheets (studies, clinical, seeds): UTF-8, tab-separated, and every
error names the file and the line.

Used by the workflow at parse time (``workflow/rules/common.smk``), so it imports only
what Snakemake itself needs (pandas, jsonschema, yaml).
"""

from __future__ import annotations

import io
import re
import stat
from pathlib import Path

import pandas as pd

#: The largest file read as a sheet (bytes): a sheet is a few kilobytes.
MAX_SHEET_BYTES = 50 * 10**6
#: What a column name looks like; a first line that is anything else is not echoed.
COLUMN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_ .()%-]{0,47}$")


class SheetError(ValueError):
    """A sheet dualpet refuses; the message names the file and, where it can, the line."""


def load_yaml_strict(path):
    """A YAML file (the config) refusing a key given twice in one mapping: PyYAML keeps the
    last, so a duplicated ``reference_tracer`` would silently swap the tracers."""
    import yaml

    class Strict(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise SheetError(
                    f"config {path}, line {key_node.start_mark.line + 1}: key {key!r} given twice (first on line "
                    f"{seen[key]}); keep one"
                )
            seen[key] = key_node.start_mark.line + 1
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=Strict)


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
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a named pipe would block, a device never end
            raise SheetError(f"{what} {path}: not a regular file (only regular files are read)")
        if st.st_size > MAX_SHEET_BYTES:
            raise SheetError(
                f"{what} {path}: {st.st_size / 1e6:.0f} MB is not a sheet (at most {MAX_SHEET_BYTES // 10**6} MB)"
            )
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
    text = _check_fields(text, what, path)
    try:
        sheet = pd.read_csv(io.StringIO(text), sep="\t", dtype=str, keep_default_na=False, skip_blank_lines=False)
    except (pd.errors.ParserError, ValueError) as exc:
        unclosed = re.search(r"EOF inside string starting at row (\d+)", str(exc))
        if unclosed:  # pandas counts the header as row 0
            raise SheetError(
                f'{what} {path}, line {int(unclosed.group(1)) + 1}: a double quote (") opens a cell that is '
                "never closed; remove it or close it in the same cell"
            ) from None
        raise SheetError(f"{what} {path}: not a tab-separated table ({str(exc).splitlines()[0]})") from None
    sheet.columns = [str(c).strip() for c in sheet.columns]
    sheet = sheet.apply(lambda col: col.str.strip())
    sheet["_line"] = range(2, len(sheet) + 2)
    spanning = sheet.drop(columns="_line").apply(lambda col: col.str.contains("\n", regex=False)).any(axis=1)
    if spanning.any():  # a quote opened a cell that ran over the line end, taking the next rows
        line = int(sheet.loc[spanning, "_line"].iloc[0])
        raise SheetError(
            f'{what} {path}, line {line}: a double quote (") opens a cell that runs on into the next '
            "line(s); remove it or close it in the same cell"
        )
    sheet = sheet[(sheet.drop(columns="_line") != "").any(axis=1)].reset_index(drop=True)
    missing = [c for c in required if c not in sheet.columns]
    if missing:
        found = [c for c in sheet.columns if c != "_line"]
        if all(COLUMN_NAME.match(c) for c in found):
            raise SheetError(
                f"{what} {path}, line 1: column(s) {missing} missing (found {found}; is it tab-separated?)"
            )
        # not a header of column names: the file's text is not repeated (it may be anything)
        raise SheetError(
            f"{what} {path}, line 1: column(s) {missing} missing; its first line is not a header of "
            "tab-separated column names (is it the right file, tab-separated?)"
        )
    if not len(sheet) and not allow_empty:
        raise SheetError(f"{what} {path}: no rows below the header")
    return sheet


def _check_fields(text, what, path):
    """The sheet's text with trailing empty fields beyond the header's dropped (spreadsheet
    exports add them); refuses a row of one field where the header has several (spaces
    instead of tabs) and a row with more non-empty fields than the header."""
    lines_ = text.split("\n")
    width = len(lines_[0].split("\t"))
    out, problems = [lines_[0]], []
    for n, line in enumerate(lines_[1:], start=2):
        fields = line.rstrip("\r").split("\t")
        if line.strip() and '"' not in line:  # (quoted cells are pandas' to read)
            if len(fields) > width and any(f.strip() for f in fields[width:]):
                problems.append(
                    f"{what} {path}, line {n}: {len(fields)} fields, the header has {width}; one value per "
                    "column, separated by tabs"
                )
            elif len(fields) == 1 and width > 1 and len(line.split()) > 1:
                problems.append(
                    f"{what} {path}, line {n}: 1 field where the header has {width}: separate the columns by "
                    "tabs, not spaces"
                )
            fields = fields[:width] if len(fields) > width else fields
        out.append("\t".join(fields))
    if problems:
        raise SheetError("\n".join(problems))
    return "\n".join(out)


def check_columns(sheet, known, *, what, path):
    """Refuse columns the sheet's schema does not know (a misspelt optional column would be
    ignored silently), naming the closest known name."""
    import difflib

    unknown = [c for c in sheet.columns if c != "_line" and c not in known]
    if unknown:
        problems = []
        for c in unknown:
            close = difflib.get_close_matches(c, list(known), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known columns: {', '.join(known)})"
            problems.append(f"{what} {path}, line 1: unknown column {c!r}{hint}")
        raise SheetError("\n".join(problems))


def check_paths(sheet, columns, *, what, path, folders=("dicom_dir",)):
    """Refuse a row whose folder (``folders``) or file (the other ``columns``) does not exist
    or cannot be read: one line per problem naming the row and column (never the path: a
    folder name can identify a patient)."""
    import os

    problems = []
    for row in sheet.to_dict("records"):
        for column in columns:
            value = row.get(column, "")
            if not value:
                continue
            where = f"{what} {path}, line {row['_line']}, column {column}"
            if column in folders:
                if os.path.exists(value) and not os.path.isdir(value):
                    problems.append(f"{where}: this is a file, not a folder; give the study's DICOM folder")
                elif not os.path.isdir(value):
                    problems.append(
                        f"{where}: the folder does not exist; correct the path (relative to the sheet's folder)"
                    )
                elif not os.access(value, os.R_OK | os.X_OK):
                    problems.append(f"{where}: the folder cannot be read (permission); let this user read it")
            elif not os.path.isfile(value):
                problems.append(f"{where}: the file does not exist or is not a regular file; correct the path")
            elif not os.access(value, os.R_OK):
                problems.append(f"{where}: the file cannot be read (permission); let this user read it")
    if problems:
        raise SheetError("\n".join(problems))


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
                f"{what} {path}, line {line}"
                + (f", column {column}" if column else "")
                + f": {value!r} is not valid"
                + (f" ({description})" if description else f" ({error.message})")
            )


def check_config(config, schema, *, files):
    """Check the merged configuration against its JSON schema (a dict) and refuse it with one
    line per problem: the setting's dotted name, what is wrong and what would be right (the
    closest known name for a misspelt key, the allowed values for a choice). ``files`` name
    the config file(s) in the message. Defaults are filled in afterwards by Snakemake's
    ``validate``."""
    import difflib

    from jsonschema import Draft202012Validator

    def at(path, schema_=schema):
        for key in path:
            schema_ = (
                (schema_.get("properties") or {}).get(key, {}) if isinstance(key, str) else schema_.get("items", {})
            )
        return schema_

    where = ", ".join(map(str, files)) or "config"
    problems = []
    for error in sorted(Draft202012Validator(schema).iter_errors(config), key=lambda e: list(map(str, e.path))):
        path = [str(k) for k in error.path]
        name = ".".join(path) or "(top level)"
        if error.validator == "additionalProperties":
            known = list(at(error.path).get("properties") or {})
            extra = [k for k in error.instance if k not in known]
            for key in extra:
                close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
                full = ".".join([*path, key])
                problems.append(f"config {where}: unknown setting {full!r} ({hint})")
        elif error.validator == "required":
            props = at(error.path).get("properties") or {}
            for key in error.validator_value:
                if key not in error.instance and "default" not in props.get(key, {}):  # validate fills it
                    full = ".".join([*path, key])
                    described = props.get(key, {}).get("description", "")
                    problems.append(
                        f"config {where}: {full} is missing; set it" + (f" ({described})" if described else "")
                    )
        elif error.validator == "enum":
            allowed = ", ".join(map(str, error.validator_value))
            problems.append(f"config {where}: {name} is {error.instance!r}; it must be one of {allowed}")
        else:
            described = at(error.path).get("description", "")
            problems.append(f"config {where}: {name}: {error.message}" + (f" ({described})" if described else ""))
    if problems:
        raise SheetError("\n".join(dict.fromkeys(problems)))


def lines(sheet, mask):
    """The file line numbers of the rows selected by ``mask``, for messages."""
    return ", ".join(str(n) for n in sheet.loc[mask, "_line"])
