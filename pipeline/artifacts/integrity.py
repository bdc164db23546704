"""Integrity of an artifact's bytes: what was written, and whether it is still there intact.

Zarr reads a missing chunk or shard file as fill values, so a deleted file would silently read
as zeros. `commit` therefore records a manifest of every data file (size and SHA-256); a reader
checks at open that each file is there with its size (a stat per file, cheap), and every chunk
carries a CRC32C that zarr checks as it decodes, so flipped bytes fail the read of that chunk.
`verify` hashes every file against the manifest, for `frcnn verify`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zarr

from pipeline.errors import ArtifactError

METADATA = "zarr.json"  # metadata files hold the manifest itself, so they are not in it


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != METADATA)


def manifest_of(folder: Path) -> dict[str, list]:
    """{relative path: [bytes, sha256]} of every data file of a Zarr group."""
    return {
        p.relative_to(folder).as_posix(): [p.stat().st_size, _sha256(p)] for p in data_files(folder)
    }


def _where(key: str) -> str:
    """'features/c/3/0/0/0' -> "array 'features', shard c/3/0/0/0"."""
    array, _, chunk = key.partition("/")
    return f"array '{array}', shard {chunk}"


def absent_files(path: Path, manifest: Mapping[str, Any]) -> dict[str, str]:
    """{manifest key: what is wrong} for each data file missing or of another size than was
    written: a stat per file, no hashing."""
    problems = {}
    for key, (size, _) in manifest.items():
        file = path / key
        if not file.is_file():
            problems[key] = f"{_where(key)} is missing"
        elif file.stat().st_size != size:
            problems[key] = (
                f"{_where(key)} is damaged ({file.stat().st_size} bytes, {size} written)"
            )
    return problems


def check_present(path: Path, manifest: Mapping[str, Any], fix: str) -> None:
    """Refuse an artifact with a data file missing or of another size than was written."""
    for problem in absent_files(path, manifest).values():
        raise ArtifactError(f"{path}: {problem}; {fix}")


def verify(path: Path, manifest: Mapping[str, Any]) -> list[str]:
    """Every difference between the files of `path` and its manifest, one line each."""
    problems = []
    for key, (size, sha) in manifest.items():
        file = path / key
        if not file.is_file():
            problems.append(f"{_where(key)} is missing")
        elif file.stat().st_size != size or _sha256(file) != sha:
            problems.append(f"{_where(key)} is damaged (its bytes differ from what was written)")
    for file in data_files(path):
        if file.relative_to(path).as_posix() not in manifest:
            problems.append(f"{file.relative_to(path).as_posix()}: not written by its stage")
    return problems


class CheckedArray:
    """A zarr array whose damaged chunks are an ArtifactError naming the artifact and array,
    not a decoder's traceback. Everything else is the zarr array's own."""

    def __init__(self, array: zarr.Array, artifact: Path, fix: str) -> None:
        self._array, self._artifact, self._fix = array, artifact, fix

    def __getattr__(self, name: str) -> Any:
        return getattr(self._array, name)

    def __getitem__(self, key: Any) -> Any:
        try:
            return self._array[key]
        except (ValueError, RuntimeError) as exc:
            reason = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
            raise ArtifactError(
                f"{self._artifact}: array '{self._array.basename}' is damaged at {key!r} "
                f"({reason}); {self._fix}"
            ) from None


class CheckedGroup:
    """A finished artifact's group, handing out `CheckedArray`s."""

    def __init__(self, group: zarr.Group, path: Path, fix: str) -> None:
        self._group, self.path, self._fix = group, path, fix

    def __getattr__(self, name: str) -> Any:
        return getattr(self._group, name)

    def __getitem__(self, name: str) -> CheckedArray:
        return CheckedArray(self._group[name], self.path, self._fix)
