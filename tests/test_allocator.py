"""A step's process keeps freed memory for reuse (dualpet.allocator)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dualpet import allocator

#: Allocate a 256 MB array, free it, allocate one again and print the page faults the
#: second array's first touch took (the kernel's count for this process). ``keep``: as a
#: dualpet step's process does, through the command line's entry (main() without arguments).
_REUSE = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from dualpet import cli
    sys.argv = ["dualpet", "--help"]
    try:
        cli.main()
    except SystemExit:
        pass
a = np.ones(2**25); del a
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(2**25)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _glibc():
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (AttributeError, ValueError, OSError):
        return False


def _faults(mode, **env):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **env)
    out = subprocess.run([sys.executable, "-c", _REUSE, mode], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not _glibc(), reason="glibc's mallopt")
def test_a_freed_array_is_reused_without_page_faults():
    """glibc unmaps a freed 256 MB block, so its successor is faulted in again (at least
    one fault per 2 MB huge page: 128); a dualpet program reuses the freed heap (a few
    faults at most, for the interpreter's own small allocations), unless told to keep
    glibc's policy. (An allocator preloaded in glibc's place, jemalloc or tcmalloc, has its
    own policy: this test is then not for it.)"""
    default, kept = _faults("default"), _faults("keep")
    assert default >= 128
    assert kept < 16
    assert _faults("keep", **{allocator.SWITCH: allocator.GLIBC_POLICY}) >= 128


@pytest.mark.parametrize("confstr", [lambda name: None, ValueError, OSError, AttributeError])
def test_other_c_libraries_are_left_alone(monkeypatch, confstr):
    """No glibc (macOS: no such name; musl: EINVAL; None): nothing is changed."""

    def fake(name):
        if isinstance(confstr, type):
            raise confstr(name)
        return confstr(name)

    monkeypatch.setattr(os, "confstr", fake)
    assert allocator.keep_freed_memory() is False
