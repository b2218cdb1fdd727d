"""``make audit``: what the workflow is, what it would do, and what changed since the run.

    python -m dualpet.audit [--outdir results/audit] [--profile workflow/profiles/default]

Writes, for the workflow and sheet of the current directory:

* ``rulegraph.dot`` / ``rulegraph.svg`` — every rule and every edge. Snakemake's own rule
  graph is drawn from the job DAG, which has no job after a checkpoint that has not run
  and no edge through an input function it cannot evaluate yet (``match`` ->
  ``lesion_metrics`` on a fresh sheet). The edges here are the union of that graph and of
  the edges implied by the rules' file patterns (an input pattern that an output pattern,
  or a file inside an output directory, can produce); pattern-only edges are dashed.
* ``plan.tsv`` — the jobs a run would do now (rule, patient, tracer, lesion, reason), from
  ``snakemake -n``.
* ``summary.tsv`` — ``snakemake --summary``: every output with its rule, date and status.
* ``changes.tsv`` — the outputs made by other code, parameters or input than the current
  ones, one line each with the reason, from the summary's status and the job records
  (``.snakemake/metadata``): "code changed (dualpet modules of <command>)" when the code
  hash the job ran with (its ``code`` parameter) differs from the current one, else
  "parameters changed", "input changed" or "missing". (``snakemake --list-changes params``
  lists every output right after a fresh run in Snakemake 9.27, so it is not used.)
* ``README.md`` — what each file is and the counts.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

#: Snakemake's --summary status of an output that needs nothing.
OK_STATUS = "ok"


def _snakemake(args, profile, cwd, snakefile):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--workflow-profile", str(profile), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        raise SystemExit(f"audit: snakemake {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


# --------------------------------------------------------------------------- rule graph


def dag_edges(dot_text):
    """(rules, edges) of Snakemake's --rulegraph output (dot)."""
    names = dict(re.findall(r'^\s*(\d+)\[label = "([^"]+)"', dot_text, re.M))
    edges = {(names[a], names[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot_text, re.M)}
    return set(names.values()), edges


def _segment_regex(segment, constraints=True):
    """A regex for one path segment: a wildcard is its constraint (if kept) or any text."""
    out = []
    for part in re.split(r"(\{[^{}]*\})", segment):
        if part.startswith("{") and part.endswith("}"):
            name, _, constraint = part[1:-1].partition(",")
            out.append(f"(?:{constraint})" if constraint and constraints else ".+")
        else:
            out.append(re.escape(part))
    return "".join(out)


def _skeleton(segment):
    return re.sub(r"\{[^{}]*\}", "W", segment)


def _segments_match(produced, wanted):
    if "{" not in wanted:  # a literal: must satisfy the producer's constraints
        return re.fullmatch(_segment_regex(produced), wanted) is not None
    if "{" not in produced:
        return re.fullmatch(_segment_regex(wanted), produced) is not None
    return (
        re.fullmatch(_segment_regex(produced, False), _skeleton(wanted)) is not None
        or re.fullmatch(_segment_regex(wanted, False), _skeleton(produced)) is not None
    )


def produces(output, is_directory, wanted):
    """Whether ``output`` (a pattern with wildcard constraints; a directory if
    ``is_directory``) can produce a file of the input pattern ``wanted``, segment by segment."""
    out, want = output.split("/"), wanted.split("/")
    if len(want) != len(out) and not (is_directory and len(want) > len(out)):
        return False
    return all(_segments_match(a, b) for a, b in zip(out, want))


def pattern_edges(rules):
    """Edges implied by file patterns. ``rules``: name -> (input patterns, [(output
    pattern, is_directory)]); see :func:`produces`."""
    edges = set()
    for consumer, (ins, own) in rules.items():
        # the consumer's input wildcards take the constraints of its output wildcards
        constraints = dict(re.findall(r"\{(\w+),([^{}]*)\}", " ".join(o for o, _ in own)))

        def constrained(m, constraints=constraints):
            name = m.group(1)
            return f"{{{name},{constraints[name]}}}" if name in constraints else m.group(0)

        for raw in ins:
            pattern = re.sub(r"\{(\w+)\}", constrained, raw)
            for producer, (_, outs) in rules.items():
                if producer != consumer and any(produces(o, d, pattern) for o, d in outs):
                    edges.add((producer, consumer))
    return edges


def static_rules(snakefile, workdir):
    """name -> (static input patterns, [(output pattern, is_directory)]) of every rule,
    read through Snakemake's API (input functions are left to the DAG's graph)."""
    import snakemake.io as sio
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DeploymentSettings,
        OutputSettings,
        ResourceSettings,
        StorageSettings,
    )

    with SnakemakeApi(OutputSettings()) as api:
        wf = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(),
            storage_settings=StorageSettings(),
            deployment_settings=DeploymentSettings(),
            snakefile=Path(snakefile),
            workdir=Path(workdir),
        )
        out = {}
        for rule in wf._workflow.rules:
            ins = [str(f) for f in rule.input if not callable(f)]
            outs = [(str(f), bool(sio.is_flagged(f, "directory"))) for f in rule.output]
            out[rule.name] = (ins, outs)
        return out


def rulegraph_dot(rules, dag, static):
    """One graph: solid edges from the DAG, dashed ones only the patterns show."""
    order = sorted(rules)
    ids = {r: i for i, r in enumerate(order)}
    lines = [
        "digraph dualpet {",
        '    graph [rankdir=TB, fontname="sans-serif"];',
        '    node [shape=box, style="rounded", fontname="sans-serif", fontsize=10];',
    ]
    lines += [f'    {ids[r]} [label="{r}"];' for r in order]
    for a, b in sorted(dag | static):
        style = (
            "" if (a, b) in dag else ' [style=dashed, tooltip="from the file patterns (not in the current job DAG)"]'
        )
        lines.append(f"    {ids[a]} -> {ids[b]}{style};")
    return "\n".join(lines + ["}"]) + "\n"


# --------------------------------------------------------------------------- plan and changes


def parse_plan(dry_run_text):
    """(rule, patient, tracer, lesion, reason) of every job ``snakemake -n`` lists."""
    rows = []
    for block in re.split(r"\n(?=\s*\S*(?:rule|checkpoint) \w+:)", dry_run_text):
        m = re.match(r"\s*\S*(?:rule|checkpoint) (\w+):", block)
        if not m:
            continue
        wc = dict(re.findall(r"(\w+)=([^,\s]+)", (re.search(r"wildcards: (.*)", block) or [None, ""])[1]))
        reason = re.search(r"reason: (.*)", block)
        rows.append(
            {
                "rule": m.group(1),
                "patient": wc.get("patient", ""),
                "tracer": wc.get("tracer", ""),
                "lesion": wc.get("lesion", ""),
                "reason": reason.group(1).strip() if reason else "",
            }
        )
    return rows


def _record(workdir, output):
    path = Path(workdir) / ".snakemake" / "metadata" / base64.b64encode(output.encode()).decode()
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def change_reason(status, record, code_of):
    """Why an output is out of date, in words (``code_of``: CLI command -> current hash)."""
    if status.startswith("params changed") and record:
        m = re.search(r"-m dualpet ([\w-]+)", record.get("shellcmd") or "")
        if m:
            current = code_of(m.group(1))
            if f"'{current}'" not in (record.get("params") or []):
                return f"code changed (the dualpet modules of `dualpet {m.group(1)}`)"
        return "parameters changed"
    if "input" in status:
        return "input changed"
    return status


def changes(summary_rows, workdir, code_of):
    out = []
    for row in summary_rows:
        if row["status"] == OK_STATUS:
            continue
        record = _record(workdir, row["output_file"])
        out.append(
            {
                "output": row["output_file"],
                "rule": row["rule"],
                "status": row["status"],
                "reason": change_reason(row["status"], record, code_of),
                "plan": row["plan"],
            }
        )
    return out


def _tsv(path, rows, columns):
    import pandas as pd

    from dualpet.io import write_tsv

    write_tsv(path, pd.DataFrame(rows, columns=columns))


def main(argv=None):
    from dualpet.io import atomic_path, write_text
    from dualpet.provenance import code_version

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outdir", default="results/audit")
    ap.add_argument("--profile", default="workflow/profiles/default")
    ap.add_argument("--snakefile", default="Snakefile")
    a = ap.parse_args(argv)
    workdir, outdir = Path.cwd(), Path(a.outdir)
    outdir.mkdir(parents=True, exist_ok=True)

    rules, dag = dag_edges(_snakemake(["--rulegraph"], a.profile, workdir, a.snakefile))
    static = static_rules(a.snakefile, workdir)
    graph_edges = pattern_edges(static)
    dot = rulegraph_dot(rules | set(static), dag, graph_edges)
    write_text(outdir / "rulegraph.dot", dot)
    svg_note = "rulegraph.svg"
    if shutil.which("dot"):
        with atomic_path(outdir / "rulegraph.svg") as tmp:
            subprocess.run(["dot", "-Tsvg", "-o", str(tmp)], input=dot, text=True, check=True)
    else:
        svg_note = "rulegraph.svg not written: Graphviz `dot` is not installed (Debian: apt install graphviz)"

    plan = parse_plan(_snakemake(["-n"], a.profile, workdir, a.snakefile))
    _tsv(outdir / "plan.tsv", plan, ["rule", "patient", "tracer", "lesion", "reason"])

    summary_text = _snakemake(["--summary"], a.profile, workdir, a.snakefile)
    write_text(outdir / "summary.tsv", summary_text)
    lines = summary_text.strip().splitlines()
    head = lines[0].split("\t") if lines else []
    summary_rows = [dict(zip(head, line.split("\t"))) for line in lines[1:]]
    changed = changes(summary_rows, workdir, code_version)
    _tsv(outdir / "changes.tsv", changed, ["output", "rule", "status", "reason", "plan"])

    by_rule = Counter(r["rule"] for r in plan)
    reasons = Counter(c["reason"] for c in changed)
    only_static = sorted(graph_edges - dag)
    readme = [
        "# dualpet audit",
        "",
        f"- `rulegraph.dot`, {svg_note}: {len(rules | set(static))} rules, {len(dag | graph_edges)} edges "
        f"({len(only_static)} from the file patterns only, dashed: "
        + (", ".join(f"{x} -> {y}" for x, y in only_static) or "none")
        + ").",
        f"- `plan.tsv`: {len(plan)} job(s) a run would do now"
        + (": " + ", ".join(f"{r} {n}" for r, n in sorted(by_rule.items())) if plan else " (nothing to do)."),
        f"- `summary.tsv`: {len(summary_rows)} output(s) with rule, date and status.",
        f"- `changes.tsv`: {len(changed)} output(s) made by other code, parameters or input than now"
        + (": " + "; ".join(f"{n} {r}" for r, n in sorted(reasons.items())) if changed else "."),
        "",
    ]
    write_text(outdir / "README.md", "\n".join(readme))
    print("\n".join(readme))
    return 0


if __name__ == "__main__":
    sys.exit(main())
