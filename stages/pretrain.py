"""pretrain: the backbone that steps 1 and 2 both start from (the paper: ImageNet weights).

With `backbone.weights` naming a file, those weights are the start and nothing trains. Without,
the backbone learns to classify crops of the train split's objects and of background first,
so that neither step trains a backbone from random weights. It may train at another stride
than the steps' (`pretrain.stride`): the weights are the same at 8 and 16, and a crop classifier
learns better with the wider view of stride 16, as ImageNet's VGG16 did at 32.
"""

from torch import nn

from pipeline.artifacts.model_files import save_model
from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.reads import StageInputs
from pipeline.artifacts.views import ViewSet, make_views
from pipeline.config import Params
from pipeline.data.records import TRAIN
from pipeline.devices import resolve_device
from pipeline.layout import PREPARE, PRETRAIN
from pipeline.model.backbones import build_backbone
from pipeline.runner import stage_command
from pipeline.training.pretrain_objective import CropClassification, ObjectBatch
from pipeline.training.train_and_save import StageTraining, seeded_init, train_and_save


def training(params: Params) -> StageTraining:
    """Crop classification from random weights: what trains when no weights are given."""
    inputs = StageInputs(PRETRAIN, params)
    seeded_init(params, PRETRAIN)
    backbone = build_backbone(params.backbone, params.pretrain.stride)
    device = resolve_device(params.train.device)
    prepared = inputs.open(PREPARE, PreparedDataset.of)
    views = ViewSet(prepared, make_views(prepared.split, params.augment.flip))
    classifier = nn.Linear(backbone.out_channels, len(prepared.classes))  # with background
    return StageTraining(
        inputs,
        "pretrain",
        {"backbone": backbone, "classifier": classifier},
        ObjectBatch(views),
        CropClassification(
            backbone, classifier, params.pretrain, device, params.train.channels_last
        ),
        views.of_split(TRAIN),
        device=device,
        in_memory=prepared.keep_images_in_memory(params.train.images_in_memory),
    )


def run(params: Params) -> dict:
    """Write the initial backbone: the given weights, or one pretrained on crops."""
    if params.backbone.weights is None:
        return train_and_save(training(params), params)
    inputs = StageInputs(PRETRAIN, params)
    inputs.open(PREPARE, PreparedDataset.of)  # the same inputs whichever way it starts
    seeded_init(params, PRETRAIN)
    backbone = build_backbone(params.backbone, params.pretrain.stride)
    save_model(PRETRAIN.out, inputs.provenance(), {"backbone": backbone.state_dict()})
    return {"weights": params.backbone.weights}


main = stage_command(PRETRAIN, run, ranks=True)

if __name__ == "__main__":
    main()
