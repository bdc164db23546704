"""`frcnn inspect`: what is inside an artifact, in numbers a person can check at a glance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from pipeline.artifacts.integrity import absent_files
from pipeline.artifacts.ragged import iter_blocks
from pipeline.errors import ArtifactError

# Integer arrays with at most this many distinct values get a histogram instead of a mean.
MAX_HISTOGRAM_VALUES = 32
# Long lists in attrs (image ids, file names) are summarised, not printed whole.
MAX_LISTED = 8


def describe_artifact(path: str | Path, limit: int | None = None) -> dict[str, Any]:
    """Tree, layout, sizes, provenance and value statistics of a Zarr group.

    Statistics read at most `limit` items along each array's first axis (all when None). An
    array with a file missing or failing its checksum is marked "damaged" instead, so the rest
    of a damaged artifact can still be looked at.
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: not found")
    try:
        group = zarr.open_group(path, mode="r")
    except (FileNotFoundError, ValueError, KeyError, json.JSONDecodeError):
        raise ArtifactError(f"{path}: not a Zarr group") from None
    manifest = group.attrs.get("manifest")
    absent = absent_files(path, manifest) if isinstance(manifest, dict) else {}
    return _group_summary(group, str(path), "", absent, limit)


def damage_found(summary: dict[str, Any]) -> list[str]:
    """Every damage `describe_artifact` marked, in this group and those inside it."""
    found = [problem for array in summary["arrays"] for problem in array.get("damaged", [])]
    return found + [problem for sub in summary["groups"] for problem in damage_found(sub)]


def _group_summary(
    group: zarr.Group, name: str, prefix: str, absent: dict[str, str], limit: int | None
) -> dict[str, Any]:
    arrays = dict(group.arrays())

    def array_summary(key: str) -> dict[str, Any]:
        inside = f"{prefix}{key}/"
        missing = [problem for file, problem in absent.items() if file.startswith(inside)]
        if missing:  # its statistics would count the fill value in place of the lost files
            return {**_layout(arrays[key]), "damaged": missing}
        try:
            return _array_summary(arrays, key, limit)
        except (ValueError, RuntimeError) as exc:  # a chunk failed its checksum as it decoded
            reason = str(exc).split(". ")[0][:80] if str(exc) else type(exc).__name__
            return {**_layout(arrays[key]), "damaged": [f"array '{key}' is damaged ({reason})"]}

    return {
        "path": name,
        "attrs": group.attrs.asdict(),
        "arrays": [array_summary(key) for key in sorted(arrays)],
        "groups": [
            _group_summary(sub, f"{name}/{key}", f"{prefix}{key}/", absent, limit)
            for key, sub in sorted(group.groups())
        ],
    }


def _layout(array: zarr.Array) -> dict[str, Any]:
    return {
        "name": array.basename,
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "chunks": list(array.chunks),
        "shards": list(array.shards) if array.shards else None,
        "stored_bytes": array.nbytes_stored(),
        "raw_bytes": array.nbytes,
    }


def _array_summary(arrays: dict[str, zarr.Array], name: str, limit: int | None) -> dict[str, Any]:
    array = arrays[name]
    summary = _layout(array)
    ragged_by = array.attrs.get("ragged_by")
    if ragged_by in arrays:
        counts = np.diff(arrays[ragged_by][...])
        summary["per_image"] = _min_mean_max(counts) if counts.size else None
        limit = None  # flat rows of all images: small, and a row limit would mean nothing
    if array.size == 0:
        return summary
    items = array.shape[0] if limit is None else min(limit, array.shape[0])
    summary["stats_over"] = items
    summary["stats"] = _value_stats(array, limit)
    return summary


def _value_stats(array: zarr.Array, limit: int | None) -> dict[str, Any]:
    dtype = array.dtype
    if dtype == np.dtype(bool):
        true = sum(int(block.sum()) for block in iter_blocks(array, limit))
        return {"true": true}
    if np.issubdtype(dtype, np.integer) and dtype.itemsize <= 2:
        histogram: dict[int, int] = {}
        for block in iter_blocks(array, limit):
            values, counts = np.unique(block, return_counts=True)
            for value, count in zip(values.tolist(), counts.tolist(), strict=True):
                histogram[value] = histogram.get(value, 0) + count
        if len(histogram) <= MAX_HISTOGRAM_VALUES:
            return {"histogram": {str(k): histogram[k] for k in sorted(histogram)}}
        values = np.array(sorted(histogram))
        weights = np.array([histogram[v] for v in values.tolist()])
        mean = float((values * weights).sum() / weights.sum())
        return {"min": values[0].item(), "max": values[-1].item(), "mean": mean}
    low, high, total, count = np.inf, -np.inf, 0.0, 0
    for block in iter_blocks(array, limit):
        block = block.astype(np.float64)
        low, high = min(low, block.min()), max(high, block.max())
        total, count = total + block.sum(), count + block.size
    return {"min": float(low), "max": float(high), "mean": total / count}


def _min_mean_max(values: np.ndarray) -> dict[str, float]:
    return {"min": int(values.min()), "mean": float(values.mean()), "max": int(values.max())}


def format_description(summary: dict[str, Any], indent: str = "") -> str:
    """The summary as aligned text for a terminal."""
    attrs = summary["attrs"]
    state = {True: "complete", False: "INCOMPLETE"}.get(attrs.get("complete"), "no provenance")
    lines = [f"{indent}{summary['path']}  ({state})"]
    for key in sorted(attrs):
        if key != "complete":
            lines.append(f"{indent}  {key}: {_short(attrs[key])}")
    for array in summary["arrays"]:
        lines += _render_array(array, indent + "  ")
    for sub in summary["groups"]:
        lines.append(format_description(sub, indent + "  "))
    return "\n".join(lines)


def _render_array(array: dict[str, Any], indent: str) -> list[str]:
    shards = "x".join(map(str, array["shards"])) if array["shards"] else "-"
    ratio = array["raw_bytes"] / array["stored_bytes"] if array["stored_bytes"] else float("inf")
    lines = [
        f"{indent}{array['name']}: {array['dtype']} "
        f"[{', '.join(map(str, array['shape']))}]  "
        f"chunks {'x'.join(map(str, array['chunks']))}  shards {shards}  "
        f"stored {_bytes(array['stored_bytes'])} of {_bytes(array['raw_bytes'])} ({ratio:.1f}x)"
    ]
    lines += [f"{indent}    DAMAGED: {problem}" for problem in array.get("damaged", [])]
    if array.get("per_image"):
        p = array["per_image"]
        lines.append(f"{indent}    per image: min {p['min']}, mean {p['mean']:.2f}, max {p['max']}")
    stats = array.get("stats")
    if stats is not None:
        over = f"first {array['stats_over']} of {array['shape'][0]}"
        if array["stats_over"] == array["shape"][0]:
            over = "all"
        if "histogram" in stats:
            total = sum(stats["histogram"].values())
            parts = [f"{k}: {v} ({100 * v / total:.3g}%)" for k, v in stats["histogram"].items()]
            lines.append(f"{indent}    values ({over}): " + ", ".join(parts))
        elif "true" in stats:
            lines.append(f"{indent}    true ({over}): {stats['true']}")
        else:
            lines.append(
                f"{indent}    {over}: min {stats['min']:.6g}, max {stats['max']:.6g}, "
                f"mean {stats['mean']:.6g}"
            )
    return lines


def _short(value: Any) -> str:
    if isinstance(value, list) and len(value) > MAX_LISTED:
        head = ", ".join(json.dumps(v) for v in value[:3])
        return f"[{head}, ...] ({len(value)} items)"
    if isinstance(value, dict) and len(value) > MAX_LISTED:  # e.g. the manifest of files
        head = ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in list(value.items())[:2])
        return f"{{{head}, ...}} ({len(value)} entries)"
    return json.dumps(value)


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
