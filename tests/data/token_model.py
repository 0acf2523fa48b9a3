"""Factories whose forward takes token ids, a boolean mask and a segment id (export tests)."""

import torch
from torch import nn

VOCAB = 100
SEGMENTS = 3


class TokenClassifier(nn.Module):
    """Embeds ids and segments, averages the unmasked positions, classifies into 4."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, 16)
        self.segments = nn.Embedding(SEGMENTS, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
        h = self.tokens(input_ids) + self.segments(segment)
        m = mask.unsqueeze(-1).to(h.dtype)
        return self.head((h * m).sum(1) / m.sum(1).clamp(min=1.0))


class IdsOnly(nn.Module):
    """One int input: embeds ids and averages them."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, 8)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.tokens(input_ids).mean(1)


def make_token_model() -> nn.Module:
    torch.manual_seed(2)
    return TokenClassifier()


def make_ids_model() -> nn.Module:
    torch.manual_seed(3)
    return IdsOnly()
