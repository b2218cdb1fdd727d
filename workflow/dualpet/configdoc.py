"""``docs/config.md`` from the config schema (``make docs``; a test fails when it is stale).

The schema (``workflow/schemas/config.schema.yaml``) is the one place every setting, its
type, its default and its meaning are written; this renders it as a Markdown reference,
one section per top-level key, one table row per setting.
"""

from __future__ import annotations

import json


def _type(spec):
    if "enum" in spec:
        return " or ".join(f"`{v}`" for v in spec["enum"])
    if "oneOf" in spec or "anyOf" in spec:
        kinds = [
            {"object": "per-tracer object"}.get(o.get("type", ""), o.get("type", ""))
            for o in spec.get("oneOf") or spec["anyOf"]
        ]
        return " or ".join(k for k in kinds if k)
    kind = spec.get("type", "")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    bounds = []
    for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in spec:
            bounds.append(f"{sign} {spec[key]}")
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


def _default(spec, required=False):
    if "default" not in spec:
        return "required" if required else "none"
    value = spec["default"]
    if isinstance(value, (dict, list)) and not value:
        return "`{}`" if isinstance(value, dict) else "`[]`"
    return f"`{json.dumps(value)}`" if not isinstance(value, str) else (f'`"{value}"`' if value else '`""`')


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(schema=None):
    """The Markdown reference of the config schema."""
    from dualpet import settings

    schema = schema or settings.schema()
    out = [
        "# Configuration reference",
        "",
        "<!-- generated from workflow/schemas/config.schema.yaml by `make docs`; do not edit -->",
        "",
        "`config/config.yaml` (or the file given with `--configfile`) is validated against",
        "`workflow/schemas/config.schema.yaml`; a key left out takes the default below, an unknown",
        "key or a key given twice is refused before anything runs.",
        "",
        "| setting | type | default | meaning |",
        "|---|---|---|---|",
    ]
    sections = []
    for key, spec in schema["properties"].items():
        if spec.get("type") == "object" and "properties" in spec:
            sections.append((key, spec))
            continue
        required = key in schema.get("required", ())
        out.append(
            f"| `{key}` | {_cell(_type(spec))} | {_cell(_default(spec, required))} | {_cell(spec.get('description', ''))} |"
        )
    for key, spec in sections:
        out += ["", f"## `{key}`", ""]
        if spec.get("description"):
            out += [spec["description"], ""]
        out += ["| setting | type | default | meaning |", "|---|---|---|---|"]
        for sub, subspec in spec["properties"].items():
            if subspec.get("type") == "object" and "properties" in subspec:
                for leaf, leafspec in subspec["properties"].items():
                    out.append(
                        f"| `{key}.{sub}.{leaf}` | {_cell(_type(leafspec))} | {_cell(_default(leafspec))} | "
                        f"{_cell(leafspec.get('description', ''))} |"
                    )
                continue
            out.append(
                f"| `{key}.{sub}` | {_cell(_type(subspec))} | {_cell(_default(subspec))} | "
                f"{_cell(subspec.get('description', ''))} |"
            )
    return "\n".join(out) + "\n"
