"""`frcnn dvc-yaml`: dvc.yaml, written whole from the stage declarations (`pipeline/layout.py`)
and each stage's code deps (its import closure), and a check of a dvc.yaml against them, so
that nobody keeps the stage graph, its params or its code deps by hand."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import yaml

from pipeline.codebase import ROOT, import_closure
from pipeline.errors import FrcnnError
from pipeline.layout import NO_OUTPUT_CHANGE, STAGES, Stage, live_log

HEADER = "".join(
    f"# {line}\n"
    for line in textwrap.wrap(
        "Written by `frcnn dvc-yaml --write` from pipeline/layout.py: edit the declarations "
        "there. Each stage lists exactly the params keys it reads and, as code deps, exactly "
        "the project files it imports, so a change reruns only what depends on it; its "
        "artifact records the same params. No stage declares "
        f"{', '.join(NO_OUTPUT_CHANGE)}: they change no output.",
        width=96,
    )
)


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


def stage_entry(stage: Stage) -> dict[str, Any]:
    """One stage of dvc.yaml: its command, deps (sources, inputs, code), params and outputs."""
    entry: dict[str, Any] = {
        "cmd": f"python -m {stage.module}",
        "deps": [*stage.sources, *(r.out.as_posix() for r in stage.reads), *code_deps(stage)],
    }
    if stage.params:
        entry["params"] = list(stage.params)
    folder = stage.out.as_posix()
    entry["outs"] = [f"{folder}/{o}" for o in stage.outs] if stage.outs else [folder]
    if stage.metrics:
        entry["metrics"] = [{f"{folder}/{m}": {"cache": False}} for m in stage.metrics]
    plots = {f"{folder}/{p}": spec for p, spec in stage.plots.items()}
    if stage.live:
        live = live_log(stage).as_posix()
        plots = {f"{live}/plots/metrics": {"x": "step"}, f"{live}/plots/images": None}
    if plots:
        entry["plots"] = [p if spec is None else {p: dict(spec)} for p, spec in plots.items()]
    return entry


def dvc_yaml() -> dict[str, Any]:
    """The whole of dvc.yaml, as parsed YAML."""
    return {"stages": {stage.name: stage_entry(stage) for stage in STAGES}}


def dvc_yaml_text() -> str:
    return HEADER + yaml.safe_dump(dvc_yaml(), sort_keys=False, width=100)


def read_dvc_yaml(path: Path) -> dict[str, Any]:
    try:
        parsed = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise FrcnnError(f"{path}: cannot read it ({exc})") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("stages"), dict):
        raise FrcnnError(f"{path}: no `stages` mapping")
    return parsed


def dvc_yaml_problems(path: Path) -> list[str]:
    """One line per stage and field where the dvc.yaml at `path` differs from the one the
    declarations and imports make (whatever its formatting and comments)."""
    found, wanted = read_dvc_yaml(path)["stages"], dvc_yaml()["stages"]
    problems = [f"{name}: no stage of layout.py" for name in found if name not in wanted]
    for name, entry in wanted.items():
        if name not in found:
            problems.append(f"{name}: missing")
            continue
        for field in sorted(set(entry) | set(found[name])):
            have, want = found[name].get(field), entry.get(field)
            if field == "deps" and isinstance(have, list):
                for dep in sorted(set(want) - set(have)):
                    problems.append(f"{name}: deps lack {dep}")
                for dep in sorted(set(have) - set(want)):
                    problems.append(f"{name}: deps list {dep}, which it neither reads nor imports")
            elif have != want:
                problems.append(f"{name}: {field} is {have!r}, the declaration makes {want!r}")
    return problems
