"""The exported detector file (`export`'s output): the three parts' weights and the config
inference needs, in one safely loadable file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.artifacts.model_files import load_model, save_model
from pipeline.artifacts.provenance import Provenance
from pipeline.config import to_dict
from pipeline.layout import EXPORT
from pipeline.model.faster_rcnn import DetectorConfig, FasterRCNN


def save_detector(
    path: Path, provenance: Provenance, config: DetectorConfig, parts: Mapping[str, Mapping]
) -> None:
    save_model(path, provenance, parts, config=to_dict(config))


def load_detector(path: str | Path) -> FasterRCNN:
    """The exported detector, in eval mode on the CPU."""
    return detector_of(load_model(path, EXPORT.name))


def detector_of(saved: Mapping[str, Any]) -> FasterRCNN:
    """The detector an exported file holds (as `load_model` read it), in eval mode."""
    model = FasterRCNN.from_config(DetectorConfig.from_dict(saved["config"]))
    model.backbone.load_state_dict(saved["parts"]["backbone"])
    model.rpn.load_state_dict(saved["parts"]["rpn"])
    model.head.load_state_dict(saved["parts"]["head"])
    return model.eval()
