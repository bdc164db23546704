"""The GPU profile: VGG16 at 600 px with bf16 autocast and channels_last. Training images/s
of each step and of torchvision's FasterRCNN with the same backbone, inference images/s of
both, peak memory, and the design question a fast GPU raises: is reading a cached view
faster than recomputing it with the frozen backbone?

Prints one line and exits when there is no CUDA device. `--device cpu` runs the same
measurements on the CPU (slowly; with `--profile default` it checks the script itself).

    python -m bench.gpu [--images 16] [--iterations 10]
"""

from __future__ import annotations

import importlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
import torch

from bench.cache_gain import STEPS, timed_round
from bench.inference import test_images, timed
from bench.peer_model import torchvision_detector
from bench.project import PROFILES, build_project, inside, profile_params
from pipeline import layout
from pipeline.artifacts.exported_model import load_detector
from pipeline.artifacts.features import CachedFeatures, Features
from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.reads import StageInputs
from pipeline.artifacts.views import ViewSet, make_views
from pipeline.data.records import TRAIN
from pipeline.training.backbone_features import initial_backbone
from pipeline.training.loop import autocast, batch_at


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_mib(device: torch.device, run: Callable[[], object]) -> tuple[object, float]:
    """`run()` and the peak memory it allocated on the GPU (0 on a CPU)."""
    if device.type != "cuda":
        return run(), 0.0
    torch.cuda.reset_peak_memory_stats()
    result = run()
    return result, torch.cuda.max_memory_allocated() / 2**20


def torchvision_training(params, device, iterations: int, amp: str) -> float:
    """Seconds per image of end-to-end training of torchvision's FasterRCNN."""
    prepared = PreparedDataset(layout.PREPARE.out)
    views = ViewSet(prepared, make_views(prepared.split, params.augment.flip))
    train_views = views.of_split(TRAIN)
    model = torchvision_detector(
        params, initial_backbone(StageInputs(layout.STEP1_RPN, params)), len(prepared.classes)
    )
    model.to(device).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step(i: int) -> None:
        (v,) = batch_at(i, 1, train_views, 0)
        h, w = views.size(v)
        target = {"boxes": views.boxes(v).to(device), "labels": views.labels(v).to(device)}
        with autocast(amp, device):
            losses = model([views.image(v)[:, :h, :w].to(device)], [target])
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()

    step(0)
    sync(device)
    start = time.perf_counter()
    for i in range(1, iterations + 1):
        step(i)
    sync(device)
    return (time.perf_counter() - start) / iterations


def read_or_recompute(params, device, views_timed: int, amp: str) -> dict[str, float]:
    """Seconds per view: reading it from the feature cache onto the device, against computing
    it from the image with the frozen step-2 backbone."""
    cache = Features(layout.STEP3_FEATURES.out)
    detector = load_detector(layout.EXPORT.out).eval().to(device)
    views = ViewSet(PreparedDataset(layout.PREPARE.out), cache.views)
    read = CachedFeatures(cache)
    picked = list(range(min(views_timed, len(views))))
    memory = torch.channels_last if params.train.channels_last else torch.contiguous_format

    def reading() -> None:
        for v in picked:
            read([v]).to(device)
        sync(device)

    @torch.no_grad()
    def computing() -> None:
        for v in picked:
            with autocast(amp, device):
                detector.backbone(views.image(v)[None].to(device, memory_format=memory))
        sync(device)

    out = {}
    for name, run in (("read cached view", reading), ("recompute with backbone", computing)):
        run()  # warm-up
        start = time.perf_counter()
        run()
        out[name] = (time.perf_counter() - start) / len(picked)
    return out


def inference_cases(params, device, images: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Seconds per image and peak MiB of each detector and precision."""
    detector = load_detector(layout.EXPORT.out).eval().to(device)
    peer = torchvision_detector(params, detector.backbone, len(detector.config.classes))
    peer.eval().to(device)
    picked = [(i.to(device), s, k) for i, s, k in test_images(
        PreparedDataset(layout.PREPARE.out), images)]  # fmt: skip

    def ours(amp: str) -> Callable[..., None]:
        @torch.no_grad()
        def run(image: torch.Tensor, size: tuple, scale: float) -> None:
            with autocast(amp, device):
                detector.detect_view(image, size, scale)

        return run

    def theirs(amp: str) -> Callable[..., None]:
        @torch.no_grad()
        def run(image: torch.Tensor, size: tuple, scale: float) -> None:
            with autocast(amp, device):
                peer([image[:, : size[0], : size[1]]])

        return run

    cases = {
        "exported detector, fp32": ours("fp32"),
        f"exported detector, {params.train.amp}": ours(params.train.amp),
        "torchvision FasterRCNN, fp32": theirs("fp32"),
        f"torchvision FasterRCNN, {params.train.amp}": theirs(params.train.amp),
    }
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    peaks: dict[str, float] = {}
    for _ in range(rounds):
        for name, run in cases.items():
            elapsed, peaks[name] = peak_mib(device, lambda run=run: timed(run, picked, device))
            seconds[name].append(elapsed)
    return {name: (statistics.median(s), peaks[name]) for name, s in seconds.items()}


@click.command()
@click.option("--device", "device_name", type=click.Choice(["cuda", "cpu"]), default="cuda")
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default="vgg16")
@click.option("--images", default=16, show_default=True, help="Train images of the project.")
@click.option("--iterations", default=10, show_default=True)
@click.option("--rounds", default=3, show_default=True)
def main(device_name: str, profile: str, images: int, iterations: int, rounds: int) -> None:
    if device_name == "cuda" and not torch.cuda.is_available():
        click.echo("no GPU: torch sees no CUDA device, so nothing was measured")
        return
    device = torch.device(device_name)
    amp = "bf16"
    params = profile_params(profile, images, device_name, amp, channels_last=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory() as tmp, inside(Path(tmp)):
        click.echo(f"building a {profile} project of {images} train images ...", err=True)
        build_project(Path(tmp), params, until=layout.EXPORT.name)
        rows = []
        for stage in STEPS:
            training = importlib.import_module(f"stages.{stage.name}").training(params)
            size = getattr(params.train, training.step).images_per_batch
            timings, peak = peak_mib(device, lambda t=training, s=size: [
                timed_round(t, s, r * iterations, iterations, params.train.workers, amp)
                for r in range(rounds)
            ])  # fmt: skip
            per_image = statistics.median(t["iteration"] for t in timings)
            rows.append((stage.name, per_image, peak))
        peer, peer_peak = peak_mib(
            device, lambda: torchvision_training(params, device, iterations, amp)
        )
        rows.append(("torchvision FasterRCNN (end to end)", peer, peer_peak))
        inference = inference_cases(params, device, images, rounds)
        cache = read_or_recompute(params, device, images, amp)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    click.echo(f"{profile} profile on {name}, {amp} autocast, channels_last; medians:")
    click.echo("| training | images/s | ms/image | peak MiB |")
    click.echo("|---|---:|---:|---:|")
    for label, seconds, peak in rows:
        click.echo(f"| {label} | {1 / seconds:.1f} | {seconds * 1000:.1f} | {peak:.0f} |")
    click.echo("| inference | images/s | ms/image | peak MiB |")
    click.echo("|---|---:|---:|---:|")
    for label, (seconds, peak) in inference.items():
        click.echo(f"| {label} | {1 / seconds:.1f} | {seconds * 1000:.1f} | {peak:.0f} |")
    click.echo("| one view's features | ms |")
    click.echo("|---|---:|")
    for label, seconds in cache.items():
        click.echo(f"| {label} | {seconds * 1000:.2f} |")


if __name__ == "__main__":
    main()
