"""What the feature cache costs: bytes per view, write and read speed and DVC's hashing time
for each storage dtype, codec and shard size, against plain `numpy.save`/`numpy.load` of the
same arrays; and what that makes at VOC07 and COCO scale.

Takes `--views` views of a finished run's feature cache (default: data/step3/features.zarr,
the trained default profile) or, with `--profile vgg16`, of a small VGG16 project at 600 px
(bench/project.py; random weights, as nothing can be downloaded here). Reads go view by view
in a shuffled order, as training reads them. MB/s count float32 bytes delivered, so dtypes
compare on what a step receives.

    python -m bench.store [--profile default|vgg16] [--views 64]
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
import torch
import zarr
from dvc_data.hashfile.hash import file_md5
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from bench.project import PROFILES, build_project, inside, profile_params
from pipeline import layout
from pipeline.artifacts.features import STORED_AS, Features, from_storage, to_storage

CODECS: dict[str, Callable[[], object]] = {
    "zstd 1": lambda: ZstdCodec(level=1),
    "zstd 3 (now)": lambda: ZstdCodec(level=3),
    "blosc zstd 3 bitshuffle": lambda: BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),
    "blosc lz4 5 bitshuffle": lambda: BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),
}
DTYPES = ("float32", "float16", "bfloat16")
SHARDS = (16, 64)
# Views of a feature cache: train images twice (flipped), test images once.
SCALES = {
    "VOC07 trainval + test": 5011 * 2 + 4952,
    "COCO train2017 + val2017": 118287 * 2 + 5000,
}


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def dvc_hash_seconds(folder: Path) -> float:
    """What `dvc repro` spends hashing the artifact: DVC's own md5 of every file."""
    start = time.perf_counter()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            file_md5(str(f))
    return time.perf_counter() - start


def zarr_case(
    views: np.ndarray, dtype: str, codec: object, shard: int, folder: Path, order: np.ndarray
) -> dict[str, float]:
    stored = np.stack([to_storage(torch.from_numpy(v), dtype) for v in views])
    start = time.perf_counter()
    array = zarr.create_array(
        store=str(folder),
        shape=stored.shape,
        chunks=(1, *stored.shape[1:]),
        shards=(min(shard, len(views)), *stored.shape[1:]),
        dtype=STORED_AS[dtype],
        compressors=(codec, Crc32cCodec()),
    )
    for first in range(0, len(views), shard):  # whole shards, as the stages write them
        array[first : first + shard] = stored[first : first + shard]
    write = time.perf_counter() - start
    start = time.perf_counter()
    for v in order:
        from_storage(array[int(v)], dtype)
    read = time.perf_counter() - start
    return {"write": write, "read": read, "bytes": folder_bytes(folder)}


def numpy_case(views: np.ndarray, folder: Path, order: np.ndarray) -> dict[str, float]:
    folder.mkdir()
    start = time.perf_counter()
    for i, v in enumerate(views):
        np.save(folder / f"{i}.npy", v)
    write = time.perf_counter() - start
    start = time.perf_counter()
    for v in order:
        torch.from_numpy(np.load(folder / f"{int(v)}.npy"))
    read = time.perf_counter() - start
    return {"write": write, "read": read, "bytes": folder_bytes(folder)}


def sample_views(features: Features, count: int) -> np.ndarray:
    picked = np.linspace(0, len(features.views) - 1, min(count, len(features.views)))
    return np.stack([
        from_storage(features.features[int(v)], features.dtype).numpy() for v in picked.astype(int)
    ])  # fmt: skip


@click.command()
@click.option(
    "--profile",
    type=click.Choice(sorted(PROFILES)),
    default=None,
    help="Build a small project of this profile instead of reading --features.",
)
@click.option(
    "--features",
    "features_path",
    type=click.Path(path_type=Path),
    default=layout.STEP3_FEATURES.out,
    show_default=True,
)
@click.option("--views", default=64, show_default=True)
@click.option("--images", default=16, show_default=True, help="--profile: its train images.")
@click.option("--repeat", default=3, show_default=True, help="Runs per case; medians.")
def main(
    profile: str | None, features_path: Path, views: int, images: int, repeat: int
) -> None:  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        if profile is not None:
            with inside(Path(tmp)):
                click.echo(f"building a {profile} project of {images} train images ...", err=True)
                build_project(Path(tmp), profile_params(profile, images),
                              until=layout.STEP3_FEATURES.name)  # fmt: skip
                arrays = sample_views(Features(layout.STEP3_FEATURES.out), views)
        else:
            arrays = sample_views(Features(features_path), views)
        order = np.random.default_rng(0).permutation(len(arrays))
        raw = arrays.nbytes
        cases: dict[str, list[dict[str, float]]] = {}
        for r in range(repeat):
            for dtype in DTYPES:
                for name, codec in CODECS.items():
                    for shard in SHARDS:
                        folder = Path(tmp) / f"case{r}"
                        key = f"{dtype} | {name} | {shard}"
                        result = zarr_case(arrays, dtype, codec(), shard, folder, order)
                        if dtype == "float32" and name.endswith("(now)") and shard == 64:
                            result["hash"] = dvc_hash_seconds(folder)
                        cases.setdefault(key, []).append(result)
                        shutil.rmtree(folder)
            folder = Path(tmp) / f"case{r}"
            result = numpy_case(arrays, folder, order)
            result["hash"] = dvc_hash_seconds(folder)
            cases.setdefault("float32 | numpy.save, no codec | file per view", []).append(result)
            shutil.rmtree(folder)
    med = {k: {m: statistics.median(r[m] for r in rs) for m in rs[0]} for k, rs in cases.items()}
    shape = arrays.shape[1:]
    click.echo(
        f"{len(arrays)} views of {shape[0]} x {shape[1]} x {shape[2]} features "
        f"({raw / len(arrays) / 2**20:.2f} MiB per view as float32), medians of {repeat}:"
    )
    click.echo("| dtype | codec | views/shard | KiB/view | of float32 | write MB/s | read MB/s |")
    click.echo("|---|---|---:|---:|---:|---:|---:|")
    for key, m in med.items():
        click.echo(
            f"| {key} | {m['bytes'] / len(arrays) / 1024:.0f} | {m['bytes'] / raw:.3f} | "
            f"{raw / m['write'] / 1e6:.0f} | {raw / m['read'] / 1e6:.0f} |"
        )
    for key, m in med.items():
        if "hash" in m:
            click.echo(
                f"DVC md5 of the artifact ({key}): {m['bytes'] / m['hash'] / 1e6:.0f} MB/s "
                f"({m['hash'] / len(arrays) * 1000:.1f} ms per view)"
            )
    click.echo("At scale (GB on disk; views: train images twice, flipped, test images once):")
    click.echo("| store | " + " | ".join(f"{n} ({v:,} views)" for n, v in SCALES.items()) + " |")
    click.echo("|---|" + "---:|" * len(SCALES))
    for key, m in med.items():
        if key.endswith(f"| {SHARDS[0]}"):  # the shard size changes the bytes by an index only
            continue
        per_view = m["bytes"] / len(arrays)
        click.echo(f"| {key} | " + " | ".join(f"{per_view * v / 1e9:.1f}" for v in SCALES.values())
                   + " |")  # fmt: skip


if __name__ == "__main__":
    main()
