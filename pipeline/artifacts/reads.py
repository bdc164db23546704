"""Opening a stage's inputs as its declaration says (`pipeline/layout.py`): each input checked
against this run and against the inputs opened before it, and its fingerprint kept for the
stage's provenance, so no stage spells out what its inputs must carry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pipeline.artifacts.model_files import load_model
from pipeline.artifacts.provenance import RECORDED_PARAMS, Provenance
from pipeline.config import Params, param_value, to_dict
from pipeline.layout import BY_NAME, LAYOUT_ONLY, Stage

R = TypeVar("R")


class StageInputs:
    """The inputs one run of `stage` reads, opened upstream first."""

    def __init__(self, stage: Stage, params: Params) -> None:
        self.stage, self.params = stage, params
        self.fingerprints: dict[str, str] = {}

    def expect(self, source: Stage) -> dict[str, Any]:
        """What `source`'s output must record to be this run's input: every params key its
        stage declares, with this run's value (and no recorded key with another), and the
        inputs it shares with this stage that are already open."""
        if source not in self.stage.reads:
            raise RuntimeError(f"{self.stage.name} reads {source.name}, undeclared in layout.py")
        for name in self.fingerprints:
            if source in BY_NAME[name].reads:
                raise RuntimeError(f"{self.stage.name} opens {source.name} after {name}")
        expect: dict[str, Any] = {RECORDED_PARAMS: to_dict(self.params)}
        for key in source.params:
            if key not in LAYOUT_ONLY:
                expect[f"params.{key}"] = param_value(self.params, key)
        for upstream in source.reads:
            if upstream.name in self.fingerprints:
                expect[f"inputs.{upstream.name}"] = self.fingerprints[upstream.name]
        return expect

    def open(self, source: Stage, reader: Callable[[Stage, Mapping[str, Any]], R]) -> R:
        """`source`'s output through `reader` (e.g. `PreparedDataset.of`), checked."""
        opened = reader(source, self.expect(source))
        self.fingerprints[source.name] = opened.fingerprint  # type: ignore[attr-defined]
        return opened

    def model(self, source: Stage) -> dict[str, Any]:
        """`source`'s model file (its parts' state dicts and provenance), checked."""
        saved = load_model(source.out, source.name, self.expect(source))
        self.fingerprints[source.name] = saved["fingerprint"]
        return saved

    def provenance(self, **outside: str) -> Provenance:
        """The provenance of this run's output: the declared params and every declared input
        (and `outside` ones, e.g. the raw dataset), which must all have been opened."""
        unread = [s.name for s in self.stage.reads if s.name not in self.fingerprints]
        if unread:
            raise RuntimeError(f"{self.stage.name} never opened {', '.join(unread)}")
        return Provenance.of_stage(self.stage, self.params, {**self.fingerprints, **outside})
