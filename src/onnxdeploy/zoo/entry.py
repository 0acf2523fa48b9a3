"""``ZooEntry``: one built-in model (how to build it, what it takes, how it is trained), apart
from the list in ``zoo/__init__.py`` so that ``zoo.train`` takes it from below."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..data import DIGITS_SCALE

DIGIT_LABELS = tuple(str(i) for i in range(10))
#: how raw 0..16 pixel intensities become model input: ``x * scale + offset``
DIGITS_INPUT_SCALING = {"scale": DIGITS_SCALE, "offset": 0.0, "raw_min": 0, "raw_max": 16}


@dataclass(frozen=True)
class ZooEntry:
    """One built-in model: how to build it, what it takes, and how it is trained."""

    name: str
    description: str
    builder: str  # attribute of ``zoo.models`` (imported lazily: listing needs no torch)
    input_shape: tuple[int, ...]  # an example shape, batch axis first
    epochs: int
    lr: float
    batch_size: int = 64
    weight_decay: float = 0.0
    #: bump when the definition or recipe changes, so stale cached weights are not reused
    version: str = "v1"
    input_name: str = "x"
    output_name: str = "logits"
    labels: tuple[str, ...] = DIGIT_LABELS
    input_scaling: dict[str, Any] = field(default_factory=lambda: dict(DIGITS_INPUT_SCALING))

    def build(self):
        """A freshly initialised (untrained) ``nn.Module``."""
        from . import models

        factory: Callable = getattr(models, self.builder)
        return factory()
