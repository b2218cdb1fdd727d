"""Shared fixtures: one small generated cohort per test session (demo size)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))


@pytest.fixture(scope="session")
def cohort_dir(tmp_path_factory):
    """Two demo-size patients (seed 11): DICOM, sheets and truth."""
    from dualpet.synth import generate_cohort

    out = tmp_path_factory.mktemp("cohort")
    generate_cohort(out, n_patients=2, seed=11, size="demo", log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def truth(cohort_dir):
    from dualpet.io import read_json

    return {p.stem: read_json(p) for p in sorted((cohort_dir / "truth").glob("*.json"))}


def venv_bin():
    """Directory of the running interpreter's scripts (snakemake, dualpet)."""
    return str(Path(sys.executable).parent)


@pytest.fixture(scope="session")
def tool_env():
    """Environment for subprocesses: the test interpreter's bin first on PATH."""
    env = dict(os.environ)
    env["PATH"] = venv_bin() + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(REPO / "workflow") + os.pathsep + env.get("PYTHONPATH", "")
    return env


#: Fixtures that make a test slow: a generated cohort, or subprocesses of the installed tools.
SLOW_FIXTURES = frozenset({"cohort_dir", "truth", "tool_env"})


def pytest_collection_modifyitems(items):
    """A test using a generated cohort or running the tools is ``slow``: ``make test-fast``
    (``-m "not slow"``) keeps the unit tests, which take seconds."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
