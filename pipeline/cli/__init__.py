"""The `frcnn` command: inspect, show, detect and deps."""
