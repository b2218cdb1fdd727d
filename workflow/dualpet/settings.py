"""The workflow's settings, read from the one place they are written: the config schema.

``workflow/schemas/config.schema.yaml`` gives every setting its type, default and meaning.
Snakemake's ``validate`` fills the defaults into the workflow's config; the steps' Python
code and the command line take theirs from here, so that a step run alone (``dualpet
segment ...``) does what the workflow does, and no default is written twice.

Settings are named by their dotted path in the config (``detection.min_volume_ml``).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

#: The config schema (the source of every default and description).
SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


@functools.cache
def schema():
    """The config schema as a dict (read once per process)."""
    import yaml

    return yaml.safe_load(SCHEMA.read_text())


def spec(name):
    """The schema entry of a setting (``"voi.isocontour"``); KeyError if there is none.

    >>> spec("voi.isocontour")["exclusiveMaximum"]
    1
    """
    node = schema()
    for part in name.split("."):
        node = node["properties"][part]
    return node


def default(name):
    """A setting's default (a fresh copy: callers may change it).

    >>> default("matching.tolerance_mm"), default("statistics.primary.metric")
    (15.0, 'suvmax')
    """
    entry = spec(name)
    if "default" not in entry:
        raise KeyError(f"setting {name} has no default")
    if entry.get("type") == "object" and "properties" in entry:
        return defaults(name)
    return copy.deepcopy(entry["default"])


def describe(name):
    """A setting's description, for help texts."""
    return spec(name).get("description", "")


def defaults(section):
    """The defaults of every setting of a section that has one (nested sections included).

    >>> defaults("voi")
    {'isocontour': 0.41, 'neighbourhood_mm': 10.0, 'reader_masks': 'contour'}
    """
    out = {}
    for key, entry in spec(section).get("properties", {}).items():
        if entry.get("type") == "object" and "properties" in entry:
            out[key] = defaults(f"{section}.{key}")
        elif "default" in entry:
            out[key] = copy.deepcopy(entry["default"])
    return out


def complete(section, given=None):
    """``given`` (a section of a config, possibly partial or None) with every missing
    setting at its default, nested sections merged key by key; the given keys keep their
    order, the defaults follow. Unknown keys are refused (a misspelt setting would
    otherwise be ignored).

    >>> complete("voi", {"isocontour": 0.5})
    {'isocontour': 0.5, 'neighbourhood_mm': 10.0, 'reader_masks': 'contour'}
    """
    known = spec(section).get("properties", {})
    out = {}
    for key, value in (given or {}).items():
        if key not in known:
            from dualpet.errors import DualpetInputError

            raise DualpetInputError(f"unknown setting {section}.{key} (known: {', '.join(known)})")
        nested = known[key].get("type") == "object" and "properties" in known[key]
        out[key] = complete(f"{section}.{key}", value) if nested and isinstance(value, dict) else value
    for key, value in defaults(section).items():
        out.setdefault(key, value)
    return out
