"""Backbones: stride 16 or 8, freezing by layer name, ImageNet weights read from a local file."""

import dataclasses
import os

import pytest
import torch
import torchvision

from pipeline.errors import ParamError
from pipeline.model.backbones import build_backbone, head_fc_layers, saved_backbone
from tests.conftest import tiny_params, vgg16_weights_file


def backbone_params(**changes):
    return dataclasses.replace(tiny_params().backbone, **changes)


@pytest.mark.parametrize("name", ["small", "vgg16"])
@pytest.mark.parametrize("stride", [16, 8])
def test_backbones_have_the_stride_asked_for(name, stride):
    backbone = build_backbone(backbone_params(name=name), stride)
    out = backbone(torch.zeros(1, 3, 96, 128))
    assert backbone.stride == stride
    assert out.shape == (1, backbone.out_channels, 96 // stride, 128 // stride)


def test_stride_8_drops_the_last_pool_and_keeps_every_weight():
    """So a stride-8 net has the parameters of a stride-16 one: the same weights load into it."""
    coarse, fine = build_backbone(backbone_params(), 16), build_backbone(backbone_params(), 8)
    assert [n for n in fine.body._modules if n.startswith("pool")] == ["pool1", "pool2", "pool3"]
    fine.load_state_dict(coarse.state_dict())


def test_a_saved_backbone_has_the_saved_weights_and_never_reads_imagenet(tmp_path):
    """Steps 1-3 restore what a stage saved: `backbone.weights` (here a file that does not
    exist) must not be read, and the state may come from the other stride."""
    coarse = build_backbone(backbone_params(name="vgg16"), 16)
    restored = saved_backbone(
        backbone_params(name="vgg16", weights=str(tmp_path / "absent.pth")), 8, coarse.state_dict()
    )
    assert restored.stride == 8
    for (name, saved), (_, loaded) in zip(
        coarse.state_dict().items(), restored.state_dict().items(), strict=True
    ):
        assert torch.equal(saved, loaded), name


def test_freeze_below_fixes_the_earlier_layers_only():
    backbone = build_backbone(backbone_params(name="vgg16"), 16)
    backbone.freeze_below("conv3_1")
    frozen = {n.split(".")[1] for n, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1_1", "conv1_2", "conv2_1", "conv2_2"}
    with pytest.raises(ParamError, match="'backbone.freeze_below' is 'conv9_9'; allowed"):
        backbone.freeze_below("conv9_9")


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(ParamError, match=r"'backbone.weights' file .*vgg.pth does not exist"):
        build_backbone(backbone_params(name="vgg16", weights=str(tmp_path / "vgg.pth")), 16)


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(ParamError, match="resnet.pth: not torchvision VGG16 weights"):
        build_backbone(backbone_params(name="vgg16", weights=str(path)), 16)


class Exploit:
    """Unpickling this runs a shell command: what a malicious weights file would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_malicious_pickle_is_refused_not_executed(tmp_path):
    path, marker = tmp_path / "evil.pth", tmp_path / "pwned"
    torch.save({"features.0.weight": Exploit(marker)}, path)
    with pytest.raises(ParamError, match="evil.pth: not a PyTorch weights file"):
        build_backbone(backbone_params(name="vgg16", weights=str(path)), 16)
    assert not marker.exists()


@pytest.mark.slow
def test_vgg16_weights_fill_the_convs_and_fc6_fc7(tmp_path):
    path = tmp_path / "vgg16.pth"
    state = vgg16_weights_file(path)
    params = backbone_params(name="vgg16", weights=str(path))
    backbone = build_backbone(params, 16)
    assert torch.equal(backbone.body.conv1_1.weight, state["features.0.weight"])
    assert torch.equal(backbone.body.conv5_3.bias, state["features.28.bias"])
    fc = head_fc_layers(params, 512 * 7 * 7, 4096)
    assert torch.equal(fc.fc6.weight, state["classifier.0.weight"])
    assert torch.equal(fc.fc7.bias, state["classifier.3.bias"])
