"""The project's own source files: which of them a stage imports, and a hash of those.

A stage's code is its import closure within `pipeline/` and `stages/`, found by reading the
`import` statements of each file (every one, at any depth, so a lazy import counts too; only
those under `if TYPE_CHECKING:` do not, as they never run), plus
the `__init__.py` of every package on the way, which Python runs on import. dvc.yaml lists the
closure as the stage's code deps, and provenance records its hash, so an artifact or checkpoint
made by other code is never taken for this code's.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages")


def module_file(module: str) -> Path | None:
    """The project file defining `module`, or None for anything outside the project."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*parts)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Ids of the nodes under `if TYPE_CHECKING:`, which never run."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def _imports(path: Path, module: str) -> set[str]:
    """Modules named by the import statements of one file (submodule candidates included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_bytes(), filename=str(path))
    skipped = _type_checking_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # `from pipeline import layout` imports a module; `from x import name` does not.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@cache
def import_closure(module: str) -> tuple[Path, ...]:
    """Project files that importing `module` runs, sorted, relative to the repository root."""
    seen: dict[str, Path] = {}
    pending = [module]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        path = module_file(name)
        if path is None:
            continue
        seen[name] = path
        pending += _parents(name)
        pending += sorted(_imports(path, name))
    return tuple(sorted(p.relative_to(ROOT) for p in seen.values()))


@cache
def code_fingerprint(module: str) -> str:
    """Hash of the names and bytes of `module`'s import closure."""
    hasher = hashlib.sha256()
    for relative in import_closure(module):
        hasher.update(f"{relative.as_posix()}\0".encode())
        hasher.update(hashlib.sha256((ROOT / relative).read_bytes()).digest())
    return hasher.hexdigest()[:24]
