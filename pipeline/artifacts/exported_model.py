"""The exported detector file (`export`'s output): the three parts' weights and the config
inference needs, in one safely loadable file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.artifacts.model_files import load_model, save_model
from pipeline.artifacts.provenance import Provenance
from pipeline.config import to_dict
from pipeline.errors import ArtifactError
from pipeline.layout import EXPORT
from pipeline.model.faster_rcnn import DetectorConfig, FasterRCNN


def save_detector(
    path: Path, provenance: Provenance, config: DetectorConfig, parts: Mapping[str, Mapping]
) -> None:
    save_model(path, provenance, parts, config=to_dict(config))


def load_detector(path: str | Path) -> FasterRCNN:
    """The exported detector, in eval mode on the CPU."""
    return detector_of(load_model(path, EXPORT.name), path)


PARTS = ("backbone", "rpn", "head")


def detector_of(saved: Mapping[str, Any], source: str | Path) -> FasterRCNN:
    """The detector an exported file holds (as `load_model` read it from `source`), in eval
    mode. A config or weights that do not make one detector are refused naming the file."""
    model = FasterRCNN.from_config(DetectorConfig.from_dict(saved.get("config"), str(source)))
    parts = saved.get("parts")
    if not isinstance(parts, Mapping) or set(parts) != set(PARTS):
        found = sorted(parts) if isinstance(parts, Mapping) else parts
        raise ArtifactError(f"{source}: holds the parts {found!r}, expected {list(PARTS)}")
    for name in PARTS:
        try:
            getattr(model, name).load_state_dict(parts[name])
        except (RuntimeError, TypeError, AttributeError) as exc:
            reason = str(exc).strip().splitlines()[-1].strip()[:160]
            raise ArtifactError(
                f"{source}: the {name} weights do not fit the network its config describes "
                f"({reason})"
            ) from None
    return model.eval()
