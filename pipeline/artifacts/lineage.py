"""Whether an artifact was made from the artifacts that hold its inputs' places now.

Each artifact records the fingerprints of its inputs. A reader that checked only the params an
input records would take, say, RPN weights trained on another dataset's anchor targets beside
this dataset's images: so a reader also walks the inputs an artifact recorded, and theirs, and
compares each with the artifact at that place in the project now. Only artifacts at their
layout place are walked (a file elsewhere has no project around it to compare with)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import torch
import zarr

from pipeline.errors import ArtifactError
from pipeline.layout import BY_NAME


def check_lineage(path: Path, stage: str, inputs: Mapping[str, str]) -> None:
    """Refuse the `stage` output at `path` if an input it (or an input of an input) records is
    no longer the artifact at that input's place."""
    root = _project_root(path, stage)
    if root is None:
        return
    pending, seen = [(path, dict(inputs))], set()
    while pending:
        artifact, recorded = pending.pop()
        for name, fingerprint in recorded.items():
            source = BY_NAME.get(name)
            if source is None:
                continue
            found = _recorded_at(root / source.out)
            if found is None:  # not there: nothing to compare with (DVC rebuilds it)
                continue
            if found[0] != fingerprint:
                raise ArtifactError(
                    f"{artifact}: stale, made from another {source.out} than the one there "
                    "now; run `dvc repro`"
                )
            if source.out not in seen:
                seen.add(source.out)
                pending.append((source.out, found[1]))


def _project_root(path: Path, stage: str) -> Path | None:
    known = BY_NAME.get(stage)
    if known is None:
        return None
    parts, out = Path(path).absolute().parts, known.out.parts
    if parts[-len(out) :] != out:
        return None
    return Path(*parts[: -len(out)])


def _recorded_at(path: Path) -> tuple[str, dict[str, str]] | None:
    """(fingerprint, recorded inputs) of the artifact at `path`, None if there is none."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return _recorded(path.absolute(), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=64)
def _recorded(path: Path, mtime_ns: int, size: int) -> tuple[str, dict[str, str]] | None:
    """Read once per version of a file (the key holds its mtime and size)."""
    try:
        if path.is_dir():
            attrs = zarr.open_group(path, mode="r").attrs.asdict()
        else:  # memory-mapped: only the provenance is read, not the weights
            attrs = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not an artifact (yet): its own reader says what is wrong with it
        return None
    if not isinstance(attrs, Mapping) or not isinstance(attrs.get("fingerprint"), str):
        return None
    return attrs["fingerprint"], dict(attrs.get("inputs") or {})
