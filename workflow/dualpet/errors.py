"""Exceptions for bad input: messages a clinician-scientist can act on, without identifiers."""

import re

#: Absolute paths (POSIX, or Windows drive), quoted (spaces allowed) or bare: folder names
#: of PACS exports often hold patient names and record numbers, so messages never carry them.
_QUOTED_PATH = re.compile(r"\"(?:[A-Za-z]:\\|/)[^\"]*\"|'(?:[A-Za-z]:\\|/)[^']*'")
_BARE_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:\\|/)(?:[^\s'\"/\\]+[/\\])*[^\s'\"/\\]*[^\s'\"/\\:,;.)]")


def redact_paths(text):
    """``text`` (or an exception's message) with absolute paths replaced by '<path>'."""
    return _BARE_PATH.sub("<path>", _QUOTED_PATH.sub("'<path>'", str(text)))


class DualpetInputError(Exception):
    """An input (DICOM study, sheet, file) that dualpet refuses to process.

    The message names what is at fault: the patient or folder, the series and the
    DICOM attribute, the value found and what was expected. The CLI prints it as one
    line on stderr and exits with status 2.
    """

    def __init__(self, message, *, patient=None, series=None, attribute=None):
        self.patient = patient
        self.series = series
        self.attribute = attribute
        parts = []
        if patient:
            parts.append(f"patient {patient}")
        if series:
            parts.append(f"series {series}")
        if attribute:
            parts.append(f"attribute {attribute}")
        prefix = ", ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)
