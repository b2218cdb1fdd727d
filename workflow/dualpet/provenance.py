"""Which code a workflow step runs: the dualpet modules a CLI command can import.

Snakemake reruns a job when its parameters change. The rules pass ``code_version(command)``
as a parameter, a hash of exactly the package modules the command can import (found by
reading the source, nothing is imported), so that changing those modules reruns the jobs
that use them and nothing else. The same analysis lists a command's third-party imports,
which the tests check against the rule's conda environment.
"""

from __future__ import annotations

import ast
import hashlib
import sys
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


@cache
def _imports(path):
    """(third-party top-level names, dualpet modules) imported anywhere in a file (each file
    parsed once per process: every rule's code version walks the same modules)."""
    third, own = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module.split(".")[0] == "dualpet":  # `from dualpet.stats import mixed`: a module too
                names += [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            top = name.split(".")[0]
            if top == "dualpet":
                own.add(name)
            elif top not in sys.stdlib_module_names:
                third.add(top)
    return third, own


def _module_file(name):
    base = PACKAGE.joinpath(*name.split(".")[1:])
    if (base / "__init__.py").exists():
        return base / "__init__.py"
    return base.with_suffix(".py") if base.with_suffix(".py").exists() else None


def _isolated_commands():
    """Commands run with ``--isolate-failures`` (they also run dualpet.failures)."""
    from dualpet.steps import STEPS  # standard library only, like this module

    return {command for command, step in STEPS.items() if step.isolate}


@cache
def _cli_tree():
    source = (PACKAGE / "cli.py").read_text()
    return source, ast.parse(source)


@cache
def _command_roots(command):
    """dualpet modules, third-party names and the source of the CLI functions that
    ``cli._cmd_<command>`` (and the helpers it calls) use."""
    source, tree = _cli_tree()
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    todo, seen, mods, third = [f"_cmd_{command.replace('-', '_')}"], set(), set(), set()
    if todo[0] not in funcs:
        raise KeyError(f"no dualpet command {command!r}")
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in ast.walk(funcs[name]):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dualpet"):
                mods.add(node.module)
            elif isinstance(node, ast.Import):
                third |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in funcs:
                todo.append(node.func.id)
    if command in _isolated_commands():
        mods.add("dualpet.failures")
    code = "\n".join(ast.get_source_segment(source, funcs[name]) for name in sorted(seen))
    return frozenset(mods), frozenset(third - set(sys.stdlib_module_names)), code


@cache
def command_modules(command):
    """(files of the dualpet modules, third-party import names) a command can reach."""
    roots, third, _ = _command_roots(command)
    third = set(third)
    files, todo, seen = set(), list(roots), set()
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        path = _module_file(mod)
        if path is None:
            continue
        files.add(path)
        t, own = _imports(path)
        third |= t
        todo += list(own)
    return tuple(sorted(files)), frozenset(third)


def code_version(command):
    """Short hash of the source of every dualpet module ``command`` can import."""
    h = hashlib.sha256(_command_roots(command)[2].encode())
    for path in command_modules(command)[0]:
        h.update(path.relative_to(PACKAGE).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]
