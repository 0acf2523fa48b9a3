"""Training of the built-in models and their weight cache.

Training is deterministic given a seed on a given machine: ``torch.manual_seed`` fixes the
initial weights, a seeded generator fixes the batch order, and the data split is the fixed one
from ``data.digits_split()``. Weights are cached as a ``state_dict`` (``torch.save``, written
atomically, read back with ``weights_only=True``) beside a small JSON record holding the test
accuracy; the record is written last, so a weights file without one is never trusted.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path, atomic_write
from ..data import digits_split
from .entry import ZooEntry


@dataclass
class TrainInfo:
    """What is known about a trained built-in: accuracy, size, input and labels."""

    name: str
    accuracy: float
    params: int
    input_shape: tuple[int, ...]
    input_name: str
    output_name: str
    labels: tuple[str, ...]
    input_scaling: dict[str, Any]
    seed: int
    epochs: int
    train_seconds: float
    cached: bool  # True when the weights came from the cache rather than this call's training
    weights_path: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def _paths(entry: ZooEntry, root: Path, seed: int) -> tuple[Path, Path]:
    stem = f"{entry.name}-seed{seed}-{entry.version}"
    return root / f"{stem}.pt", root / f"{stem}.json"


def read_record(entry: ZooEntry, root: Path, seed: int) -> dict[str, Any] | None:
    """The JSON record of cached weights, or None when absent or unreadable."""
    weights, record = _paths(entry, root, seed)
    if not (weights.exists() and record.exists()):
        return None
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "accuracy" in data else None


def count_params(module) -> int:
    """Number of trainable parameters."""
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


def _inputs(entry: ZooEntry, x: np.ndarray):
    import torch

    return torch.from_numpy(np.array(x, dtype=np.float32)).reshape(-1, *entry.input_shape[1:])


def evaluate(entry: ZooEntry, module) -> float:
    """Top-1 accuracy of ``module`` on the fixed digits test split."""
    import torch

    _, _, x_te, y_te = digits_split()
    module.eval()
    with torch.no_grad():
        pred = module(_inputs(entry, x_te)).argmax(dim=1).numpy()
    return float(np.mean(pred == y_te))


def train(entry: ZooEntry, *, seed: int = 0, progress: bool = True):
    """Train a fresh network; returns ``(module in eval mode, test accuracy, seconds)``."""
    import torch

    torch.manual_seed(seed)
    module = entry.build()
    x_tr, y_tr, _, _ = digits_split()
    xs, ys = _inputs(entry, x_tr), torch.from_numpy(np.array(y_tr))
    opt = torch.optim.Adam(module.parameters(), lr=entry.lr, weight_decay=entry.weight_decay)
    steps_per_epoch = -(-len(xs) // entry.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=entry.lr, epochs=entry.epochs, steps_per_epoch=steps_per_epoch
    )
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    # One thread: these models are too small to gain from more, and on a busy 2-core machine
    # two spinning OpenMP threads made training 10-15x slower (measured 56 s vs 3.4 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _epochs(entry, module, xs, ys, opt, sched, gen, progress)
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - start
    return module.eval(), evaluate(entry, module), seconds


def _epochs(entry: ZooEntry, module, xs, ys, opt, sched, gen, progress: bool) -> None:
    import torch
    from torch import nn

    loss_fn = nn.CrossEntropyLoss()
    with _progress_bar(progress, entry.name, entry.epochs) as advance:
        for _ in range(entry.epochs):
            module.train()
            order = torch.randperm(len(xs), generator=gen)
            total = 0.0
            for i in range(0, len(xs), entry.batch_size):
                idx = order[i : i + entry.batch_size]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(module(xs[idx]), ys[idx])
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
            advance(total / len(xs))


class _progress_bar:
    """A rich progress bar on stderr (epochs, last loss), or nothing when disabled."""

    def __init__(self, enabled: bool, name: str, epochs: int) -> None:
        self.enabled, self.name, self.epochs = enabled, name, epochs
        self._progress = None

    def __enter__(self):
        if not self.enabled:
            return lambda loss: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("training {task.fields[model]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("epochs  loss {task.fields[loss]}"), TimeElapsedColumn(),
            console=Console(stderr=True), transient=True,
        )
        self._progress.start()
        task = self._progress.add_task("train", total=self.epochs, model=self.name, loss="-")
        return lambda loss: self._progress.update(task, advance=1, loss=f"{loss:.4f}")

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()


def load_trained(entry: ZooEntry, root: Path, *, seed: int = 0, progress: bool = True):
    """``(module in eval mode, TrainInfo)``: cached weights when present, else train and cache."""
    import torch

    weights, record_path = _paths(entry, root, seed)
    record = read_record(entry, root, seed)
    module = entry.build()
    if record is not None:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            module.load_state_dict(state)
        except Exception:  # a corrupt or stale cache entry is retrained, not fatal
            record = None
        else:
            return module.eval(), _info(entry, module, record, weights, cached=True)
    module, acc, seconds = train(entry, seed=seed, progress=progress)
    record = {
        "name": entry.name, "version": entry.version, "seed": seed, "epochs": entry.epochs,
        "accuracy": acc, "params": count_params(module), "train_seconds": round(seconds, 3),
        "torch": torch.__version__,
    }
    root.mkdir(parents=True, exist_ok=True)
    with atomic_path(weights, suffix=".pt") as tmp:
        torch.save(module.state_dict(), tmp)
    atomic_write(record_path, json.dumps(record, indent=2) + "\n")
    return module, _info(entry, module, record, weights, cached=False)


def _info(entry: ZooEntry, module, record: dict[str, Any], weights: Path, *, cached: bool) -> TrainInfo:
    return TrainInfo(
        name=entry.name,
        accuracy=float(record["accuracy"]),
        params=count_params(module),
        input_shape=entry.input_shape,
        input_name=entry.input_name,
        output_name=entry.output_name,
        labels=entry.labels,
        input_scaling=dict(entry.input_scaling),
        seed=int(record.get("seed", 0)),
        epochs=int(record.get("epochs", entry.epochs)),
        train_seconds=float(record.get("train_seconds", 0.0)),
        cached=cached,
        weights_path=str(weights),
    )
