"""Training: the one seeded, resumable loop, the per-step objectives, and the
train-and-save wiring the five training stages share."""
