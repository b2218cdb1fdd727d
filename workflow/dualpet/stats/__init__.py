"""Cohort statistics for a dual-tracer PET/CT study (index tracer vs reference tracer).

One concern per module:

* :mod:`~dualpet.stats.validate`: reading and checking the cohort tables,
* :mod:`~dualpet.stats.mixed`: the random-intercept model (REML, closed form),
* :mod:`~dualpet.stats.inference`: the tests (scipy / statsmodels underneath),
* :mod:`~dualpet.stats.summary`: what is compared on which lesion set,
* :mod:`~dualpet.stats.report`: the Markdown report and its Methods text,
* :mod:`~dualpet.stats.constants`: every number and name the others share.

Public API: :func:`summarize`, :func:`render_markdown`, :func:`run`.
"""

from __future__ import annotations

__all__ = ["METRICS", "CORRELATION_METRICS", "summarize", "render_markdown", "run"]

# The tests' modules (scipy, statsmodels) load on first use: importing the constants, the
# validation or the exclusion rule (dualpet.figures does, at Snakefile parse time for its
# captions) stays cheap.
_LAZY = {
    "summarize": "dualpet.stats.summary",
    "render_markdown": "dualpet.stats.report",
    "METRICS": "dualpet.stats.constants",
    "CORRELATION_METRICS": "dualpet.stats.constants",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dualpet.stats' has no attribute {name!r}")


def run(
    lesions_tsv,
    patients_tsv,
    reference,
    index,
    out_json,
    out_md,
    *,
    primary=None,
    adjust="none",
    out_html=None,
    names=None,
) -> dict:
    """Read the cohort tables, summarise them, write the JSON, the Markdown and (with
    ``out_html``) the same report as a self-contained HTML page, atomically. ``names``:
    tracer -> display name (config ``tracer_names``)."""
    from dualpet.interchange import read_table
    from dualpet.io import write_json, write_text
    from dualpet.stats.report import render_html, render_markdown
    from dualpet.stats.summary import summarize

    summary = summarize(
        read_table(lesions_tsv), read_table(patients_tsv), reference, index, primary=primary, adjust=adjust, names=names
    )
    write_json(out_json, summary)
    markdown = render_markdown(summary)
    write_text(out_md, markdown)
    if out_html:
        write_text(out_html, render_html(markdown, f"Cohort statistics: {index} vs {reference}"))
    return summary
