"""What made an artifact (its provenance) and whether that is what a reader needs.

Every artifact, Zarr group or model file, records its stage, the params keys its stage declares
(`pipeline/layout.py`), the fingerprints of its inputs and the hash of the code that ran. A
reader refuses an artifact whose record differs from the run that reads it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.artifacts.lineage import check_lineage
from pipeline.codebase import code_fingerprint
from pipeline.config import Params, params_subset
from pipeline.errors import ArtifactError
from pipeline.layout import LAYOUT_ONLY, Stage

# 3: each artifact records exactly its stage's declared params, and its inputs by stage name.
FORMAT_VERSION = 3
# The `expect` key under which a reader passes all of this run's params: every params key an
# input recorded must have this run's value (whether or not the reader names it), except those
# that change how it is stored and none of its values.
RECORDED_PARAMS = "params"


@dataclass(frozen=True)
class Provenance:
    """What made an artifact: the stage, the params it read, the fingerprints of its inputs and
    the hash of the code that ran (see pipeline/codebase.py)."""

    stage: str
    params: Mapping[str, Any]
    inputs: Mapping[str, str]
    code: str = ""

    @classmethod
    def of_stage(cls, stage: Stage, params: Params, inputs: Mapping[str, str]) -> Provenance:
        """Provenance of `stage`'s output: exactly the params keys its declaration lists (what
        DVC reruns it for), and the hash of `stages/<name>.py`'s closure."""
        return cls(
            stage.name, params_subset(params, stage.params), inputs, code_fingerprint(stage.module)
        )

    @property
    def fingerprint(self) -> str:
        """Same stage, params, inputs and code give the same fingerprint; anything else not."""
        payload = json.dumps(
            {
                "format_version": FORMAT_VERSION,
                "stage": self.stage,
                "params": self.params,
                "inputs": self.inputs,
                "code": self.code,
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:24]

    def attrs(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "params": dict(self.params),
            "inputs": dict(self.inputs),
            "code": self.code,
            "fingerprint": self.fingerprint,
            "format_version": FORMAT_VERSION,
            "code_version": __version__,
        }


def check_expected(
    path: Path, attrs: Mapping[str, Any], expect: Mapping[str, Any] | None, fix: str
) -> None:
    """Refuse an artifact whose recorded provenance differs from what the reader needs, or was
    made from another lineage than the artifacts at its inputs' places now."""
    if expect and RECORDED_PARAMS in expect:  # first: a recorded key names the exact value
        _check_recorded(path, attrs.get("params") or {}, expect[RECORDED_PARAMS], fix)
    for key, wanted in (expect or {}).items():  # then what the reader needs (recorded or not)
        if key == RECORDED_PARAMS:
            continue
        found = _lookup(attrs, key)
        if found != wanted:
            raise ArtifactError(
                f"{path}: stale, {key} is {json.dumps(found)} but this run expects "
                f"{json.dumps(wanted)}; {fix}"
            )
    check_lineage(path, str(attrs.get("stage")), attrs.get("inputs") or {})


def _check_recorded(
    path: Path, recorded: Mapping[str, Any], current: Mapping[str, Any], fix: str, prefix: str = ""
) -> None:
    for key, value in recorded.items():
        if key not in current:  # recorded under a name that is no params key
            continue
        name = f"{prefix}{key}"
        if name in LAYOUT_ONLY:
            continue
        if isinstance(value, Mapping) and isinstance(current[key], Mapping):
            _check_recorded(path, value, current[key], fix, f"{name}.")
        elif value != current[key]:
            raise ArtifactError(
                f"{path}: stale, made with {name} = {json.dumps(value)} but this run has "
                f"{json.dumps(current[key])}; {fix}"
            )


def _lookup(attrs: Mapping[str, Any], dotted: str) -> Any:
    value: Any = attrs
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value
