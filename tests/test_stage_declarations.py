"""The stage declarations (pipeline/layout.py) against the params file and the code: every
params key reaches a stage or is declared to change no output, each stage reads only what runs
before it, and the packages of `pipeline/` import only downwards."""

import ast
from pathlib import Path

from pipeline import layout
from pipeline.codebase import ROOT
from tests.conftest import raw_params
from tests.test_param_reach import leaf_keys

# The subpackages and modules of `pipeline/`, lowest first: each may import only from those
# before it (or itself).
LAYERS = (
    ("errors", "seeds", "devices", "charts", "config", "layout", "distributed", "codebase"),
    ("runner",),
    ("data",),
    ("model",),
    ("evaluation",),
    ("artifacts",),
    ("training",),
    ("api",),
    ("cli",),
)
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def unit_of(module: str) -> str:
    """The subpackage (or top-level module) of `pipeline` a module belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported_units(path: Path) -> set[str]:
    """The parts of `pipeline` a file imports (type-only imports included: they are edges a
    reader follows too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = node.module.split(".")
            if names[0] == "pipeline":
                found.add(names[1] if len(names) > 1 else node.names[0].name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pipeline."):
                    found.add(alias.name.split(".")[1])
    return found


def test_every_part_of_pipeline_has_a_layer():
    units = {p.stem if p.parent.name == "pipeline" else p.parent.name
             for p in (ROOT / "pipeline").rglob("*.py")} - {"__init__"}  # fmt: skip
    assert units == set(LEVEL)


def test_no_part_of_pipeline_imports_a_higher_layer():
    upward = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        relative = path.relative_to(ROOT).with_suffix("")
        unit = unit_of(".".join(relative.parts))
        if unit == "__init__":
            continue
        for imported in imported_units(path) - {"__version__"}:
            if LEVEL[imported] > LEVEL[unit]:
                upward.append(f"{relative}: imports pipeline.{imported}")
    assert not upward, upward


def test_every_params_key_is_read_by_a_stage_or_changes_no_output():
    raw = raw_params()
    leaves = {leaf for section in raw for leaf in leaf_keys(raw, section)}
    declared = {
        leaf for stage in layout.STAGES for key in stage.params for leaf in leaf_keys(raw, key)
    }
    silent = {leaf for key in layout.NO_OUTPUT_CHANGE for leaf in leaf_keys(raw, key)}
    assert leaves - declared == silent
    assert not declared & silent


def test_each_stage_reads_only_stages_before_it_and_each_output_has_one_stage():
    for index, stage in enumerate(layout.STAGES):
        assert all(source in layout.STAGES[:index] for source in stage.reads), stage.name
    outs = [stage.out for stage in layout.STAGES]
    assert len(set(outs)) == len(outs)
    assert set(layout.LAYOUT_ONLY) <= {key for s in layout.STAGES for key in s.params}
