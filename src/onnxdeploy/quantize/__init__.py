"""Step 2: int8 quantization with ONNX Runtime that reports size, accuracy and speed truthfully.

    options.py  QuantizeOptions, validation against what the quantizer supports
    prepare.py  refuse already-quantized models; Constant weights, stale shapes, opset, pre-processing
    recipes.py  one set of quantizer settings each, and the candidates ``--mode auto`` tries
    step.py     quantize_model: quantize, measure A/B on the same inputs, choose, write atomically
    report.py   CandidateResult and QuantizeReport
"""

from .options import QuantizeOptions
from .report import CandidateResult, QuantizeReport
from .step import quantize_model

__all__ = ["QuantizeOptions", "QuantizeReport", "CandidateResult", "quantize_model"]
