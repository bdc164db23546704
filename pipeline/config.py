"""params.yaml as typed, frozen dataclasses, validated once at load time.

Every stage reads its section through `load_params()`; nothing else parses the YAML. Each field
carries its own check so that an error names the exact key, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import string
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from pipeline.errors import ParamError

Check = tuple[Callable[[Any], bool], str]
T = TypeVar("T")


def checked(predicate: Callable[[Any], bool], allowed: str) -> Any:
    """A field the loader checks with `predicate`; `allowed` says what passes, in errors."""
    return field(metadata={"check": (predicate, allowed)})


def _positive_int() -> Any:
    return checked(lambda v: v > 0, "an integer > 0")


def _non_negative_int() -> Any:
    return checked(lambda v: v >= 0, "an integer >= 0")


def _fraction() -> Any:
    return checked(lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")


def _positive_fraction() -> Any:
    """An IoU threshold that labels something: at 0 every box would clear it."""
    return checked(lambda v: 0.0 < v <= 1.0, "a number in (0, 1]")


def _split_template(value: str) -> bool:
    """Only `{split}` may be filled in (any other field would fail at its first use)."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
    except ValueError:  # an unmatched brace
        return False
    return all(name == "split" for name in fields)


def _positive_list() -> Any:
    return checked(
        lambda v: len(v) > 0 and all(x > 0 and math.isfinite(x) for x in v),
        "a non-empty list of numbers > 0",
    )


class _Invalid(Exception):
    """Raised by cross-field checks; the loader turns it into a ParamError with the full key."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(key)
        self.key, self.value, self.allowed = key, value, allowed


@dataclass(frozen=True)
class SyntheticParams:
    seed: int
    num_trainval: int = _positive_int()
    num_test: int = _positive_int()
    min_side: int = checked(lambda v: v >= 32, "an integer >= 32")
    max_side: int = _positive_int()
    max_objects: int = _positive_int()
    min_object: int = checked(lambda v: v >= 4, "an integer >= 4")
    clutter: int = _non_negative_int()
    # The shape classes drawn (null: all six); a subset makes a quick smoke or teaching set.
    classes: tuple[str, ...] | None = checked(
        lambda v: v is None or (len(v) > 0 and len(set(v)) == len(v)),
        "null or a non-empty list of distinct class names",
    )

    def __post_init__(self) -> None:
        if self.max_side < self.min_side:
            raise _Invalid("max_side", self.max_side, f">= synthetic.min_side ({self.min_side})")
        if self.min_object * 2 > self.min_side:
            raise _Invalid("min_object", self.min_object, "at most half of synthetic.min_side")


@dataclass(frozen=True)
class DataParams:
    source: Literal["synthetic", "voc", "coco"]
    root: str = checked(lambda v: v != "", "a non-empty path")
    classes: tuple[str, ...] | None = checked(
        lambda v: v is None or (len(v) > 0 and len(set(v)) == len(v) and "" not in v),
        "null or a non-empty list of distinct, non-empty names",
    )
    train_split: str = checked(lambda v: v != "", "a non-empty split name")
    test_split: str = checked(lambda v: v != "", "a non-empty split name")
    coco_annotations: str = checked(
        lambda v: v.endswith(".json") and _split_template(v),
        "a path ending in .json; {split}, the only placeholder, is replaced by the split name",
    )
    coco_images: str = checked(
        _split_template, "a folder; {split}, the only placeholder, is replaced by the split name"
    )
    min_size: int = _positive_int()
    max_size: int = _positive_int()

    def __post_init__(self) -> None:
        if self.min_size > self.max_size:
            raise _Invalid("min_size", self.min_size, f"<= data.max_size ({self.max_size})")


@dataclass(frozen=True)
class StoreParams:
    shard_size: int = _positive_int()
    # How step 3 stores the features; bf16/fp16 halve the cache, steps 3-4 compute in fp32.
    feature_dtype: Literal["float32", "float16", "bfloat16"]


@dataclass(frozen=True)
class AnchorParams:
    # The backbone's feature stride: 16 (the paper's), or 8 without its last max-pool.
    stride: int = checked(lambda v: v in (8, 16), "8 or 16, the feature stride of the backbone")
    ratios: tuple[float, ...] = _positive_list()
    scales: tuple[float, ...] = _positive_list()

    @property
    def num_anchors(self) -> int:
        return len(self.ratios) * len(self.scales)


@dataclass(frozen=True)
class AnchorTargetParams:
    fg_iou: float = _positive_fraction()
    bg_iou: float = _positive_fraction()
    allowed_border: int = _non_negative_int()

    def __post_init__(self) -> None:
        if self.bg_iou > self.fg_iou:
            raise _Invalid("bg_iou", self.bg_iou, f"<= anchor_targets.fg_iou ({self.fg_iou})")


@dataclass(frozen=True)
class AugmentParams:
    flip: bool


@dataclass(frozen=True)
class BackboneParams:
    name: Literal["small", "vgg16"]
    weights: str | None
    freeze_below: str | None
    width: int = checked(lambda v: v >= 8 and v % 8 == 0, "a multiple of 8")

    def __post_init__(self) -> None:
        if self.weights is not None and self.name != "vgg16":
            # Only VGG16 has a weights format to read; silently training from random would
            # look like a run that used them.
            raise _Invalid("weights", self.weights, "null unless backbone.name is vgg16")


@dataclass(frozen=True)
class PretrainParams:
    # The stride pretraining trains at: the weights fit either, as ImageNet's fit both.
    stride: int = checked(lambda v: v in (8, 16), "8 or 16, the feature stride pretraining uses")
    crop_size: int = checked(lambda v: v >= 32 and v % 16 == 0, "a multiple of 16, >= 32")
    background_crops: int = _positive_int()
    background_iou: float = _positive_fraction()
    jitter: float = checked(lambda v: 0 <= v < 0.5, "a number in [0, 0.5)")
    zoom_out: float = checked(lambda v: 1 <= v <= 8, "a number in [1, 8]")


@dataclass(frozen=True)
class RPNParams:
    channels: int = checked(lambda v: 1 <= v <= 4096, "an integer in [1, 4096]")
    batch_size: int = _positive_int()
    fg_fraction: float = _positive_fraction()  # 0: no anchor ever learns a box
    box_sigma: float = checked(lambda v: v > 0, "a number > 0")


@dataclass(frozen=True)
class ProposalParams:
    nms_iou: float = _fraction()
    min_size: float = checked(lambda v: v >= 0, "a number >= 0")
    train_pre_nms: int = _positive_int()
    train_post_nms: int = _positive_int()
    test_pre_nms: int = _positive_int()
    test_post_nms: int = _positive_int()


@dataclass(frozen=True)
class RoIParams:
    pool: Literal["roi_pool", "roi_align"]
    # RoI pooling output side: memory grows with its square (detectron2 uses 7 and 14).
    size: int = checked(lambda v: 1 <= v <= 32, "an integer in [1, 32]")
    fc_dim: int = checked(lambda v: 1 <= v <= 16384, "an integer in [1, 16384]")
    dropout: float = checked(lambda v: 0 <= v < 1, "a number in [0, 1)")
    batch_size: int = _positive_int()
    fg_fraction: float = _positive_fraction()  # 0: no RoI ever learns a box
    fg_iou: float = _positive_fraction()
    bg_iou_low: float = _fraction()
    bg_iou_high: float = _fraction()
    box_stds: tuple[float, ...] = checked(
        lambda v: len(v) == 4 and all(x > 0 for x in v), "four numbers > 0"
    )
    box_sigma: float = checked(lambda v: v > 0, "a number > 0")

    def __post_init__(self) -> None:
        if not self.bg_iou_low <= self.bg_iou_high <= self.fg_iou:
            raise _Invalid(
                "bg_iou_high", self.bg_iou_high, "bg_iou_low <= bg_iou_high <= roi.fg_iou"
            )


@dataclass(frozen=True)
class StepParams:
    iterations: int = _positive_int()
    images_per_batch: int = _positive_int()
    lr: float = checked(lambda v: v > 0, "a number > 0")
    lr_steps: tuple[int, ...] = checked(
        lambda v: all(x > 0 for x in v) and list(v) == sorted(v), "increasing iterations > 0"
    )
    lr_gamma: float = checked(lambda v: 0 < v <= 1, "a number in (0, 1]")
    warmup: int = _non_negative_int()  # iterations of linear ramp up to lr


@dataclass(frozen=True)
class TrainParams:
    seed: int
    device: Literal["auto", "cpu", "cuda"]
    amp: Literal["fp32", "bf16", "fp16"]  # "off" would read as false in YAML 1.1
    channels_last: bool
    deterministic: bool  # GPU: deterministic kernels instead of cudnn's fastest (autotuned)
    workers: int = _non_negative_int()  # DataLoader processes reading ahead (0: none)
    # Steps 3-4 read the feature cache and their targets from memory: always | auto | never.
    features_in_memory: Literal["always", "auto", "never"]
    # Pretraining and steps 1-2 read the prepared images from memory: always | auto | never.
    images_in_memory: Literal["always", "auto", "never"]
    momentum: float = checked(lambda v: 0 <= v < 1, "a number in [0, 1)")
    weight_decay: float = checked(lambda v: v >= 0, "a number >= 0")
    checkpoint_every: int = _positive_int()
    log_every: int = _positive_int()
    pretrain: StepParams
    step1: StepParams
    step2: StepParams
    step3: StepParams
    step4: StepParams


@dataclass(frozen=True)
class DistParams:
    """How many processes run a stage (torchrun); no output depends on it."""

    nproc_per_node: int = _positive_int()
    nnodes: int = _positive_int()
    rdzv_endpoint: str | None  # host:port of the rendezvous, when nnodes > 1
    backend: Literal["auto", "gloo", "nccl"]

    def __post_init__(self) -> None:
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise _Invalid("rdzv_endpoint", self.rdzv_endpoint, "host:port when nnodes > 1")


@dataclass(frozen=True)
class DetectParams:
    score_thresh: float = _fraction()
    nms_iou: float = _fraction()
    max_detections: int = _positive_int()
    box_vote_iou: float | None = checked(
        lambda v: v is None or 0.0 < v <= 1.0, "null or a number in (0, 1]"
    )
    refine_boxes: bool
    scales: tuple[float, ...] = checked(
        lambda v: len(v) > 0 and all(0.25 <= x <= 4 for x in v),
        "a non-empty list of numbers in [0.25, 4]",
    )
    flip: bool
    enlarged_max_box: float | None = checked(lambda v: v is None or v > 0, "null or a number > 0")


@dataclass(frozen=True)
class Params:
    synthetic: SyntheticParams
    data: DataParams
    augment: AugmentParams
    store: StoreParams
    anchors: AnchorParams
    anchor_targets: AnchorTargetParams
    backbone: BackboneParams
    pretrain: PretrainParams
    rpn: RPNParams
    proposals: ProposalParams
    roi: RoIParams
    train: TrainParams
    dist: DistParams
    detect: DetectParams


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate the whole params file; raise ParamError naming the first bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError:
        raise ParamError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise ParamError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ParamError(f"{path}: not valid YAML{where}") from None
    return parse_params(raw, source=str(path))


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    return parse_section(Params, raw, source)


def parse_section(cls: type[T], raw: Any, source: str, prefix: str = "") -> T:
    """`raw` as the dataclass `cls`, every field typed and checked as params.yaml's are; the
    first bad key is a ParamError naming `source` and the key (under `prefix`)."""
    try:
        return _build(cls, raw, prefix)
    except _KeyError as exc:
        raise ParamError(f"{source}: {exc}") from None


def param_value(params: Params, key: str) -> Any:
    """The value of a dotted params key ("rpn", "data.min_size") as plain JSON-able values."""
    value: Any = params
    for part in key.split("."):
        value = getattr(value, part)
    return to_dict(value) if dataclasses.is_dataclass(value) else _jsonable(value)


def params_subset(params: Params, keys: tuple[str, ...]) -> dict[str, Any]:
    """The params of `keys` as nested sections holding those keys only: what a stage records."""
    subset: dict[str, Any] = {}
    for key in keys:
        *sections, last = key.split(".")
        inner = subset
        for section in sections:
            inner = inner.setdefault(section, {})
        inner[last] = param_value(params, key)
    return subset


def to_dict(section: Any) -> dict[str, Any]:
    """A section as plain JSON-able values (tuples become lists), for provenance records."""
    return _jsonable(dataclasses.asdict(section))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


class _KeyError(Exception):
    pass


def _build(cls: type, raw: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, Mapping):
        raise _KeyError(f"'{where}' must be a mapping of keys, got {_describe(raw)}")
    hints = get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            valid = ", ".join(sorted(known))
            raise _KeyError(f"unknown key '{prefix}{key}' (valid keys in {where}: {valid})")
    values = {}
    for name, spec in known.items():
        key = f"{prefix}{name}"
        if name not in raw:
            raise _KeyError(f"missing key '{key}'")
        value = _convert(hints[name], raw[name], key)
        check: Check | None = spec.metadata.get("check")
        if check is not None and not check[0](value):
            raise _KeyError(f"'{key}' is {_show(raw[name])}; allowed: {check[1]}")
        values[name] = value
    try:
        return cls(**values)
    except _Invalid as bad:
        message = f"'{prefix}{bad.key}' is {_show(bad.value)}; allowed: {bad.allowed}"
        raise _KeyError(message) from None


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, f"{key}.")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, key)
    if origin is Literal:
        if value not in args:
            choices = " | ".join(str(a) for a in args)
            raise _KeyError(f"'{key}' is {_show(value)}; allowed: {choices}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _KeyError(f"'{key}' is {_show(value)}; expected a list")
        return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise _KeyError(f"'{key}' is {value}; expected a finite number")
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (bool, str) and isinstance(value, hint):
        return value
    expected = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    raise _KeyError(f"'{key}' is {_show(value)}; expected {expected.get(hint, hint)}")


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})" if isinstance(value, str) else repr(value)


def _describe(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
