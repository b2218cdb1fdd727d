"""Logs are scrubbed like outputs: no DICOM header value that could identify a patient.

dualpet's own messages name attributes, never their values. Third-party libraries
(pydicom, highdicom, SimpleITK's Python layer) may put values into their warnings and log
records, e.g. a PatientName a validator did not like. Every value read from an identifying
attribute is registered here (:func:`register`, called as headers are read), and
:func:`install` makes every warning and log record pass through :func:`scrub`, which
replaces those values with ``[redacted]`` before anything is written.
"""

from __future__ import annotations

import logging
import re
import warnings

#: Attributes whose values identify a patient, a visit or a site (PS3.15 basic profile),
#: and the UIDs (which link to the hospital's records).
IDENTIFYING = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthDate",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "AccessionNumber",
    "StudyID",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "RequestingPhysician",
    "OperatorsName",
    "StationName",
    "DeviceSerialNumber",
    "MedicalRecordLocator",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
)
REDACTED = "[redacted]"
#: Shorter values are not scrubbed on their own (they would blank common words and numbers).
MIN_LENGTH = 3

_values: set[str] = set()
_pattern = None


def register(ds):
    """Remember the identifying values of one DICOM header (and the parts of names)."""
    global _pattern
    added = False
    for keyword in IDENTIFYING:
        raw = ds.get(keyword) if hasattr(ds, "get") else None
        if raw is None or raw == "":
            continue
        items = raw if isinstance(raw, (list, tuple)) or type(raw).__name__ == "MultiValue" else [raw]
        for item in items:
            text = str(item).strip()
            for value in {text, *re.split(r"[\^=\s]+", text)}:
                if len(value) >= MIN_LENGTH and value not in _values:
                    _values.add(value)
                    added = True
    if added:
        _pattern = None


def scrub(text):
    """``text`` with every registered value replaced by :data:`REDACTED` (longest first)."""
    global _pattern
    if not _values or not text:
        return text
    if _pattern is None:
        _pattern = re.compile("|".join(re.escape(v) for v in sorted(_values, key=len, reverse=True)))
    return _pattern.sub(REDACTED, str(text))


class _Scrubber(logging.Filter):
    def filter(self, record):
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


def install():
    """Route warnings and log records through :func:`scrub` (once per process)."""
    if getattr(warnings.showwarning, "_dualpet", False):
        return
    shown = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        shown(scrub(str(message)), category, filename, lineno, file, line)

    showwarning._dualpet = True
    warnings.showwarning = showwarning
    scrubber = _Scrubber()
    # a handler's filters see every record it writes, also those propagated from child
    # loggers (highdicom.seg.sop -> highdicom -> root, or Python's last-resort handler)
    for name in ("", "pydicom", "highdicom", "nibabel"):
        log = logging.getLogger(name)
        log.addFilter(scrubber)
        for handler in log.handlers:
            handler.addFilter(scrubber)
    if logging.lastResort is not None:
        logging.lastResort.addFilter(scrubber)
