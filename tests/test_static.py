"""Static checks: per-rule conda envs list what each rule imports, pinned like
pyproject.toml; the workflow is lint-clean and snakefmt-formatted; config and demo
sheets are consistent. (Conda channels are unreachable on the CI machine, so the env
files are kept correct by these checks instead of by building them.)"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import REPO

#: import name -> distribution name (conda-forge and PyPI agree for these)
DIST = {"SimpleITK": "simpleitk", "skimage": "scikit-image", "yaml": "pyyaml", "PIL": "pillow"}
#: PyPI distribution -> conda-forge package, where their names differ
CONDA = {"isal": "python-isal"}


def _command_imports(command):
    """Third-party packages a `dualpet COMMAND` may import (transitively, function-level too)."""
    from dualpet.provenance import command_modules

    return {CONDA.get(DIST.get(n, n), DIST.get(n, n)) for n in command_modules(command)[1]}


def _rule_blocks():
    """(rule file, rule name, the rule's text) of every rule and checkpoint in workflow/rules."""
    out = []
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=(?:checkpoint|rule) )", smk.read_text()):
            m = re.match(r"(?:checkpoint|rule) (\w+):", block)
            if m:
                out.append((smk, m.group(1), block))
    return out


def _rules():
    """rule name -> (env file, dualpet command) parsed from the rule files."""
    out = {}
    for smk, name, block in _rule_blocks():
        env = re.search(r'conda:\s*\n\s*"([^"]+)"', block)
        cmd = re.search(r'step_shell\(\s*"([\w-]+)"', block) or re.search(r"-m dualpet ([\w-]+)", block)
        out[name] = ((smk.parent / env.group(1)).resolve() if env else None, cmd.group(1) if cmd else None)
    return out


def _pyproject_ranges():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {}
    for d in deps:
        m = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", d)
        out[m.group(1).lower()] = m.group(2).replace(" ", "")
    return out


def _env_ranges(path):
    out = {}
    for dep in yaml.safe_load(path.read_text())["dependencies"]:
        name, _, spec = dep.partition(" ")
        out[name.lower()] = spec.replace(" ", "")
    return out


RULES = _rules()


def test_every_rule_has_log_benchmark_resources_threads_env():
    for _, name, block in _rule_blocks():
        for directive in ("log:", "benchmark:", "resources:", "threads:", "conda:"):
            assert directive in block, f"rule {name} lacks {directive}"
    assert len(RULES) >= 8


@pytest.mark.parametrize("rule", sorted(RULES))
def test_env_lists_what_the_rule_imports_with_pyproject_pins(rule):
    env, command = RULES[rule]
    assert env is not None and env.exists(), f"rule {rule}: env file {env}"
    assert command, f"rule {rule} does not call {{PYTHON}} -m dualpet"
    listed = _env_ranges(env)
    needed = _command_imports(command)
    missing = needed - set(listed)
    assert not missing, f"rule {rule} ({command}) imports {sorted(missing)}, not in {env.name}"
    pins = {CONDA.get(name, name): spec for name, spec in _pyproject_ranges().items()}
    for name, spec in listed.items():
        if name != "python":
            assert pins.get(name) == spec, f"{env.name}: {name} {spec} differs from pyproject ({pins.get(name)})"


#: Lint parses the workflow: with a sheet whose study folders exist (the demo's appear with `make demo`).
LINT_CONFIG = ["--configfile", "tests/data/lint/config.yaml"]


def test_snakemake_lint_clean(tool_env):
    proc = subprocess.run(["snakemake", "--lint", *LINT_CONFIG], cwd=REPO, capture_output=True, text=True, env=tool_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakefmt_formatted(tool_env):
    files = ["Snakefile", *map(str, sorted((REPO / "workflow" / "rules").glob("*.smk")))]
    proc = subprocess.run(["snakefmt", "--check", *files], cwd=REPO, capture_output=True, text=True, env=tool_env)
    assert proc.returncode == 0, proc.stderr


def test_python_ruff_clean(tool_env):
    """Ruff's lint and format (pyproject.toml) hold for every Python file (make lint runs the same)."""
    for cmd in (["ruff", "check", "."], ["ruff", "format", "--check", "."]):
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=tool_env)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_config_validates_with_defaults():
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    minimal = {"studies": "x.tsv"}
    validate(minimal, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    assert minimal["detection"]["factor"] == 2.0 and minimal["voi"]["isocontour"] == 0.41
    assert minimal["reference_tracer"] == "fdg"


def test_demo_sheets_match_the_generator_and_makefile():
    """config/studies.tsv is what `make demo` generates, seen from config/."""
    from dualpet.synth import patient_id

    n = int(re.search(r"DEMO_PATIENTS \?= (\d+)", (REPO / "Makefile").read_text()).group(1))
    rows = [line.split("\t") for line in (REPO / "config" / "studies.tsv").read_text().splitlines()[1:]]
    expected = [
        [patient_id(i), t, f"../results/demo_input/dicom/{patient_id(i)}/{t}", "", ""]
        for i in range(1, n + 1)
        for t in ("fdg", "pentixafor")
    ]
    assert rows == expected
    clinical = (REPO / "config" / "clinical.tsv").read_text().splitlines()
    assert len(clinical) == n + 1 and clinical[0].startswith("patient\t")


@pytest.mark.slow
def test_demo_clinical_sheet_is_the_generators(tmp_path):
    """config/clinical.tsv is exactly what `make demo`'s generator writes for its patients
    (issue 24: it had drifted from the generated cohort)."""
    from dualpet.synth import generate_cohort

    makefile = (REPO / "Makefile").read_text()
    n = int(re.search(r"DEMO_PATIENTS \?= (\d+)", makefile).group(1))
    seed = int(re.search(r"DEMO_SEED \?= (\d+)", makefile).group(1))
    generate_cohort(tmp_path, n_patients=n, seed=seed, size="demo", log=lambda m: None)
    assert (REPO / "config" / "clinical.tsv").read_text() == (tmp_path / "clinical.tsv").read_text()


def test_bad_sheet_rows_are_refused(tmp_path, tool_env):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("studies: s.tsv\n")

    def dry_run(sheet):
        (tmp_path / "s.tsv").write_text(sheet)
        cmd = ["snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=tool_env)
        return proc.returncode, proc.stdout + proc.stderr

    rc, out = dry_run("patient\ttracer\tdicom_dir\nJohn Doe\tfdg\td\nJohn Doe\tpentixafor\td\n")
    assert rc != 0 and "s.tsv, line 2, column patient: 'John Doe' is not valid" in out
    rc, out = dry_run("patient\ttracer\tdicom_dir\nP1\tfdg\td\n")
    assert rc != 0 and "s.tsv, line(s) 2: patient(s) lack a study of both tracers" in out
    assert "(P1 has no pentixafor row): add the missing row" in out
    assert "Traceback" not in out and out.count("dualpet:") == 1  # one line, no traceback
    rc, out = dry_run("patient\ttracer\tdicom_dir\nP1\tfdg\td\n\nP1\tfdg\te\nP1\tpentixafor\td\n")
    assert rc != 0 and "s.tsv, lines 2, 4: several rows" in out  # blank lines keep the numbering
    rc, out = dry_run("patient\ttracer\tdicom_dir\n")
    assert rc != 0 and "s.tsv: no rows below the header" in out
    rc, out = dry_run("patient,tracer,dicom_dir\nP1,fdg,d\n")
    assert rc != 0 and "s.tsv, line 1: column(s) ['patient', 'tracer', 'dicom_dir'] missing" in out
    # a mask path with braces (Snakemake would read them as wildcards: a WildcardError for the run)
    rc, out = dry_run("patient\ttracer\tdicom_dir\tlesion_mask\nP1\tfdg\td\tm{word}.nii.gz\nP1\tpentixafor\td\t\n")
    assert rc != 0 and "s.tsv, line 2, column lesion_mask: 'm{word}.nii.gz' is not valid" in out and "{ or }" in out
    assert "WildcardError" not in out
    (tmp_path / "s.tsv").write_bytes(b"patient\ttracer\tdicom_dir\nP1\tfdg\td/M\xfcller\n")  # Latin-1, not UTF-8
    proc = subprocess.run(
        ["snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n"],
        capture_output=True,
        text=True,
        env=tool_env,
    )
    assert proc.returncode != 0 and "s.tsv, line 2: not UTF-8 text (byte 0xfc)" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ("detecton:\n  method: local\n", "unknown setting 'detecton' (did you mean 'detection'?)"),
        ("detection:\n  methd: local\n", "unknown setting 'detection.methd' (did you mean 'method'?)"),
        ("detection:\n  method: lokal\n", "detection.method is 'lokal'; it must be one of local, background"),
        ("matching:\n  tolerance_mm: 15 mm\n", "matching.tolerance_mm: '15 mm' is not of type 'number'"),
        ("voi:\n  isocontour: 2\n", "voi.isocontour: 2 is greater than or equal to the maximum of 1"),
    ],
)
def test_config_mistakes_are_one_line_each(tmp_path, tool_env, settings, expected):
    """Issue 24: a misspelt setting, a value outside its choices or range, or one of the wrong
    type is one line naming the setting and what would be right, not the schema dumped by
    Snakemake's validate, and nothing runs."""
    (tmp_path / "d").mkdir()
    (tmp_path / "s.tsv").write_text("patient\ttracer\tdicom_dir\nP1\tfdg\td\nP1\tpentixafor\td\n")
    base = "studies: s.tsv\nreference_tracer: fdg\nindex_tracer: pentixafor\n"
    (tmp_path / "c.yaml").write_text(base + settings)
    cmd = ["snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--configfile", "c.yaml", "-n"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=tool_env, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and f"dualpet: config c.yaml: {expected}" in out, out
    assert "Failed validating" not in out and "Traceback" not in out and len(out.strip().splitlines()) == 1, out


def test_readme_gives_the_two_commands():
    text = (REPO / "README.md").read_text()
    assert "make demo" in text and "make test" in text
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_results_are_not_committed():
    ignore = (REPO / ".gitignore").read_text()
    assert "results/*" in ignore and Path(REPO / "results" / ".gitkeep").exists()


def test_code_version_tracks_the_modules_a_command_uses(tmp_path, monkeypatch):
    """A change to a module reruns the rules whose command imports it, and only those."""
    import shutil

    from dualpet import provenance

    pkg = tmp_path / "dualpet"
    shutil.copytree(REPO / "workflow" / "dualpet", pkg)
    monkeypatch.setattr(provenance, "PACKAGE", pkg)
    for cache in (provenance.command_modules, provenance._command_roots, provenance._imports, provenance._cli_tree):
        cache.cache_clear()
    before = {c: provenance.code_version(c) for c in ("convert", "stats", "lesion-metrics")}
    (pkg / "stats" / "inference.py").write_text((pkg / "stats" / "inference.py").read_text() + "\n# changed\n")
    for cache in (provenance.command_modules, provenance._command_roots, provenance._imports, provenance._cli_tree):
        cache.cache_clear()
    after = {c: provenance.code_version(c) for c in before}
    assert after["stats"] != before["stats"]
    assert after["convert"] == before["convert"] and after["lesion-metrics"] == before["lesion-metrics"]
    for cache in (provenance.command_modules, provenance._command_roots, provenance._imports, provenance._cli_tree):
        cache.cache_clear()


def test_every_rule_passes_its_code_version():
    blocks = {name: block for _, name, block in _rule_blocks()}
    for rule, (_, command) in RULES.items():
        assert f'code=code_version("{command}")' in blocks[rule], rule


def test_license_and_citation_agree_with_pyproject():
    """A LICENSE file for pyproject's license, and a CITATION.cff of the same version."""
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "MIT" and (REPO / "LICENSE").read_text().startswith("MIT License")
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["version"] == meta["version"] and cff["license"] == meta["license"]


def test_every_cli_option_has_help_with_units():
    """Issue 24: every option of every subcommand says what it is; lengths say mm."""
    import argparse

    from dualpet.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, sp in sub.choices.items():
        for action in sp._actions:
            if not action.option_strings or "-h" in action.option_strings:
                continue
            assert action.help and len(action.help) > 10, (command, action.option_strings)
            if action.option_strings[-1].endswith("-mm"):
                assert "mm" in action.help, (command, action.option_strings)


def test_cli_defaults_are_the_schemas():
    """Issue 25: every subcommand's option for a config setting takes the schema's default
    (parsed with only the required arguments, as a step run alone would be), and no option
    named like a setting carries a default of its own."""
    import argparse
    import json

    from dualpet import settings
    from dualpet.cli import _Setting, _SettingSwitch, build_parser

    leaves, stack = set(), [("", settings.schema())]
    while stack:
        prefix, node = stack.pop()
        for key, entry in node.get("properties", {}).items():
            if "properties" in entry:
                stack.append((f"{prefix}{key}.", entry))
            else:
                leaves.add(key)
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    checked = 0
    for command, sp in sub.choices.items():
        required = []
        for action in sp._actions:
            if action.required or (not action.option_strings and action.nargs is None):
                required += ([action.option_strings[-1]] if action.option_strings else []) + ["x"]
        args = parser.parse_args([command, *required])
        for action in sp._actions:
            if isinstance(action, (_Setting, _SettingSwitch)):
                expected = settings.default(action.setting)
                value = getattr(args, action.dest)
                assert (value if action.encode is None else json.loads(value)) == expected, (command, action.dest)
                checked += 1
            elif action.option_strings:
                name = action.dest.removeprefix("primary_")
                # the sheets' paths are inputs of their steps; --review and --seeds carry the rows
                assert name not in leaves or name in {"studies", "clinical", "review", "seeds"}, (command, name)
    assert checked >= 15


def test_config_reference_is_generated_from_the_schema():
    """docs/config.md is what `make docs` writes from the config schema: change the schema,
    run `make docs`. Every setting of the schema appears in it with a meaning."""
    import yaml

    from dualpet.configdoc import render

    text = (REPO / "docs" / "config.md").read_text()
    assert text == render(), "docs/config.md is stale: run `make docs`"
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) >= 30 and not [r for r in rows if r.rstrip().endswith("|  |")]  # none without a meaning
    assert all(f"`{k}" in text for k in schema["properties"])


def test_every_command_in_the_docs_exists_as_written():
    """Issue 24: each command in the shell blocks of the README and docs/ runs as written
    from a fresh shell in the repository: `make` targets that the Makefile has, and the
    venv's tools by path (`.venv/bin/...`), dualpet with a subcommand it has."""
    import argparse

    from dualpet.cli import build_parser

    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    tools = {"snakemake", "dualpet", "pip", "python"}
    checked = 0
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for block in re.findall(r"^```(?:bash|sh)\n(.*?)^```", doc.read_text(), re.S | re.M):
            for line in block.splitlines():
                cmd = line.split("  #")[0].strip()
                if not cmd or cmd.startswith(("#", "--")):
                    continue  # a comment, or the options of the line above
                words = cmd.split()
                if words[0] == "make":
                    assert words[1] in targets, f"{doc.name}: `{cmd}`: no such make target"
                else:
                    assert words[0].startswith(".venv/bin/"), f"{doc.name}: `{cmd}`: call the venv's tools by path"
                    tool = words[0].removeprefix(".venv/bin/")
                    assert tool in tools, f"{doc.name}: `{cmd}`"
                    if tool == "dualpet":
                        assert words[1] in sub.choices, f"{doc.name}: `{cmd}`: no such subcommand"
                checked += 1
    assert checked >= 15


#: The longest a function's code may be (lines from its first statement after the docstring
#: to its end): the code review of issue 25 counted functions over 60 lines.
MAX_FUNCTION_LINES = 60


def test_no_function_is_longer_than_a_screen():
    import ast

    long = []
    for path in sorted((REPO / "workflow" / "dualpet").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            body = node.body
            if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and len(body) > 1:
                body = body[1:]  # the docstring does not count
            lines = node.end_lineno - body[0].lineno + 1
            if lines > MAX_FUNCTION_LINES:
                long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "split these functions:\n" + "\n".join(long)


def _package_imports():
    """Per module of the package (dotted name): the package modules it imports (at any
    level, lazy imports in functions included) and the private names it takes from others."""
    import ast

    root = REPO / "workflow"
    modules = {}
    for path in (root / "dualpet").rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def owner(name):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph, private = {m: set() for m in modules}, []
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dualpet"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    target = full if full in modules else owner(node.module)
                    graph[module].add(target)
                    if alias.name.startswith("_") and not alias.name.startswith("__") and target != module:
                        private.append(f"{module} imports {full}")
            elif isinstance(node, ast.Import):
                graph[module] |= {owner(a.name) for a in node.names if a.name.startswith("dualpet")}
        graph[module].discard(module)
    return graph, private


def test_no_import_cycle_and_no_private_import():
    """Issue 25: no module imports another's private name, and no two modules import each
    other, directly or round a longer loop (lazy imports inside functions count: they hide
    a cycle, they do not remove it)."""
    import graphlib

    graph, private = _package_imports()
    assert not private
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle: {' -> '.join(err.args[1])}")


#: The margins of docs/hpc.md: memory twice the measured peak (at least 500 MB), run time
#: ten times the longest job (at least 5 min); a declaration may ask up to twice that.
MEM_MARGIN, MIN_MEM_MB, TIME_MARGIN, MIN_RUNTIME_MIN, MAX_OVER = 2.0, 500, 10.0, 5, 2.0
#: Rules whose needs grow with the cohort, not with the patient the benchmark measures.
COHORT_RULES = {"cohort", "figures", "stats", "check_cohort"}


def _declared_resources():
    """Per rule: its declared ``mem_mb`` and ``runtime`` with the default config (as Snakemake
    evaluates them: a conditional declaration takes the default method's value)."""
    out = {}
    for _, name, block in _rule_blocks():
        mem, runtime = re.search(r"mem_mb=(\d+)", block), re.search(r"runtime=(\d+)", block)
        if mem and runtime:
            out[name] = (int(mem.group(1)), int(runtime.group(1)))
    return out


def test_declared_resources_cover_the_measured_patient():
    """Issue 27: each rule's mem_mb and runtime cover bench_patient.py's clinical-size figures
    with the stated margins, and do not ask a cluster for much more than that."""
    import json
    import math

    measured = json.loads((REPO / "tests" / "data" / "bench_patient_clinical.json").read_text())["rules"]
    declared = _declared_resources()
    assert set(measured) <= set(declared), set(measured) - set(declared)
    for rule, m in measured.items():
        mem, runtime = declared[rule]
        need_mem = max(MIN_MEM_MB, MEM_MARGIN * m["max_rss_mb"])
        need_min = max(MIN_RUNTIME_MIN, math.ceil(TIME_MARGIN * m["max_job_wall_s"] / 60))
        assert mem >= need_mem and runtime >= need_min, (rule, mem, runtime, need_mem, need_min)
        if rule not in COHORT_RULES:
            assert mem <= MAX_OVER * need_mem + 100 and runtime <= MAX_OVER * need_min, (rule, mem, runtime)


def _declared_priorities():
    out = {}
    for _, name, block in _rule_blocks():
        priority = re.search(r"priority: (\d+)", block)
        out[name] = int(priority.group(1)) if priority else None
    return out


def test_priorities_start_the_longest_chain_first(tool_env):
    """Each rule's priority ranks it by the longest chain of work it starts (its own measured
    job time plus the longest path after it in the rule graph, bench_patient.py's clinical
    figures), so that with cores short the organ maps are not left waiting behind the
    registration. Chains within 1 s of each other may come in either order: a 2-core run's
    job times vary by about 10 % (~1 s on the long rules) between runs."""
    import json
    from functools import cache

    measured = json.loads((REPO / "tests" / "data" / "bench_patient_clinical.json").read_text())["rules"]
    proc = subprocess.run(
        ["snakemake", "--rulegraph", *LINT_CONFIG], cwd=REPO, capture_output=True, text=True, env=tool_env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = dict(re.findall(r'(\d+)\[label = "(\w+)"', proc.stdout))
    edges = {(names[a], names[b]) for a, b in re.findall(r"(\d+) -> (\d+)", proc.stdout)}
    # A plan made before the checkpoint has run shows match -> patient_table; the lesion
    # jobs sit between them.
    assert ("match", "patient_table") in edges
    edges |= {("match", "lesion_metrics"), ("lesion_metrics", "patient_table")}
    priority = _declared_priorities()
    assert all(v is not None for v in priority.values()), priority
    assert set(measured) <= set(priority) and set(measured) <= set(names.values()) | {"lesion_metrics"}

    @cache
    def chain(rule):
        return measured.get(rule, {}).get("max_job_wall_s", 0.0) + max(
            (chain(b) for a, b in edges if a == rule), default=0.0
        )

    for a in measured:
        for b in measured:
            if chain(a) > chain(b) + 1.0:
                assert priority[a] > priority[b], (a, round(chain(a), 1), b, round(chain(b), 1), priority)
