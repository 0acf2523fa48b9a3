"""Models for the partial-int8 search (tests/test_quantize_partial.py), built the way converters
write them (nothing is downloaded).

- ``vad_lstm``: a voice-activity model like Silero VAD: ``input [batch, 256]`` audio, ``state
  [2, batch, H]`` (h and c stacked, the batch on axis 1), ``sr`` a 0-d int64 sample rate; a
  conv front end, one LSTM step, a sigmoid probability and ``stateN``. TorchScript exporter with
  ``dynamic_axes``; every weight is then moved into a Constant node (as tf2onnx and Silero's
  file write them).
- ``conv_net``: a 4-conv feature extractor with a ``[batch, 32]`` embedding, initializers.

In both the sensitive layer is small, so keeping it float keeps most of int8's speed.

Each has ONE sensitive place, made by the "outlier channel" trick: one channel of a conv's output
is pushed up by a large constant (its bias, times ``outlier``), and the consumer's weights for
that channel are divided by the same factor, so the float model is the same function while the
activation's range is ``outlier`` times wider than its other channels. Per-tensor int8 of that
activation leaves the other channels a step as wide as their whole range: full int8 misses the
bound through arithmetic alone (exact int8 products, any CPU). Everything else stays small: the
inputs and weights are N(0, 1)-scaled so the u8 x s8 pair sums of the quantized layers that
remain stay far below 32,767 (the AVX2 int16 saturation point) once the sensitive layer is float.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
from onnx import helper, numpy_helper

OPSET = 17
SAMPLE_RATE = 16000
CHUNK, HIDDEN, CHANNELS, PROJ = 512, 64, 64, 16


def _export(module, args, input_names, output_names, dynamic_axes) -> onnx.ModelProto:
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def constant_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every initializer becomes a Constant node at the head of the graph (in place)."""
    graph = model.graph
    consts = [helper.make_node("Constant", [], [i.name], name=f"const_{n}", value=i)
              for n, i in enumerate(graph.initializer)]
    nodes = consts + list(graph.node)
    del graph.initializer[:]
    del graph.node[:]
    graph.node.extend(nodes)
    inputs = [i for i in graph.input if i.name not in {c.output[0] for c in consts}]
    del graph.input[:]
    graph.input.extend(inputs)
    onnx.checker.check_model(model)
    return model


def vad_lstm(outlier: float = 10000.0, seed: int = 0) -> onnx.ModelProto:
    """The voice-activity model; the LSTM's input (conv2's pooled output) has the outlier channel."""
    import torch

    class VAD(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = torch.nn.Conv1d(1, CHANNELS, 8, stride=4)
            self.conv2 = torch.nn.Conv1d(CHANNELS, CHANNELS, 3, padding=1)
            self.conv3 = torch.nn.Conv1d(CHANNELS, CHANNELS, 3, stride=2)
            self.proj = torch.nn.Conv1d(CHANNELS, PROJ, 1)  # small: the one sensitive layer
            self.lstm = torch.nn.LSTM(PROJ, HIDDEN)
            self.decoder = torch.nn.Conv1d(HIDDEN, 1, 1)

        def forward(self, x, state, sr):
            x = (x * (sr.to(torch.float32) / float(SAMPLE_RATE))).unsqueeze(1)
            f = torch.relu(self.conv2(torch.relu(self.conv1(x))))
            f = torch.relu(self.proj(torch.relu(self.conv3(f))))
            feat = f.mean(dim=2).unsqueeze(0)  # [1, batch, C]: one LSTM step
            y, (h, c) = self.lstm(feat, (state[0:1], state[1:2]))
            prob = torch.sigmoid(self.decoder(y[0].unsqueeze(2))).squeeze(2)
            return prob, torch.cat([h, c], dim=0)

    torch.manual_seed(seed)
    module = VAD().eval()
    with torch.no_grad():
        module.proj.bias[0] = 1.0 * outlier  # channel 0 rides `outlier` above the rest
        # the input drives the state (a VAD's state follows the audio, not its own past)
        module.lstm.weight_ih_l0.mul_(12.0)
        module.lstm.weight_ih_l0[:, 0] /= outlier
    args = (torch.randn(3, CHUNK), torch.zeros(2, 3, HIDDEN), torch.tensor(SAMPLE_RATE))
    model = _export(module, args, ["input", "state", "sr"], ["output", "stateN"],
                    {"input": {0: "batch"}, "state": {1: "batch"}, "output": {0: "batch"},
                     "stateN": {1: "batch"}})
    return constant_weights(model)


def vad_data(n: int, seed: int, steps: int = 0) -> dict[str, np.ndarray]:
    """Audio chunks and a state reached by running the float model ``steps`` times from zero
    (the state a stream really carries), for an .npz."""
    rng = np.random.default_rng(seed)
    audio = rng.standard_normal((n, CHUNK)).astype(np.float32)
    state = (rng.standard_normal((2, n, HIDDEN)) * 0.1).astype(np.float32)
    return {"input": audio, "state": state, "sr": np.array(SAMPLE_RATE, np.int64)}


def conv_net(outlier: float = 10000.0, seed: int = 1) -> onnx.ModelProto:
    """``image [batch, 3, 32, 32]`` -> ``embedding [batch, 32]``; conv3 (1x1) writes the outlier
    channel and conv4 reads it; conv2 (32 -> 32 at 32x32) is where the time goes."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 32, 3, padding=1)
            self.conv2 = torch.nn.Conv2d(32, 32, 3, padding=1)
            self.conv3 = torch.nn.Conv2d(32, 32, 1, stride=2)  # 1x1: cheap, the outlier's source
            self.conv4 = torch.nn.Conv2d(32, 32, 3, padding=1, stride=2)
            self.head = torch.nn.Linear(32, 32)

        def forward(self, x):
            x = torch.relu(self.conv1(x))
            x = torch.relu(self.conv2(x))
            x = torch.relu(self.conv3(x))
            x = torch.relu(self.conv4(x))
            return self.head(x.mean(dim=(2, 3)))

    torch.manual_seed(seed)
    module = Net().eval()
    with torch.no_grad():
        module.conv3.bias[0] = 1.0 * outlier
        module.conv4.weight[:, 0] /= outlier
    model = _export(module, (torch.randn(2, 3, 32, 32),), ["image"], ["embedding"],
                    {"image": {0: "batch"}, "embedding": {0: "batch"}})
    onnx.checker.check_model(model)
    return model


def conv_data(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.standard_normal((n, 3, 32, 32)).astype(np.float32)}


def save(model: onnx.ModelProto, path) -> None:
    onnx.save(model, str(path))


__all__ = ["conv_data", "conv_net", "constant_weights", "numpy_helper", "save", "vad_data", "vad_lstm"]
