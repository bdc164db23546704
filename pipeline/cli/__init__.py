"""The `frcnn` command: report, inspect, verify, show, detect and dvc-yaml."""
