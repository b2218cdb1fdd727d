"""Logs are scrubbed like outputs (issue 24): a third-party library's warning or log record
that quotes a DICOM header value (a PatientName a validator disliked) reaches the log with
the value redacted."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import logging, warnings
from pydicom.dataset import Dataset
from dualpet import privacy
privacy.install()
ds = Dataset()
ds.PatientName = "Richter^Frank"
ds.PatientID = "MRN3787556"
ds.PatientBirthDate = "19470312"
ds.InstitutionName = "Klinikum Ostheim"
ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1234567"
privacy.register(ds)
warnings.warn("value 'Richter^Frank' of PatientName does not match VR PN; study 1.2.826.0.1.3680043.8.498.1234567")
logging.getLogger("highdicom.seg.sop").warning("source image of patient MRN3787556 born 19470312 at Klinikum Ostheim")
logging.getLogger("pydicom").warning("Frank: an odd name part")
print("done")
"""


def test_warnings_and_log_records_lose_the_header_values(tool_env):
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=tool_env, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "done", proc.stderr
    err = proc.stderr
    assert err.count("[redacted]") >= 5, err
    for value in (
        "Richter",
        "Frank",
        "MRN3787556",
        "19470312",
        "Klinikum",
        "Ostheim",
        "1.2.826.0.1.3680043.8.498.1234567",
    ):
        assert value not in err, (value, err)
    assert "does not match VR PN" in err and "source image of patient" in err  # the rest of each message stays
