"""The conda environments (envs/*.yaml) agree with pyproject.toml.

Every runtime dependency and every `workflow` extra of pyproject.toml is in each
environment, under its conda-forge name, with the same lower bound (and the same upper
bound where pyproject gives one); an environment lists nothing pyproject does not know.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ENVS = sorted((REPO / "envs").glob("*.yaml"))
# pip name -> conda-forge name, where they differ.
CONDA_NAME = {"torch": "pytorch", "matplotlib": "matplotlib-base", "snakemake": "snakemake-minimal"}
CONDA_ONLY = {"python", "pip"}
REQUIRED_EXTRAS = ("workflow",)  # what the workflow's jobs need; test/forest are optional

_SPEC = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$")


def parse(spec: str) -> tuple[str, dict[str, str]]:
    """'numpy>=1.26' / 'numpy >=1.26,<3' -> ('numpy', {'>=': '1.26', '<': '3'})."""
    match = _SPEC.match(spec)
    assert match, f"cannot parse requirement {spec!r}"
    name, rest = match[1].lower().replace("_", "-"), match[2].replace(" ", "")
    bounds = {}
    for part in filter(None, rest.split(",")):
        op = re.match(r"(>=|<=|==|!=|~=|>|<|=)", part)
        assert op, f"cannot parse version constraint {part!r} of {spec!r}"
        bounds[op[1]] = part[len(op[1]):]
    return name, bounds


def pyproject_requirements() -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """(required: core + workflow extra, optional: every other extra), name -> bounds."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    required = dict(parse(s) for s in project["dependencies"])
    optional = {}
    for extra, specs in project.get("optional-dependencies", {}).items():
        target = required if extra in REQUIRED_EXTRAS else optional
        target.update(parse(s) for s in specs)
    return required, optional


def environment(path: Path) -> dict[str, dict[str, str]]:
    """name -> bounds of a conda env file, conda and pip sections together."""
    env = yaml.safe_load(path.read_text())
    found = {}
    for dep in env["dependencies"]:
        specs = dep["pip"] if isinstance(dep, dict) else [dep]
        for spec in specs:
            name, bounds = parse(spec)
            assert name not in found, f"{path.name}: {name} listed twice"
            found[name] = bounds
    return found


def test_there_is_an_environment():
    assert ENVS, "envs/ holds no environment file"


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_environment_matches_pyproject(path):
    required, optional = pyproject_requirements()
    env = environment(path)
    known = {CONDA_NAME.get(n, n): (n, b) for n, b in {**optional, **required}.items()}
    for name, bounds in required.items():
        conda = CONDA_NAME.get(name, name)
        assert conda in env, f"{path.name}: {conda} (pyproject: {name}) missing"
    for conda, bounds in env.items():
        if conda in CONDA_ONLY:
            continue
        assert conda in known, f"{path.name}: {conda} is not a dependency in pyproject.toml"
        name, wanted = known[conda]
        assert bounds == wanted, f"{path.name}: {conda} {bounds} but pyproject.toml says {name} {wanted}"


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_environment_python_matches_requires_python(path):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert environment(path)["python"] == parse("python" + project["requires-python"])[1]


def test_parse_reads_bounds_in_both_spellings():
    assert parse("snakemake>=9.20,<10") == ("snakemake", {">=": "9.20", "<": "10"})
    assert parse("snakemake-minimal >=9.20,<10") == ("snakemake-minimal", {">=": "9.20", "<": "10"})
    assert parse("pip") == ("pip", {})
