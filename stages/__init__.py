"""One module per DVC stage: read params, call `pipeline`, write the stage's outputs."""
