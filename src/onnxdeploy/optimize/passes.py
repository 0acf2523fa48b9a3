"""onnxoptimizer's passes: names, one-line descriptions, name checking, and why a pass did nothing.

onnxoptimizer lists its passes but describes none of them; the descriptions below were written
from the pass sources (onnxoptimizer 0.4.x). A pass added by a later version still works and is
listed with a generic description.
"""

from __future__ import annotations

import difflib

from ..errors import OptionError

DEFAULT_PASSES = ("eliminate_deadend", "fuse_add_bias_into_conv", "fuse_bn_into_conv")

UNKNOWN_DESCRIPTION = "onnxoptimizer pass (no description recorded by onnxdeploy for this version)"

DESCRIPTIONS = {
    "adjust_add": "Reorder Add(bias, MatMul) into Add(MatMul, bias) so bias fusions can match it.",
    "adjust_slice_and_matmul": "Move a Slice of constant data after the MatMul so the MatMul can fold.",
    "eliminate_common_subexpression": "Merge nodes that compute the same op on the same inputs.",
    "eliminate_consecutive_idempotent_ops": "Drop repeats of idempotent ops (e.g. Relu after Relu).",
    "eliminate_deadend": "Remove nodes whose outputs reach no graph output.",
    "eliminate_duplicate_initializer": "Merge initializers holding identical values.",
    "eliminate_identity": "Remove Identity nodes, wiring their input straight through.",
    "eliminate_if_with_const_cond": "Replace an If whose condition is constant by the taken branch.",
    "eliminate_nop_cast": "Remove Cast nodes that cast to the type the tensor already has.",
    "eliminate_nop_concat": "Remove Concat nodes with a single input.",
    "eliminate_nop_dropout": "Remove Dropout nodes that do nothing at inference (ratio 0 / no training).",
    "eliminate_nop_expand": "Remove Expand nodes whose target shape changes nothing.",
    "eliminate_nop_flatten": "Remove Flatten nodes whose input is already 2-D in that layout.",
    "eliminate_nop_monotone_argmax": "Remove monotone ops (Exp, Log, Softmax ...) feeding only an ArgMax.",
    "eliminate_nop_pad": "Remove Pad nodes that pad nothing.",
    "eliminate_nop_reshape": "Remove Reshape nodes whose target shape equals the input shape.",
    "eliminate_nop_split": "Remove Split nodes that produce their input unchanged.",
    "eliminate_nop_transpose": "Remove Transpose nodes with the identity permutation.",
    "eliminate_nop_with_unit": "Remove arithmetic with a unit operand (x*1, x+0, And with true ...).",
    "eliminate_shape_gather": "Replace Gather on Shape by a constant when those dims are known.",
    "eliminate_shape_op": "Replace Shape by a constant when the input shape is fully known.",
    "eliminate_slice_after_shape": "Replace Slice of Shape by a constant when those dims are known.",
    "eliminate_unused_initializer": "Remove initializers no node uses.",
    "extract_constant_to_initializer": "Turn Constant nodes into graph initializers.",
    "fuse_add_bias_into_conv": "Fold an Add of a constant bias after Conv into the Conv's bias input.",
    "fuse_bn_into_conv": "Fold a BatchNormalization after Conv into the Conv's weights and bias.",
    "fuse_concat_into_reshape": "Replace a Concat building a Reshape's shape by a constant shape.",
    "fuse_consecutive_concats": "Merge nested Concat nodes along the same axis into one.",
    "fuse_consecutive_log_softmax": "Fuse Log(Softmax(x)) into LogSoftmax.",
    "fuse_consecutive_reduce_unsqueeze": "Fuse Reduce* with keepdims=0 followed by Unsqueeze into keepdims=1.",
    "fuse_consecutive_slices": "Merge consecutive Slice nodes into one.",
    "fuse_consecutive_squeezes": "Merge consecutive Squeeze nodes into one.",
    "fuse_consecutive_transposes": "Merge consecutive Transpose nodes into one permutation.",
    "fuse_consecutive_unsqueezes": "Merge consecutive Unsqueeze nodes into one.",
    "fuse_matmul_add_bias_into_gemm": "Fuse MatMul followed by an Add of a bias into Gemm (2-D only).",
    "fuse_pad_into_conv": "Fold a constant-zero Pad before Conv into the Conv's pads.",
    "fuse_pad_into_pool": "Fold a Pad before a pooling op into the pool's pads.",
    "fuse_qkv": "Fuse three MatMuls of one input (attention Q, K, V) into one (experimental).",
    "fuse_transpose_into_gemm": "Fold a Transpose of a Gemm input into transA/transB.",
    "lift_lexical_references": "Make outer-scope names used in subgraphs explicit (for backends).",
    "nop": "Do nothing (a pass for testing the pass manager).",
    "rename_input_output": "Rename graph inputs and outputs to generic names (input_0, output_0 ...).",
    "replace_einsum_with_matmul": "Replace Einsum patterns that are plain batched MatMuls.",
    "rewrite_input_dtype": "Rewrite int64 graph inputs as int32 with a Cast (changes the signature).",
    "rewrite_where": "Rewrite Where(Not(c), x, y) as Where(c, y, x).",
    "set_unique_name_for_nodes": "Give every node a unique name.",
    "split_init": "Keep only the part of the graph that depends on initializers alone (init net).",
    "split_predict": "Keep only the part of the graph that depends on real inputs (predict net).",
}

#: op types a pass needs to find something; when none is in the graph the pass cannot act
REQUIRED_OPS = {
    "eliminate_consecutive_idempotent_ops": ("Relu", "Ceil", "Floor", "Round", "Abs"),
    "eliminate_identity": ("Identity",),
    "eliminate_if_with_const_cond": ("If",),
    "eliminate_nop_cast": ("Cast",),
    "eliminate_nop_concat": ("Concat",),
    "eliminate_nop_dropout": ("Dropout",),
    "eliminate_nop_expand": ("Expand",),
    "eliminate_nop_flatten": ("Flatten",),
    "eliminate_nop_monotone_argmax": ("ArgMax",),
    "eliminate_nop_pad": ("Pad",),
    "eliminate_nop_reshape": ("Reshape",),
    "eliminate_nop_split": ("Split",),
    "eliminate_nop_transpose": ("Transpose",),
    "eliminate_shape_gather": ("Shape",),
    "eliminate_shape_op": ("Shape",),
    "eliminate_slice_after_shape": ("Shape",),
    "extract_constant_to_initializer": ("Constant",),
    "fuse_add_bias_into_conv": ("Conv",),
    "fuse_bn_into_conv": ("BatchNormalization",),
    "fuse_concat_into_reshape": ("Reshape",),
    "fuse_consecutive_concats": ("Concat",),
    "fuse_consecutive_log_softmax": ("Softmax",),
    "fuse_consecutive_reduce_unsqueeze": ("Unsqueeze",),
    "fuse_consecutive_slices": ("Slice",),
    "fuse_consecutive_squeezes": ("Squeeze",),
    "fuse_consecutive_transposes": ("Transpose",),
    "fuse_consecutive_unsqueezes": ("Unsqueeze",),
    "fuse_matmul_add_bias_into_gemm": ("MatMul",),
    "fuse_pad_into_conv": ("Pad",),
    "fuse_pad_into_pool": ("Pad",),
    "fuse_transpose_into_gemm": ("Transpose",),
    "replace_einsum_with_matmul": ("Einsum",),
    "rewrite_where": ("Where",),
}

#: why a pass may find nothing even though its op is present
PATTERN_NOTES = {
    "fuse_bn_into_conv": "no BatchNormalization directly follows a Conv whose weights and BatchNorm "
                         "parameters are constant",
    "fuse_add_bias_into_conv": "no Add of a constant bias directly follows a Conv (exporters put "
                               "the bias inside Conv already)",
    "eliminate_deadend": "every node contributes to a graph output",
    "eliminate_unused_initializer": "every initializer is used",
    "eliminate_duplicate_initializer": "no two initializers hold the same values",
    "eliminate_common_subexpression": "no two nodes compute the same thing",
}



def available_passes() -> dict[str, str]:
    """Every pass this onnxoptimizer offers -> a one-line description."""
    import onnxoptimizer

    return {name: DESCRIPTIONS.get(name, UNKNOWN_DESCRIPTION)
            for name in sorted(onnxoptimizer.get_available_passes())}


def parse_passes(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Split ``a,b,c`` (or take a list), check every name, and suggest close ones for unknown names."""
    if value is None:
        return list(DEFAULT_PASSES)
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [item.strip() for item in items if item.strip()]
    if not names:
        raise OptionError("--passes is empty; give pass names separated by commas "
                          "(see onnxdeploy optimize --list-passes)")
    known = available_passes()
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else \
                "see onnxdeploy optimize --list-passes"
            raise OptionError(f"unknown pass '{name}'; {hint}")
    return names


def no_change_note(name: str, ops: dict[str, int]) -> str:
    """Why ``name`` changed nothing in a graph with op counts ``ops``, as plainly as is knowable."""
    needed = REQUIRED_OPS.get(name)
    if needed and not any(op in ops for op in needed):
        text = f"no {' or '.join(needed)} in the graph"
        if needed == ("BatchNormalization",) and "Conv" in ops:
            text += ": the exporter already folded it into Conv (torch exporters do in eval mode)"
        return text
    if name in PATTERN_NOTES:
        return PATTERN_NOTES[name]
    return "the pattern this pass rewrites did not match anywhere in the graph"
