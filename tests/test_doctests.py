"""The examples in the docstrings of the small pure modules run as tests (issue 25)."""

import doctest
import importlib

import pytest

MODULES = [
    "dualpet.geometry",
    "dualpet.interchange",
    "dualpet.settings",
    "dualpet.stats.detection",
    "dualpet.background",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 1, f"{name}: its examples are the point of this test"
    assert result.failed == 0
