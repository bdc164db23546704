"""Artifacts: the contract every stage output keeps (provenance, writer, store, integrity,
lineage, the checked reading of a stage's inputs), views of the prepared images, and per
artifact kind one module with its writer and its reader class."""
