"""Mini-batch sampling (paper section 3.1.3): up to a fraction foreground, the rest background.

Sampling is done at training time from a generator seeded per iteration, so the artifacts hold
every candidate and a rerun draws exactly the same mini-batches.
"""

from __future__ import annotations

import torch
from torch import Tensor


def sample_foreground_background(
    foreground: Tensor,
    background: Tensor,
    batch_size: int,
    fg_fraction: float,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Indices of sampled foreground and background entries (both masks are 1-D bool).

    At most `batch_size * fg_fraction` foreground; background fills the batch up to
    `batch_size` (fewer if there are not enough of either).
    """
    fg = torch.nonzero(foreground).flatten()
    bg = torch.nonzero(background).flatten()
    num_fg = min(int(batch_size * fg_fraction), len(fg))
    num_bg = min(batch_size - num_fg, len(bg))
    fg = fg[torch.randperm(len(fg), generator=generator)[:num_fg]]
    bg = bg[torch.randperm(len(bg), generator=generator)[:num_bg]]
    return fg, bg
