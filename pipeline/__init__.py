"""staged-frcnn: Faster R-CNN as a stage-wise DVC pipeline with cached Zarr artifacts."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("staged-frcnn")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
