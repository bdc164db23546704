"""Artifacts: the Zarr store contract, and per artifact kind one module with its writer and
its reader class (plus the model files the training stages write)."""
