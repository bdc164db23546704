"""The `frcnn` command: inspect, verify, show, detect and deps."""
