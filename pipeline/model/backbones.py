"""Shared conv trunks: VGG16 (the paper's) and a small VGG-style net for CPUs, of stride 16 (a
max-pool after each conv stage but the last) or 8 (none after the fourth either: the last stage
sees twice the resolution, for objects a 16-pixel cell would blur; it costs that stage and the
RPN conv four times the work, and the parameters are the same).

A backbone is a named `nn.Sequential` of conv blocks (`conv1_1`, `relu1_1`, `pool1`, ...), so
`freeze_below: conv3_1` reads as the paper does ("conv1 and conv2 fixed"). It also offers the
two fully connected layers the Fast R-CNN head starts from: fc6/fc7 from ImageNet for VGG16
when weights are given, fresh layers otherwise.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
import torchvision
from torch import nn

from pipeline.config import BackboneParams
from pipeline.errors import ParamError

VGG16_PLAN = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


class Backbone(nn.Module):
    def __init__(self, layers: OrderedDict[str, nn.Module], out_channels: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(layers)
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def freeze_below(self, layer: str | None) -> None:
        """Fix every parameter of the layers before `layer` (None: train everything)."""
        if layer is None:
            return
        names = list(self.body._modules)
        if layer not in names:
            convs = ", ".join(n for n in names if n.startswith("conv"))
            raise ParamError(
                f"params.yaml: 'backbone.freeze_below' is {layer!r}; allowed: null or one of "
                f"{convs}"
            )
        for name in names[: names.index(layer)]:
            for parameter in self.body._modules[name].parameters():
                parameter.requires_grad_(False)


def _vgg_layers(
    plan: tuple[tuple[int, int], ...], norm_groups: int | None, stride: int
) -> OrderedDict:
    """conv3x3 blocks with a 2x2 max-pool after each of the first log2(stride) stages (the
    config allows stride 8 or 16)."""
    pools = stride.bit_length() - 1
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels = 3
    for stage, (width, count) in enumerate(plan, start=1):
        for k in range(1, count + 1):
            layers[f"conv{stage}_{k}"] = nn.Conv2d(channels, width, 3, padding=1)
            if norm_groups:
                layers[f"norm{stage}_{k}"] = nn.GroupNorm(norm_groups, width)
            layers[f"relu{stage}_{k}"] = nn.ReLU(inplace=True)
            channels = width
        if stage <= pools:
            layers[f"pool{stage}"] = nn.MaxPool2d(2, 2)
    return layers


def build_backbone(params: BackboneParams, stride: int) -> Backbone:
    """The initial backbone of feature stride `stride` (`anchors.stride`): seeded random init,
    or ImageNet weights from `params.weights`."""
    if params.name == "vgg16":
        backbone = Backbone(_vgg_layers(VGG16_PLAN, None, stride), 512, stride)
        if params.weights is not None:
            state = _load_vgg16_state(Path(params.weights))
            convs = [m for m in backbone.body if isinstance(m, nn.Conv2d)]
            indices = [
                i
                for i, m in enumerate(torchvision.models.vgg16().features)
                if isinstance(m, nn.Conv2d)
            ]
            for conv, index in zip(convs, indices, strict=True):
                conv.weight.data.copy_(state[f"features.{index}.weight"])
                conv.bias.data.copy_(state[f"features.{index}.bias"])
        return backbone
    w = params.width
    plan = ((w, 1), (2 * w, 1), (4 * w, 2), (8 * w, 2), (8 * w, 2))
    backbone = Backbone(_vgg_layers(plan, 8, stride), 8 * w, stride)
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return backbone


def saved_backbone(
    params: BackboneParams, stride: int, state: Mapping[str, torch.Tensor]
) -> Backbone:
    """A backbone a stage saved: the structure of `params` at `stride`, its weights from
    `state` (so ImageNet's file, which `params.weights` may name, is not read again)."""
    backbone = build_backbone(dataclasses.replace(params, weights=None), stride)
    backbone.load_state_dict(state)
    return backbone


def head_fc_layers(params: BackboneParams, in_features: int, fc_dim: int) -> nn.Sequential:
    """fc6 and fc7 of the Fast R-CNN head: ImageNet's for VGG16 with weights, else fresh."""
    fc6, fc7 = nn.Linear(in_features, fc_dim), nn.Linear(fc_dim, fc_dim)
    if params.name == "vgg16" and params.weights is not None:
        state = _load_vgg16_state(Path(params.weights))
        if (fc_dim, in_features) != tuple(state["classifier.0.weight"].shape):
            raise ParamError(
                "params.yaml: 'roi.fc_dim' and 'roi.size' must be 4096 and 7 to reuse VGG16's "
                "fc6/fc7 from backbone.weights"
            )
        for fc, prefix in ((fc6, "classifier.0"), (fc7, "classifier.3")):
            fc.weight.data.copy_(state[f"{prefix}.weight"])
            fc.bias.data.copy_(state[f"{prefix}.bias"])
    return nn.Sequential(
        OrderedDict(fc6=fc6, relu6=nn.ReLU(inplace=True), fc7=fc7, relu7=nn.ReLU(inplace=True))
    )


def _load_vgg16_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ParamError(f"params.yaml: 'backbone.weights' file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise ParamError(f"{path}: not a PyTorch weights file ({type(exc).__name__})") from None
    expected = torchvision.models.vgg16().state_dict()
    if not isinstance(state, dict):
        raise ParamError(f"{path}: holds a {type(state).__name__}, not a VGG16 state dict")
    for key, tensor in expected.items():
        if key.startswith("classifier.6"):
            continue  # the 1000-way ImageNet classifier is not used
        found = state.get(key)
        if not isinstance(found, torch.Tensor) or found.shape != tensor.shape:
            raise ParamError(
                f"{path}: not torchvision VGG16 weights ({key} is missing or has another shape)"
            )
    return state
