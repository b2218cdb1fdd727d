"""Exceptions for bad input: messages a clinician-scientist can act on."""


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
