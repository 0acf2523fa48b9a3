"""Factories for the export tests, loaded as ``tests/data/user_model.py:<fn>``."""

import torch
from torch import nn

#: the default example shape ``onnxdeploy export`` uses when --input-shape is absent
INPUT_SHAPE = (1, 3, 8, 8)


class SmallConv(nn.Module):
    """Conv + ReLU, global average pool, linear: accepts any height and width."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(image)).mean(dim=(2, 3)))


class FlattenLinear(nn.Module):
    """Flatten into a fixed-size Linear: height and width cannot be dynamic."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 4)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(image, 1))


class Diverging(SmallConv):
    """Adds 0.5 only while being exported: the ONNX file genuinely differs from eager PyTorch."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = super().forward(image)
        if torch.onnx.is_in_onnx_export():
            out = out + 0.5
        return out


def make_model() -> nn.Module:
    torch.manual_seed(1)
    return SmallConv()


def fixed_size() -> nn.Module:
    torch.manual_seed(1)
    return FlattenLinear()


def diverging() -> nn.Module:
    torch.manual_seed(1)
    return Diverging()


def not_a_module():
    return {"weights": [1, 2, 3]}


def raises() -> nn.Module:
    raise RuntimeError("factory broke on purpose")
