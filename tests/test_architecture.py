"""The library's shape (docs/architecture.md): who may import what.

Static checks over the source, cheap and exact: they fail the moment a module reaches into
another's private names, the library imports Snakemake or argparse, or prediction starts to
depend on the training code.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "src" / "maggotflow"
SOURCES = sorted(LIBRARY.rglob("*.py")) + sorted((REPO / "workflow" / "scripts").glob("*.py")) \
    + sorted((REPO / "benchmarks").glob("*.py"))


def imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every `from module import name` and ("module", "") of `import module`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(LIBRARY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_imports_a_private_name_of_another():
    offences = [
        f"{path.relative_to(REPO)}: from {module} import {name}"
        for path in SOURCES
        for module, name in imports(path)
        if module.startswith("maggotflow") and name.startswith("_") and name != "__version__"
    ]
    assert offences == []


def test_the_library_never_imports_snakemake_and_only_the_cli_parses_arguments():
    offences = []
    for path in sorted(LIBRARY.rglob("*.py")):
        name = module_name(path)
        for module, _ in imports(path):
            if module.split(".")[0] == "snakemake":
                offences.append(f"{name} imports {module}")
            if module == "argparse" and not name.startswith("maggotflow.cli") and name != "maggotflow.backend":
                offences.append(f"{name} imports argparse (command lines live in maggotflow.cli)")
            if module.startswith("maggotflow.cli") and not (name.startswith("maggotflow.cli") or name == "maggotflow.backend"):
                offences.append(f"{name} imports {module}")
    assert offences == []


def test_prediction_needs_no_training_code():
    code = ("import sys, maggotflow.prediction, maggotflow.ensemble, maggotflow.instance; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('maggotflow'))))")
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    assert "maggotflow.prediction" in loaded
    assert not {"maggotflow.training", "maggotflow.pretraining", "maggotflow.dataset", "maggotflow.forest"} & set(loaded)


def test_the_workflow_files_load_no_torch():
    """Every cluster job parses the Snakefile: a top-level import that pulls in torch costs
    each job seconds (the model-folder check is imported where it is used)."""
    files = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    modules = set()
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():  # top level: not indented
            words = line.replace(",", " ").split()
            if line.startswith("import maggotflow"):
                modules.add(words[1])
            elif line.startswith("from maggotflow import"):  # submodules: from maggotflow import runtables
                names = [w for i, w in enumerate(words[3:], 3) if w != "as" and words[i - 1] != "as"]
                modules.update(f"maggotflow.{w}" for w in names)
            elif line.startswith("from maggotflow"):
                modules.add(words[1])
    assert "maggotflow.manifest" in modules
    code = (f"import sys; import {', '.join(sorted(modules))}; "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True).stdout.strip() == "False"


def test_rules_use_named_functions_not_lambdas():
    """An input function or resource is a named function of common.smk/runs.smk: it has a
    docstring, a name in error messages, and one home when two rules need it."""
    files = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    offences = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
                for path in files
                for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                if re.search(r"\blambda\b", line.split("#")[0])]
    assert offences == []


def test_no_test_module_imports_another():
    """Shared fixtures live in tests/conftest.py and shared helpers in tests/helpers.py."""
    offences = [f"{path.name}: {module}"
                for path in sorted((REPO / "tests").glob("test_*.py"))
                for module, _ in imports(path)
                if module.split(".")[0].startswith("test_") or module.startswith("tests.test_")]
    assert offences == []


def test_no_function_is_longer_than_80_lines():
    """A function a person can hold in their head: named steps that read top to bottom
    (docs/architecture.md). Counted from `def` to the last line, docstring included."""
    files = sorted(LIBRARY.parent.rglob("*.py")) + sorted((REPO / "workflow" / "scripts").glob("*.py"))
    offences = [f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines"
                for path in files
                for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80]
    assert offences == []
