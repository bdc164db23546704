"""Model files and training checkpoints: plain tensors and JSON-able metadata, loaded safely.

Everything is read with `torch.load(weights_only=True)`, which refuses pickled code, so a
tampered file cannot run anything. Writes go to a temporary file renamed into place, so a kill
mid-write leaves the previous file intact.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pipeline.artifacts.store import FORMAT_VERSION, Provenance, check_expected
from pipeline.errors import ArtifactError


def atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def safe_load(path: Path) -> Any:
    """Tensors and plain containers only; anything else is an ArtifactError naming the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(
            f"{path}: not a checkpoint or model file this pipeline wrote ({reason})"
        ) from None


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
    if not isinstance(model, dict) or model.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: not a model file of this format; {fix}")
    if model.get("stage") != stage:
        raise ArtifactError(f"{path}: made by stage {model.get('stage')!r}, expected {stage!r}")
    check_expected(path, model, expect, fix)
    return model
