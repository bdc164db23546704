"""Model files and training checkpoints: plain tensors and JSON-able metadata, loaded safely.

Everything is read with `torch.load(weights_only=True)`, which refuses pickled code, so a
tampered file cannot run anything. torch's zip container checks no tensor bytes, so each file
also carries a SHA-256 of its content, checked on load: a flipped bit is refused, not trained
on. Writes go to a temporary file renamed into place, so a kill mid-write leaves the previous
file intact.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pipeline.artifacts.provenance import FORMAT_VERSION, Provenance, check_expected
from pipeline.errors import ArtifactError

CHECKSUM = "content_sha256"


def content_digest(obj: Any) -> str:
    """SHA-256 of a nest of dicts, lists, tensors and scalars: keys, types, shapes, dtypes and
    every byte of every tensor, so that any change to what `torch.load` returns changes it."""
    hasher = hashlib.sha256()

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            flat = value.detach().cpu().contiguous().reshape(-1)
            hasher.update(f"T{value.dtype}{tuple(value.shape)}".encode())
            hasher.update(flat.view(torch.uint8).numpy().tobytes())
        elif isinstance(value, Mapping):
            hasher.update(f"D{len(value)}".encode())
            for key in sorted(value, key=repr):
                hasher.update(f"K{key!r}".encode())
                walk(value[key])
        elif isinstance(value, (list, tuple)):
            hasher.update(f"L{len(value)}".encode())
            for item in value:
                walk(item)
        else:
            hasher.update(f"V{type(value).__name__}:{value!r}".encode())

    walk(obj)
    return hasher.hexdigest()


def atomic_save(obj: Mapping[str, Any], path: Path) -> None:
    """`obj` plus its content checksum, written to a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save({**obj, CHECKSUM: content_digest(obj)}, tmp)
    except RuntimeError as exc:  # torch's writer reports a full disk as a RuntimeError
        tmp.unlink(missing_ok=True)
        reason = str(exc).strip().splitlines()[0][:120]
        raise OSError(
            errno.EIO, f"cannot write it ({reason}); is the disk full?", str(path)
        ) from None
    os.replace(tmp, path)


def safe_load(path: Path) -> dict[str, Any]:
    """What `atomic_save` wrote, its checksum verified; anything else, or a file whose content
    changed since, is an ArtifactError naming the file."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except (
        pickle.UnpicklingError,
        RuntimeError,
        zipfile.BadZipFile,
        EOFError,
        ValueError,
        OSError,  # e.g. a truncated file: "[Errno 22] Invalid argument"
    ) as exc:
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(
            f"{path}: not a checkpoint or model file this pipeline wrote ({reason})"
        ) from None
    if not isinstance(obj, dict) or CHECKSUM not in obj:
        raise ArtifactError(f"{path}: not a checkpoint or model file this pipeline wrote")
    recorded = obj.pop(CHECKSUM)
    if recorded != content_digest(obj):
        raise ArtifactError(f"{path}: damaged, its content does not match its recorded SHA-256")
    return obj


def verify_model_file(path: Path) -> tuple[int, list[str]]:
    """`verify_artifact` for a model file or checkpoint: (1, problems)."""
    if not path.is_file():
        raise ArtifactError(f"{path}: not found")
    try:
        safe_load(path)
    except ArtifactError as exc:
        return 1, [str(exc).removeprefix(f"{path}: ")]
    return 1, []


def save_model(
    path: Path, provenance: Provenance, parts: Mapping[str, Mapping], **meta: Any
) -> None:
    """A stage's model output: state dicts by part name ('backbone', 'rpn', 'head', ...)."""
    atomic_save(
        {**provenance.attrs(), **meta, "parts": {k: dict(v) for k, v in parts.items()}}, path
    )


def load_model(
    path: str | Path, stage: str, expect: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A model file written by `stage`, refused if from another format, stage or inputs."""
    path = Path(path)
    fix = f"run `dvc repro {stage}`"
    try:
        model = safe_load(path)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: not found; {fix} to build it") from None
    except ArtifactError as exc:
        raise ArtifactError(f"{exc}; `dvc checkout {path}` or `dvc repro -f {stage}`") from None
    if model.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: not a model file of this format; {fix}")
    if model.get("stage") != stage:
        raise ArtifactError(f"{path}: made by stage {model.get('stage')!r}, expected {stage!r}")
    check_expected(path, model, expect, fix)
    return model
