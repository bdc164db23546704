"""Model pieces: anchors, box coding, targets, sampling, losses, backbones, RPN, RoI head,
and the unified detector. Tensors in, tensors out; no file I/O."""
