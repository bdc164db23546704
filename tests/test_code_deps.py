"""dvc.yaml's code deps are exactly each stage's imports, and provenance hashes that code."""

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pipeline import codebase
from pipeline.cli.dvc_yaml import code_deps, dvc_yaml_problems, dvc_yaml_text
from pipeline.cli.main import main
from pipeline.codebase import code_fingerprint, import_closure
from pipeline.layout import STAGES
from tests.conftest import REPO

# What a fresh interpreter has loaded from the project after `import stages.<name>`: the
# import closure measured by Python itself, independently of pipeline/codebase.py.
LOADED = """
import importlib, json, sys
from pathlib import Path
importlib.import_module(sys.argv[1])
root = Path.cwd().resolve()
files = set()
for module in list(sys.modules.values()):
    path = getattr(module, "__file__", None)
    if path and Path(path).resolve().is_relative_to(root):
        relative = Path(path).resolve().relative_to(root)
        if relative.parts[0] in ("pipeline", "stages"):
            files.add(relative.as_posix())
print(json.dumps(sorted(files)))
"""


def loaded_by(module: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", LOADED, module],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(result.stdout))


@pytest.fixture(scope="module")
def loaded() -> dict[str, set[str]]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        found = pool.map(loaded_by, [stage.module for stage in STAGES])
    return dict(zip([stage.name for stage in STAGES], found, strict=True))


def declared_code_deps(dvc_yaml: Path) -> dict[str, set[str]]:
    """Per stage, the project source files its dvc.yaml deps name (folders expanded)."""
    declared = {}
    for name, spec in yaml.safe_load(dvc_yaml.read_text())["stages"].items():
        files: set[str] = set()
        for dep in spec["deps"]:
            if Path(dep).parts[0] not in codebase.PACKAGES:
                continue
            if (REPO / dep).is_dir():
                files |= {
                    p.relative_to(REPO).as_posix()
                    for p in (REPO / dep).rglob("*.py")
                    if "__pycache__" not in p.parts
                }
            else:
                files.add(dep)
        declared[name] = files
    return declared


def test_dvc_yaml_lists_exactly_the_files_each_stage_imports(loaded):
    declared = declared_code_deps(REPO / "dvc.yaml")
    for stage in STAGES:
        listed = declared[stage.name]
        for missing in sorted(loaded[stage.name] - listed):
            pytest.fail(f"{stage.name}: imports {missing}, which dvc.yaml does not list")
        for extra in sorted(listed - loaded[stage.name]):
            pytest.fail(f"{stage.name}: dvc.yaml lists {extra}, which it never imports")


def test_import_closure_from_the_source_agrees_with_what_python_loads(loaded):
    for stage in STAGES:
        closure = {p.as_posix() for p in import_closure(stage.module)}
        assert closure == loaded[stage.name], stage.name


def test_dvc_yaml_is_what_the_declarations_write():
    assert dvc_yaml_problems(REPO / "dvc.yaml") == []
    assert (REPO / "dvc.yaml").read_text() == dvc_yaml_text()
    result = CliRunner().invoke(main, ["dvc-yaml", "--check"])
    assert result.exit_code == 0, result.output


def test_the_check_reads_yaml_not_its_formatting(tmp_path):
    reformatted = tmp_path / "dvc.yaml"
    parsed = yaml.safe_load((REPO / "dvc.yaml").read_text())
    reformatted.write_text(yaml.safe_dump(parsed, indent=4, default_flow_style=True))
    assert dvc_yaml_problems(reformatted) == []


def test_the_check_names_the_stage_and_what_differs(tmp_path):
    parsed = yaml.safe_load((REPO / "dvc.yaml").read_text())
    generate, rpn = parsed["stages"]["generate"], parsed["stages"]["step1_rpn"]
    generate["deps"].append("pipeline/model/rpn.py")
    rpn["deps"].remove("pipeline/model/rpn.py")
    rpn["params"].remove("rpn")
    del parsed["stages"]["evaluate"]
    broken = tmp_path / "dvc.yaml"
    broken.write_text(yaml.safe_dump(parsed))
    problems = dvc_yaml_problems(broken)
    assert "generate: deps list pipeline/model/rpn.py, which it neither reads nor imports" in (
        problems
    )
    assert "step1_rpn: deps lack pipeline/model/rpn.py" in problems
    assert any(p.startswith("step1_rpn: params is [") for p in problems)
    assert "evaluate: missing" in problems
    result = CliRunner().invoke(main, ["dvc-yaml", "--check", str(broken)])
    assert result.exit_code == 1
    assert "step1_rpn: deps lack pipeline/model/rpn.py" in result.output


def test_write_makes_a_dvc_yaml_that_passes_the_check(tmp_path):
    out = tmp_path / "dvc.yaml"
    result = CliRunner().invoke(main, ["dvc-yaml", "--write", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == (REPO / "dvc.yaml").read_text()
    assert CliRunner().invoke(main, ["dvc-yaml", "--check", str(out)]).exit_code == 0


def test_a_folder_dep_only_where_the_stage_imports_all_of_it():
    for stage in STAGES:
        closure = {p.as_posix() for p in import_closure(stage.module)}
        for dep in code_deps(stage):
            if (REPO / dep).is_dir():
                inside = {
                    p.relative_to(REPO).as_posix()
                    for p in (REPO / dep).rglob("*.py")
                    if "__pycache__" not in p.parts
                }
                assert inside <= closure, (stage.name, dep)


def test_step_4_does_not_depend_on_earlier_steps_code():
    step4 = {p.as_posix() for p in import_closure("stages.step4_fast_rcnn")}
    assert "stages/step4_fast_rcnn.py" in step4
    assert not any(f.startswith("stages/step1") or f.startswith("stages/step2") for f in step4)
    assert "pipeline/model/rpn.py" not in step4


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A throw-away project tree that the closure is computed over: `write(path, text)`."""
    monkeypatch.setattr(codebase, "ROOT", tmp_path)
    for package in ("pipeline", "stages"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")

    def write(relative: str, text: str = "") -> None:
        (tmp_path / relative).write_text(text)
        codebase.import_closure.cache_clear()
        codebase.code_fingerprint.cache_clear()

    yield write
    codebase.import_closure.cache_clear()
    codebase.code_fingerprint.cache_clear()


def test_code_fingerprint_follows_the_bytes_of_the_closure(project):
    project("pipeline/helper.py", "VALUE = 1\n")
    project("pipeline/unused.py", "VALUE = 2\n")
    project("stages/demo.py", "from pipeline import helper\n")
    first = code_fingerprint("stages.demo")
    assert [p.as_posix() for p in import_closure("stages.demo")] == [
        "pipeline/__init__.py",
        "pipeline/helper.py",
        "stages/__init__.py",
        "stages/demo.py",
    ]
    project("pipeline/unused.py", "VALUE = 3\n")
    assert code_fingerprint("stages.demo") == first
    project("pipeline/helper.py", "VALUE = 1  # edited\n")
    assert code_fingerprint("stages.demo") != first


def test_lazy_imports_inside_functions_count(project):
    project("pipeline/late.py")
    project("pipeline/early.py", "def f():\n    from pipeline.late import nothing\n")
    assert Path("pipeline/late.py") in import_closure("pipeline.early")


def test_imports_for_type_checking_only_do_not_count(project):
    project("pipeline/hint.py")
    project(
        "pipeline/user.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pipeline.hint import X\n",
    )
    assert Path("pipeline/hint.py") not in import_closure("pipeline.user")


def test_an_edit_to_any_file_of_a_closure_moves_exactly_those_stages_fingerprints(
    tmp_path, monkeypatch
):
    """Over a copy of the real sources: appending a comment to a file, an `__init__.py` or a
    stage file included, changes the code hash of every stage whose closure holds it, and of
    no other."""
    for package in codebase.PACKAGES:
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    monkeypatch.setattr(codebase, "ROOT", tmp_path)

    codebase.import_closure.cache_clear()  # a comment moves no import: computed once

    def fingerprints() -> dict[str, str]:
        codebase.code_fingerprint.cache_clear()
        return {stage.name: code_fingerprint(stage.module) for stage in STAGES}

    before = fingerprints()
    holders: dict[Path, set[str]] = {}
    for stage in STAGES:
        for relative in import_closure(stage.module):
            holders.setdefault(relative, set()).add(stage.name)
    assert any(p.name == "__init__.py" for p in holders)
    for relative, stages in sorted(holders.items()):
        path = tmp_path / relative
        original = path.read_bytes()
        path.write_bytes(original + b"\n# edited\n")
        after = fingerprints()
        path.write_bytes(original)
        moved = {name for name in before if after[name] != before[name]}
        assert moved == stages, relative
    codebase.import_closure.cache_clear()
    codebase.code_fingerprint.cache_clear()
