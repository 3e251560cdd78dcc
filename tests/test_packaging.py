"""The project's own files: packaging, conda environment, README commands, CI, nbgrader config."""

from __future__ import annotations

import re
import sys

import yaml
from traitlets.config import Config

from conftest import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_agrees_with_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_block = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    project = PYPROJECT["project"]
    expected = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    assert "-e .[dev]" in pip_block
    assert set(pip_block) - {"-e .[dev]"} == expected
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python == "python" + project["requires-python"]


def test_package_sources_live_in_lib():
    assert PYPROJECT["tool"]["setuptools"]["packages"]["find"]["where"] == ["lib"]
    assert (ROOT / "lib" / "genlab" / "__init__.py").is_file()


def test_gitignore_covers_environment_and_grading_state():
    ignored = set((ROOT / ".gitignore").read_text().split())
    for entry in (
        ".venv/",
        "gradebook.db",
        "submitted/",
        "autograded/",
        "feedback/",
        "__pycache__/",
        ".pytest_cache/",
        ".ipynb_checkpoints/",
    ):
        assert entry in ignored, entry


def test_readme_quick_start_has_exactly_two_commands_and_ci_runs_the_second_and_lint():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```(?:sh|bash)?\n(.*?)```", quick, flags=re.S)
    lines = [line for block in commands for line in block.splitlines() if line.strip()]
    assert lines == ["make lab", "make test"], lines
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    assert "make lint" in ci, "CI checks style too (ruff, pinned in pyproject.toml)"


def test_makefile_targets_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = ("lab", "test", "release", "release-chapter", "collect", "grade", "feedback",
               "export", "demo-grade", "bench")  # fmt: skip
    for target in targets:
        assert re.search(rf"^{target}:", makefile, flags=re.M), target


def test_nbgrader_config_settings():
    config = Config()
    exec((ROOT / "nbgrader_config.py").read_text(), {"get_config": lambda: config})
    assert config.CourseDirectory.source_directory == "solutions"
    assert config.CourseDirectory.release_directory == "chapters"
    assert config.Execute.timeout >= 120
    assert config.Execute.raise_on_iopub_timeout is False
    assert config.OverwriteCells.add_missing_cells is True


def test_genlab_command_offers_every_classroom_step():
    import subprocess

    assert PYPROJECT["project"]["scripts"]["genlab"] == "genlab.classroom.cli:main"
    done = subprocess.run(
        [sys.executable, "-m", "genlab.classroom.cli", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    for step in ("release", "collect", "grade", "feedback", "export", "demo"):
        assert step in done.stdout, step
    readme = (ROOT / "README.md").read_text().split("## For instructors", 1)[1]
    for command in ("make collect", "make grade", "make feedback", "make export", "demo-grade"):
        assert command in readme, command
