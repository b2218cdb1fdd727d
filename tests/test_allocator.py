"""A step's process keeps freed memory for reuse (dualpet.allocator)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dualpet import allocator

#: Allocate a 256 MB array, free it, allocate one again and print the page faults the
#: second array's first touch took (the kernel's count for this process).
_REUSE = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from dualpet.allocator import keep_freed_memory
    assert keep_freed_memory()
a = np.ones(2**25); del a
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(2**25)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", _REUSE, mode], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_freed_array_is_reused_without_page_faults():
    """glibc unmaps a freed 256 MB block, so its successor is faulted in again (at least
    one fault per 2 MB huge page: 128); with the policy it reuses the freed heap (a few
    faults at most, for the interpreter's own small allocations)."""
    if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
        pytest.skip("not glibc")
    default, kept = _faults("default"), _faults("keep")
    assert default >= 128
    assert kept < 16


def test_other_c_libraries_are_left_alone(monkeypatch):
    """No glibc (macOS, musl): nothing is changed and the step runs as before."""
    monkeypatch.setattr(os, "confstr", lambda name: None)
    assert allocator.keep_freed_memory() is False
