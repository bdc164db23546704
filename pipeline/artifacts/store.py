"""Reading an artifact: `open_artifact` refuses anything incomplete, damaged, stale or made by
another stage, and `verify_artifact` hashes every file against the manifest its commit wrote.
The readers of each kind of artifact (`pipeline/artifacts/*.py`) build on `ArtifactReader`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import zarr

from pipeline.artifacts.integrity import CheckedGroup, check_present, verify
from pipeline.artifacts.provenance import FORMAT_VERSION, check_expected
from pipeline.errors import ArtifactError
from pipeline.layout import Stage

R = TypeVar("R", bound="ArtifactReader")


class ArtifactReader:
    """Base of the artifact readers: pickled as the arguments that open them (paths), so a
    DataLoader worker, forked or spawned, opens its own Zarr handles instead of copies."""

    reopen_args: tuple
    fingerprint: str

    @classmethod
    def of(cls: type[R], source: Stage, expect: Mapping[str, Any]) -> R:
        """The output of `source`, checked against `expect` (see `pipeline/artifacts/reads.py`)."""
        return cls(source.out, expect=expect)

    def __reduce__(self) -> tuple:
        return type(self), self.reopen_args

    def hold_in_memory(self, *names: str) -> None:
        """Replace these arrays by their whole content, read once (see `holds_in_memory`)."""
        for name in names:
            setattr(self, name, getattr(self, name)[...])


def open_artifact(
    path: str | Path, stage: str, expect: Mapping[str, Any] | None = None
) -> CheckedGroup:
    """Open a finished artifact made by `stage`, refusing anything stale, incomplete or damaged.

    `expect` maps dotted attribute keys (e.g. "params.anchors") to the values this reader needs.
    """
    path = Path(path)
    fix = f"run `dvc repro {stage}`"
    if not path.exists():
        raise ArtifactError(f"{path}: not found; {fix} to build it")
    try:
        group = zarr.open_group(path, mode="r")
        attrs = group.attrs.asdict()
    except (FileNotFoundError, ValueError, KeyError, json.JSONDecodeError):
        raise ArtifactError(f"{path}: not a Zarr group written by this pipeline; {fix}") from None
    if attrs.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: artifact format {attrs.get('format_version')!r}, this code reads "
            f"{FORMAT_VERSION}; run `dvc repro -f {stage}`"
        )
    if attrs.get("stage") != stage:
        raise ArtifactError(f"{path}: made by stage {attrs.get('stage')!r}, expected {stage!r}")
    if attrs.get("complete") is not True:
        raise ArtifactError(f"{path}: incomplete (its stage did not finish); {fix}")
    restore = f"run `dvc checkout {path}` or `dvc repro -f {stage}`"
    manifest = attrs.get("manifest")
    if not isinstance(manifest, Mapping) or not manifest:  # nothing to check its files against
        raise ArtifactError(f"{path}: no manifest of its files, so it cannot be checked; {restore}")
    check_present(path, manifest, restore)
    check_expected(path, attrs, expect, fix)
    return CheckedGroup(group, path, restore)


def verify_artifact(path: str | Path) -> tuple[int, list[str]]:
    """The number of data files of a finished artifact, and every one of them that is missing,
    damaged (hashed against the manifest its commit recorded) or not written by its stage."""
    path = Path(path)
    try:
        attrs = zarr.open_group(path, mode="r").attrs.asdict()
    except (FileNotFoundError, ValueError, KeyError, json.JSONDecodeError):
        raise ArtifactError(f"{path}: not a Zarr group written by this pipeline") from None
    if attrs.get("complete") is not True or "manifest" not in attrs:
        raise ArtifactError(f"{path}: not a finished artifact (no manifest of its files)")
    return len(attrs["manifest"]), verify(path, attrs["manifest"])
