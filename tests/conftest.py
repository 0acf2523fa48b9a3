"""Shared fixtures: small ONNX models written to a temporary directory."""

from __future__ import annotations

import pytest
from builders import mlp_classifier, save, two_input_int_model


@pytest.fixture
def mlp_path(tmp_path):
    """A one-input float classifier (x: [batch, 64] -> logits: [batch, 10])."""
    return save(mlp_classifier(), tmp_path / "mlp.onnx")


@pytest.fixture
def two_input_path(tmp_path):
    """A two-input model with one int64 input (x: [batch, 4] float, idx: [batch] int64)."""
    return save(two_input_int_model(), tmp_path / "two.onnx")
