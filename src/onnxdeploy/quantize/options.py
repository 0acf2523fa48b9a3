"""Options of ``onnxdeploy quantize`` and their validation against what ORT's quantizer supports."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import OptionError

MODES = ("dynamic", "static", "auto")
WEIGHT_TYPES = ("int8", "uint8")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")

DEFAULT_MAX_ACCURACY_DROP = 0.01
DEFAULT_CALIBRATION_COUNT = 128
DEFAULT_LATENCY_BATCH = 32
#: seconds of in-process timing each variant may cost (``--latency-budget``)
DEFAULT_LATENCY_BUDGET_S = 3.0
#: non-class outputs (embeddings, maps): the smallest per-sample cosine to float allowed
DEFAULT_MIN_COSINE = 0.99
#: seconds auto's partial-int8 search may spend (``--search-budget``)
DEFAULT_SEARCH_BUDGET_S = 300.0


@dataclass
class QuantizeOptions:
    """Options of the quantize step; every field has a safe default."""

    mode: str = "dynamic"
    weight_type: str = "int8"
    per_channel: bool = False
    reduce_range: bool = False
    op_types: tuple[str, ...] | None = None
    data: str | None = None
    dims: dict[str, int] = field(default_factory=dict)
    count: int | None = None
    calibration_method: str = "minmax"
    calibration_count: int = DEFAULT_CALIBRATION_COUNT
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP
    allow_slower: bool = False
    latency_batch: int = DEFAULT_LATENCY_BATCH
    latency_budget_s: float = DEFAULT_LATENCY_BUDGET_S
    min_cosine: float = DEFAULT_MIN_COSINE
    task: str | None = None
    batch_axes: dict[str, int | None] = field(default_factory=dict)
    int_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    threads: int | None = None
    #: auto: when no full-int8 candidate keeps quality, keep the costliest MatMuls float
    fallback: bool = True
    #: auto: also try per-channel int8 with the MatMul inputs' outlier channels in float
    split_outliers: bool = True
    #: the most units (nodes with their fused activations) the search may keep float (None: half)
    max_float_matmuls: int | None = None
    #: state input -> state output pairs (``--state IN:OUT``); empty: paired by name and shape
    state: dict[str, str] = field(default_factory=dict)
    #: seconds the partial-int8 search (calibration grid and tries) may spend before it stops
    search_budget_s: float = DEFAULT_SEARCH_BUDGET_S
    #: auto: also OpenVINO int8 through NNCF (quantize/nncf_int8.py) when the openvino extra is
    #: installed; the CLI and the pipeline turn it on, the library leaves ORT's candidates alone
    runtimes: bool = False


def supported_op_types(mode: str) -> frozenset[str]:
    """Operator types ORT's quantizer can quantize in ``mode`` (auto: any mode)."""
    from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry

    # Gemm is not in the integer-ops registry, but the dynamic quantizer rewrites Gemm to MatMul
    # first, so asking for Gemm in dynamic mode is meaningful.
    dynamic = frozenset(IntegerOpsRegistry) | {"Gemm"}
    static = frozenset(QDQRegistry)
    return {"dynamic": dynamic, "static": static}.get(mode, dynamic | static)


def parse_op_types(text: str | None) -> tuple[str, ...] | None:
    """Split ``MatMul,Gemm`` into a tuple; empty means all supported ops."""
    if text is None:
        return None
    items = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not items:
        raise OptionError("--op-types is empty; expected a comma-separated list such as MatMul,Gemm")
    return items


def validate(opts: QuantizeOptions) -> None:
    """Raise OptionError for a value that makes no sense, naming what was expected."""
    if opts.mode not in MODES:
        raise OptionError(f"--mode {opts.mode!r}: expected one of {', '.join(MODES)}")
    if opts.weight_type not in WEIGHT_TYPES:
        raise OptionError(f"--weight-type {opts.weight_type!r}: expected one of {', '.join(WEIGHT_TYPES)}")
    if opts.calibration_method not in CALIBRATION_METHODS:
        raise OptionError(
            f"--calibrate {opts.calibration_method!r}: expected one of {', '.join(CALIBRATION_METHODS)}"
        )
    if opts.op_types is not None:
        known = supported_op_types(opts.mode)
        unknown = [t for t in opts.op_types if t not in known]
        if unknown:
            raise OptionError(
                f"--op-types: {', '.join(unknown)} cannot be quantized in {opts.mode} mode; "
                f"expected some of {', '.join(sorted(known))}"
            )
    for name in ("max_accuracy_drop",):
        if not 0 <= getattr(opts, name) < 1:
            raise OptionError(f"{name.replace('_', '-')} must be in [0, 1), got {getattr(opts, name)}")
    if not 0 < opts.min_cosine <= 1:
        raise OptionError(f"--min-cosine must be in (0, 1], got {opts.min_cosine}")
    if not opts.latency_budget_s > 0:
        raise OptionError(f"--latency-budget must be > 0 seconds, got {opts.latency_budget_s}")
    if opts.max_float_matmuls is not None and opts.max_float_matmuls < 1:
        raise OptionError(f"--max-float-matmuls must be at least 1, got {opts.max_float_matmuls}")
    if not opts.search_budget_s > 0:
        raise OptionError(f"--search-budget must be > 0 seconds, got {opts.search_budget_s}")
    for name in ("calibration_count", "latency_batch"):
        if getattr(opts, name) < 1:
            raise OptionError(f"{name.replace('_', '-')} must be at least 1, got {getattr(opts, name)}")


def parse_state(pairs: tuple[str, ...] | list[str] | None) -> dict[str, str]:
    """``("state:stateN", "h0:hn")`` -> ``{"state": "stateN", "h0": "hn"}``."""
    out: dict[str, str] = {}
    for item in pairs or ():
        name, sep, output = item.partition(":")
        if not sep or not name.strip() or not output.strip():
            raise OptionError(f"--state {item!r}: expected IN:OUT, a state input and the output "
                              "that carries it to the next step (e.g. state:stateN)")
        out[name.strip()] = output.strip()
    return out
