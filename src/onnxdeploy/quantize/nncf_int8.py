"""OpenVINO int8 through NNCF: a candidate of ``--mode auto`` beside ONNX Runtime's recipes.

``nncf.quantize`` (NNCF's public API) runs on the ONNX model itself with the run's calibration
samples (``ModelType.TRANSFORMER`` for a model whose inputs are all integer: token ids, masks)
and gives back a QDQ ``.onnx`` (int8 weights behind DequantizeLinear, QuantizeLinear /
DequantizeLinear pairs on the activations it quantizes). It is written with
``onnxdeploy.runtime=openvino`` and ``onnxdeploy.precision=int8`` in its metadata, so the
measurement times it on OpenVINO and ``serve`` runs it there, as measured.

When the candidate is faster but misses the quality bound, the partial-int8 search rescues it as
it rescues ORT's: ``partial.rank_units`` ranks the weight nodes by their simulated int8 cost
(weights per channel, as NNCF quantizes them), and ``fallback.search`` keeps the costliest float
through NNCF's ``IgnoredScope(names=...)``.

Without the ``openvino`` extra (``openvino`` and ``nncf``) there is no candidate, and
``unavailable()`` says why in one line for the report.
"""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import replace
from pathlib import Path

from ..data import DataSet
from ..errors import RuntimeFailure, first_line
from ..modelfile import META_PRECISION, META_RUNTIME, load_model, save_model, set_metadata
from . import fallback, partial
from .prepare import quiet_quantizer
from .recipes import CALIBRATION_BATCH, Recipe

NAME = "nncf-int8"
#: the mode word of NNCF recipes (ORT's are "dynamic" and "static")
MODE = "nncf"
RUNTIME, PRECISION = "openvino", "int8"
#: the weight nodes NNCF quantizes that the ranking simulates (per channel, int8 symmetric)
RANKED_TYPES = ("MatMul", "Gemm", "Conv", "ConvTranspose")


def unavailable() -> str | None:
    """None when NNCF and OpenVINO are installed; else the one line the report gives."""
    from ..runtimes import openvino_available

    missing = [m for m, ok in (("openvino", openvino_available()), ("nncf", _has_nncf())) if not ok]
    if not missing:
        return None
    return (f"{NAME} (OpenVINO int8 through NNCF) left out: {' and '.join(missing)} not installed; "
            "pip install 'onnxdeploy[openvino]'")


def _has_nncf() -> bool:
    try:
        import nncf  # noqa: F401
    except ImportError:
        return False
    return True


def recipe() -> Recipe:
    """The NNCF candidate as a recipe (its name, and the nodes a rescue keeps float): NNCF
    quantizes weights per channel and calibrates the activations (static, QDQ)."""
    return Recipe(name=NAME, mode=MODE, per_channel=True, quant_format="qdq")


def settings(rec: Recipe, *, transformer: bool) -> dict:
    """What the report shows of an NNCF recipe."""
    out = {"mode": MODE, "quantizer": f"nncf {_version()}", "runtime": RUNTIME, "precision": PRECISION,
           "model_type": "transformer" if transformer else "default", "per_channel": True,
           "quant_format": "qdq"}
    if rec.nodes_to_exclude:
        out["kept_float"] = list(rec.nodes_to_exclude)
    return out


def _version() -> str:
    try:
        import nncf
    except ImportError:
        return "not installed"
    return nncf.__version__


def build(rec: Recipe, src: Path, out: Path, calibration: DataSet, *, transformer: bool) -> float:
    """Quantize ``src`` with NNCF into ``out`` (QDQ ``.onnx`` with the variant's metadata); the
    seconds it took. ``transformer``: ``ModelType.TRANSFORMER`` (SmoothQuant, attention kept
    right). NNCF's failures become RuntimeFailure in one line."""
    if calibration is None or len(calibration) == 0:
        raise RuntimeFailure(f"{rec.name}: NNCF needs calibration samples")
    import nncf

    items = [feeds for feeds, _ in calibration.batches(CALIBRATION_BATCH)]
    kwargs = {}
    if transformer:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    if rec.nodes_to_exclude:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=list(rec.nodes_to_exclude))
    t0 = time.monotonic()
    model = load_model(src)
    try:
        # NNCF logs INFO lines and progress bars: keep ``--json`` output clean
        with quiet_quantizer("nncf"), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items), **kwargs)
    except Exception as exc:  # NNCF raises its own errors with pages of text
        raise RuntimeFailure(f"NNCF {_version()} failed on '{rec.name}': {type(exc).__name__}: "
                             f"{first_line(exc)}") from exc
    set_metadata(quantized, {META_RUNTIME: RUNTIME, META_PRECISION: PRECISION})
    save_model(quantized, out)
    return time.monotonic() - t0


def rank(rec: Recipe, src: Path, data: DataSet, work: Path, threads: int | None,
         layers: dict[str, str]) -> list[fallback.LayerCost]:
    """The weight nodes of ``src`` by their simulated int8 cost, costliest first (the partial
    search's ranking with per-channel weights and per-tensor activations, as NNCF quantizes)."""
    ranking_recipe = replace(rec, mode="dynamic", op_types=RANKED_TYPES, per_channel=True,
                             reduce_range=False, nodes_to_exclude=())
    return partial.rank_units(src, ranking_recipe, data, work, threads, layers)


def rescue(rec: Recipe, ranking: list[fallback.LayerCost], judge, max_float: int | None,
           budget_s: float) -> tuple[fallback.Fallback, Recipe | None]:
    """The partial-int8 search from the NNCF candidate: ``judge(recipe)`` builds one try (NNCF
    with ``recipe.nodes_to_exclude`` in its ignored scope) and scores it."""
    return fallback.search(rec, ranking, judge, max_float, budget_s=budget_s, noun="nodes")


__all__ = ["MODE", "NAME", "PRECISION", "RUNTIME", "build", "rank", "recipe", "rescue", "settings",
           "unavailable"]
