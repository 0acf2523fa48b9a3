"""The built-in network definitions (plain ``torch.nn`` modules, no training here)."""

from __future__ import annotations

import torch
from torch import nn


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    # bias=False: BatchNorm's shift makes the conv bias redundant, and the exporters fold BN
    # into the conv in eval mode anyway.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


class DigitsCNN(nn.Module):
    """A small conv net for 8×8 digits: three Conv+BatchNorm+ReLU blocks, then a linear head."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_block(1, 16),
            _conv_block(16, 32),
            nn.MaxPool2d(2),  # 8×8 -> 4×4
            _conv_block(32, 64),
            nn.MaxPool2d(2),  # 4×4 -> 2×2
        )
        self.head = nn.Linear(64 * 2 * 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [N, 1, 8, 8]`` pixels in [0, 1] -> logits ``[N, classes]``."""
        return self.head(torch.flatten(self.features(x), 1))


class DigitsMLP(nn.Module):
    """A wide MLP (64→2048→2048→10): memory-bound matmuls, where int8 pays off on CPU."""

    def __init__(self, hidden: int = 2048, classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(64, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [N, 64]`` pixels in [0, 1] -> logits ``[N, classes]``."""
        return self.net(x)
