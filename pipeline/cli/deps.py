"""`frcnn deps`: each stage's code deps, derived from its imports, as dvc.yaml should list them,
and a check of dvc.yaml against them (so nobody keeps those lists by hand)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.codebase import PACKAGES, ROOT, import_closure
from pipeline.errors import FrcnnError
from pipeline.layout import STAGES, Stage


def _files_under(folder: Path) -> set[Path]:
    return {
        p.relative_to(ROOT)
        for p in (ROOT / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def code_deps(stage: Stage) -> list[str]:
    """The stage's import closure, with a folder in place of its files where the stage imports
    every file in it (DVC hashes a folder dep whole)."""
    files = set(import_closure(stage.module))
    deps: list[str] = []
    covered: set[Path] = set()
    folders = sorted({parent for f in files for parent in f.parents if parent != Path(".")})
    for folder in sorted(folders, key=lambda f: len(f.parts)):
        if any(folder.is_relative_to(c) for c in covered):
            continue
        inside = _files_under(folder)
        if inside and inside <= files:
            covered.add(folder)
            deps.append(folder.as_posix())
    deps += [f.as_posix() for f in files if not any(f.is_relative_to(c) for c in covered)]
    return sorted(deps)


def declared_code_deps(dvc_yaml: Path) -> dict[str, set[Path]]:
    """Per stage, the project source files its dvc.yaml deps name (folders expanded)."""
    try:
        stages: dict[str, Any] = yaml.safe_load(dvc_yaml.read_text())["stages"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise FrcnnError(f"{dvc_yaml}: cannot read its stages ({exc})") from None
    declared = {}
    for name, spec in stages.items():
        files: set[Path] = set()
        for dep in spec.get("deps", []):
            path = Path(dep)
            if path.parts and path.parts[0] in PACKAGES:
                files |= _files_under(path) if (ROOT / path).is_dir() else {path}
        declared[name] = files
    return declared


def deps_problems(dvc_yaml: Path) -> list[str]:
    """One line per stage and file where dvc.yaml and the imports disagree."""
    declared = declared_code_deps(dvc_yaml)
    problems = []
    for stage in STAGES:
        if stage.name not in declared:
            problems.append(f"{stage.name}: not in {dvc_yaml}")
            continue
        imported = set(import_closure(stage.module))
        for missing in sorted(imported - declared[stage.name]):
            problems.append(f"{stage.name}: imports {missing.as_posix()}, not in its deps")
        for extra in sorted(declared[stage.name] - imported):
            problems.append(f"{stage.name}: deps list {extra.as_posix()}, which it never imports")
    return problems


def format_deps() -> str:
    """The code-deps blocks of every stage, ready to paste into dvc.yaml."""
    lines = []
    for stage in STAGES:
        lines += [f"  {stage.name}:", "    deps:"]
        lines += [f"      - {dep}" for dep in code_deps(stage)]
    return "\n".join(lines)


def _is_code(dep: str) -> bool:
    return Path(dep).parts[0] in PACKAGES if dep else False


def rewrite_code_deps(text: str) -> str:
    """dvc.yaml's text with each stage's code deps replaced by its import closure; data deps,
    comments and everything else kept as they are."""
    wanted = {stage.name: code_deps(stage) for stage in STAGES}
    out: list[str] = []
    stage, in_deps = None, False
    for line in text.splitlines():
        if line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith(":"):
            stage, in_deps = line.strip()[:-1], False
        elif line.startswith("    ") and not line.startswith("     "):
            if in_deps and stage in wanted:
                out += [f"      - {dep}" for dep in wanted.pop(stage)]
            in_deps = line.strip() == "deps:"
        elif in_deps and line.startswith("      - ") and _is_code(line[8:].strip()):
            continue
        out.append(line)
    if in_deps and stage in wanted:
        out += [f"      - {dep}" for dep in wanted.pop(stage)]
    return "\n".join(out) + "\n"
