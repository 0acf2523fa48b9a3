"""Partial int8 for any node kind: auto finds the few nodes that cost the quality and keeps them float.

Fixtures (tests/partial_models.py) are built the way converters write them: a Silero-style VAD
(conv front end, one LSTM step, ``state [2, batch, 64]`` in and ``stateN`` out, a 0-d ``sr``,
Constant-node weights) and a conv net. Each has one small layer whose output carries an outlier
channel 10,000 above the rest, so full int8 misses through the activation's range alone (exact
int8 products miss too; measured here with AVX-512 VNNI: VAD static 0.975, dynamic 0.04; conv
net static 0.91-0.92, dynamic 0.92). The rest of each model is N(0, 1)-scaled, so with the
sensitive layer float the remaining u8 x s8 pair sums stay far below 32,767 and AVX2 (no VNNI)
gives the same answer: the module was run under ``qemu-x86_64 -cpu Haswell`` (docs/quantize.md).
No assertion is on wall time: speed decisions are checked against the report's own figures.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from partial_models import conv_data, conv_net, save, vad_data, vad_lstm

from onnxdeploy.quantize import QuantizeOptions, quantize_model
from onnxdeploy.quantize.fallback import LayerCost, search
from onnxdeploy.quantize.partial import per_sample_min_cosine, state_pairs, units
from onnxdeploy.quantize.recipes import Recipe

BOUND = 0.99
#: full int8 must miss the bound by at least this much on any CPU class
MARGIN = 0.01


def _opts(data, **kw) -> QuantizeOptions:
    return QuantizeOptions(mode="auto", data=str(data), latency_budget_s=0.3, latency_batch=8,
                           threads=1, **kw)


@pytest.fixture(scope="module")
def vad(tmp_path_factory):
    d = tmp_path_factory.mktemp("vad")
    path, data = d / "vad.onnx", d / "vad.npz"
    save(vad_lstm(), path)
    np.savez(data, **vad_data(64, 0))
    out = d / "vad.int8.onnx"
    # allow_slower: which candidates the search starts from and what is written must not depend on
    # how busy the machine is (the search's own speed figures are checked against the report)
    report = quantize_model(path, out, _opts(data, allow_slower=True))
    return SimpleNamespace(path=path, data=data, out=out, report=report, d=d)


@pytest.fixture(scope="module")
def convnet(tmp_path_factory):
    d = tmp_path_factory.mktemp("conv")
    path, data = d / "conv.onnx", d / "conv.npz"
    save(conv_net(), path)
    np.savez(data, **conv_data(64, 0))
    out = d / "conv.int8.onnx"
    # Conv only (the MatMul-only candidate is admissible and would make the search depend on
    # whether a missed candidate measured faster), and slower models allowed: deterministic
    report = quantize_model(path, out, _opts(data, allow_slower=True, op_types=("Conv",)))
    return SimpleNamespace(path=path, data=data, out=out, report=report)


def _expected_choice(report):
    """What auto must choose, recomputed from its own recorded figures by the judge's rule (as
    tests/test_quantize.py does; names outside SIMPLICITY rank after it)."""
    from onnxdeploy.judge import inprocess
    from onnxdeploy.judge.choose import SIZE_TIE, ship_admissible
    from onnxdeploy.quantize.step import SIMPLICITY

    lat = report.measurement.latency
    admissible = [c for c in report.candidates if c.admissible]
    pool = [c for c in admissible if ship_admissible(lat, c.name)]
    if not pool:
        # nothing keeps pace: the best worst case (the fixtures allow slower models, so it is taken)
        top = max(inprocess.worst_speedup(lat, c.name) for c in admissible)
        front = [c for c in admissible if inprocess.worst_speedup(lat, c.name) * (1 + lat.margin) >= top]
    else:
        front = [c for c in pool if not any(inprocess.dominates(lat, o.name, c.name) for o in pool if o is not c)]
    smallest = min(c.size_bytes for c in front)
    ties = [c for c in front if c.size_bytes <= smallest * SIZE_TIE]
    order = list(SIMPLICITY)
    return min(ties, key=lambda c: order.index(c.name) if c.name in order else len(order)).name


def _full(report):
    return [c for c in report.candidates if not c.name.endswith("-mixed") and c.int8_ops]


def _run(path, feeds):
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))


def test_vad_keeps_its_one_sensitive_conv_float_and_judges_the_state_chained(vad):
    r, d = vad.report, vad.report.to_dict()
    # the state pair was assumed by name and shape, and said so
    assert d["state"]["pairs"] == [{"input": "state", "output": "stateN"}] and d["state"]["assumed"]
    assert any("state -> stateN" in w for w in r.warnings)
    full = _full(r)
    assert full and all(c.min_cosine < BOUND - MARGIN for c in full), [(c.name, c.min_cosine) for c in full]
    for c in full:  # both figures reported for the state output
        assert set(c.state["stateN"]) >= {"one_step_min_cosine", "chained_min_cosine"}
    fb = d["fallback"]
    assert fb is not None and "LSTM" not in fb["op_types"] or fb["base"].startswith("static")
    # the search ran from a static candidate (the fast ones), on Conv units with their Relu
    assert fb["base"].startswith("static") and fb["methods"] == ["simulated"]
    assert fb["ranking"][0]["node"] == "/proj/Conv" and fb["ranking"][0]["layer"] == "proj"
    assert fb["kept_float"] == ["/proj/Conv", "/Relu_3"]
    assert fb["kept_units"][0]["nodes"] == ["/proj/Conv", "/Relu_3"]
    assert all(not t["admissible"] for t in fb["tries"] if t["kept_float"] < 1)
    assert fb["tries"][-1]["chained_min_cosine"]["stateN"] >= BOUND
    # calibration grid: tried (other methods, fewer samples) with their time, none met the bound
    grid = fb["calibration"]["grid"]
    assert {g["method"] for g in grid} >= {"entropy", "percentile"} and all(g["seconds"] is not None for g in grid)
    mixed = next(c for c in r.candidates if c.name == fb["candidate"])
    assert mixed.admissible and mixed.state["stateN"]["chained_min_cosine"] >= BOUND
    # the choice follows the speed figures the report recorded (float when the mixed one is slower)
    # the only admissible candidates are the partial ones: one of them is chosen and written
    assert r.chosen == _expected_choice(r) and r.chosen.endswith("-mixed"), r.reason
    # the written model: proj float, every other conv int8, and the bound met on held-back data,
    # one step and over chained steps
    model = onnx.load(str(vad.out))
    assert "/proj/Conv" in {n.name for n in model.graph.node if n.op_type == "Conv"}
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) > 0
    held = vad_data(64, 7)
    assert per_sample_min_cosine(_run(vad.path, held)["stateN"], _run(vad.out, held)["stateN"], 1) >= BOUND
    ref, got = dict(held), dict(held)
    for _ in range(4):
        ref["state"], got["state"] = _run(vad.path, ref)["stateN"], _run(vad.out, got)["stateN"]
    assert per_sample_min_cosine(ref["state"], got["state"], 1) >= BOUND


def test_conv_net_keeps_only_the_sensitive_layer_float(convnet):
    r, fb = convnet.report, convnet.report.to_dict()["fallback"]
    full = _full(r)
    assert full and all(c.min_cosine < BOUND - MARGIN for c in full), [(c.name, c.min_cosine) for c in full]
    assert fb is not None and fb["base"].startswith("static")
    # static int8: the tensor conv3 writes and conv4 reads is the sensitive one, so the unit that
    # writes it (conv3 + its Relu) and the one that reads it are kept float, nothing else
    assert {u["node"] for u in fb["ranking"][:2]} == {"/conv3/Conv", "/conv4/Conv"}
    assert set(fb["kept_float"]) <= {"/conv3/Conv", "/Relu_2", "/conv4/Conv", "/Relu_3"}
    assert "/conv4/Conv" in fb["kept_float"]
    mixed = next(c for c in r.candidates if c.name == fb["candidate"])
    assert mixed.admissible and mixed.min_cosine >= BOUND
    assert r.state is None  # no state pair in a conv net
    assert r.chosen == _expected_choice(r) and r.chosen.endswith("-mixed"), r.reason
    held = conv_data(32, 9)
    a, b = _run(convnet.path, held)["embedding"], _run(convnet.out, held)["embedding"]
    assert per_sample_min_cosine(a, b, 0) >= BOUND


def test_nothing_saved_exits_1_with_one_line_and_no_file(vad, tmp_path):
    from onnxdeploy.cli import cli

    out = tmp_path / "none.onnx"
    result = CliRunner().invoke(cli, [
        "quantize", str(vad.path), "-o", str(out), "--data", str(vad.data), "--min-cosine", "0.9999999",
        "--max-float-matmuls", "1", "--latency-budget", "0.2", "--ort-threads", "1",
        "--state", "state:stateN", "--json"])
    assert result.exit_code == 1, result.output
    assert not out.exists()
    import json

    d = json.loads(result.output)
    assert d["output"] is None and d["state"]["assumed"] is False
    # the static search missed with the nodes alone, then again with their tensors' neighbours
    fb = d["fallback"]
    assert fb["grouping"] == "tensors" and fb["earlier"]["grouping"] == "nodes" and fb["earlier"]["tries"]
    assert len(fb["tries"][0]["nodes"]) > len(fb["earlier"]["tries"][0]["nodes"])
    assert d["chosen"]["reason"].count("\n") == 0 and "no model written" in d["chosen"]["reason"]


def test_state_option_is_checked(vad, tmp_path):
    from onnxdeploy.cli import cli

    result = CliRunner().invoke(cli, ["quantize", str(vad.path), "-o", str(tmp_path / "x.onnx"),
                                      "--data", str(vad.data), "--state", "state"])
    assert result.exit_code == 2 and "IN:OUT" in result.output
    assert not (tmp_path / "x.onnx").exists()


def test_state_pairs_by_name_and_shape():
    def spec(name, shape, dtype="float32"):
        return SimpleNamespace(name=name, shape=shape, dtype=np.dtype(dtype))

    ins = [spec("input", ["b", 512]), spec("state", [2, "b", 128]), spec("sr", []),
           spec("h0", [1, "b", 8]), spec("c0", [1, "b", 8]), spec("cache_in", [4, 3])]
    outs = [spec("output", ["b", 1]), spec("stateN", [2, "b", 128]), spec("hn", [1, "b", 8]),
            spec("cn", [1, "b", 8]), spec("cache_out", [4, 5])]
    assert state_pairs(ins, outs) == [("state", "stateN"), ("h0", "hn"), ("c0", "cn")]
    assert state_pairs(ins, outs, {"sr": "output"}) == [("sr", "output")]


def test_units_group_a_conv_with_its_relu_in_static_only():
    model = conv_net(outlier=1.0)
    static = units(model, Recipe("static-qdq", "static"))
    assert [u.names for u in static][:2] == [["/conv1/Conv", "/Relu"], ["/conv2/Conv", "/Relu_1"]]
    dynamic = units(model, Recipe("dynamic", "dynamic"))
    assert all(len(u.names) == 1 for u in dynamic)
    assert {u.head.op_type for u in dynamic} == {"Conv", "Gemm"}


def test_search_excludes_whole_units():
    ranking = [LayerCost("c2", [4], 0.0, nodes=["c2", "r2"], op_type="Conv"),
               LayerCost("c3", [4], 1.0, nodes=["c3"], op_type="Conv"),
               LayerCost("c1", [4], 30.0, nodes=["c1", "r1"], op_type="Conv")]
    seen = []

    def judge(recipe):
        seen.append(recipe.nodes_to_exclude)
        ok = "c3" in recipe.nodes_to_exclude
        return SimpleNamespace(admissible=ok, min_cosine=0.995 if ok else 0.9, error=None, failures=[])

    record, recipe = search(Recipe("static-qdq", "static"), ranking, judge, max_float=3)
    assert seen == [("c2", "r2"), ("c2", "r2", "c3")]
    assert record.kept == ["c2", "r2", "c3"] and [u["node"] for u in record.kept_units] == ["c2", "c3"]
    assert record.to_dict()["quantizable_units"] == 3


def test_a_pair_assumed_by_name_must_match_what_the_model_produces(tmp_path):
    """silero-vad (its pip wheel) names its audio ``input [batch, sequence]`` and its probability
    ``output [batch, 1]``: paired by name alone, chaining fed the probability back as audio and the
    float model refused it. A pair stands only when the output the data produced has the state
    input's shape and dtype."""
    from onnx import TensorProto, helper

    from onnxdeploy.measure import build_reference
    from onnxdeploy.quantize.step import _StateCheck

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["output"], keepdims=1, axes=[1]),
         helper.make_node("Tanh", ["state"], ["stateN"])],
        "vad-names", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "sequence"]),
                      helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, ["d0", "batch", "d2"])])
    path = tmp_path / "names.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, input=rng.standard_normal((8, 16)).astype(np.float32),
             state=rng.standard_normal((2, 8, 4)).astype(np.float32))
    assert ("input", "output") in state_pairs(
        [SimpleNamespace(name="input", dtype="float32", shape=["batch", "sequence"]),
         SimpleNamespace(name="state", dtype="float32", shape=[2, "batch", 4])],
        [SimpleNamespace(name="output", dtype="float32", shape=["batch", 1]),
         SimpleNamespace(name="stateN", dtype="float32", shape=["d0", "batch", "d2"])])
    ref = build_reference(path, data=str(data), threads=1)
    check = _StateCheck(ref, _opts(data))
    assert check.pairs == [("state", "stateN")]
    # said explicitly, a pair is taken as given
    assert _StateCheck(ref, _opts(data, state={"input": "output"})).pairs == [("input", "output")]


# --------------------------------------------------------------------------- the fast subset
# Run under qemu-x86_64 -cpu Haswell too (Makefile AVX2_TESTS): no auto candidates, no timing,
# no calibration grid; the search from static QDQ with a real judge (ORT's quantizer, an ORT
# session, min cosine on held-back data, the VAD's state over chained steps), small data. What
# depends on the CPU class (the int8 arithmetic) is all here.


def _chained_state(path, feeds, steps):
    """The float or int8 model's state after ``steps`` steps from ``feeds`` (each step's
    ``stateN`` fed back, the audio rolled one sample a step as a stream's next chunk)."""
    cur = dict(feeds)
    for t in range(steps):
        cur = {**cur, "input": np.roll(feeds["input"], t, axis=0)}
        cur["state"] = _run(path, cur)["stateN"]
    return cur["state"]


def _static_search(path, fit, held, judge_outputs, tmp_path, calibration=None, **rank):
    tmp_path.mkdir(exist_ok=True)
    """Rank the prepared model's units for static QDQ on ``fit`` and search with a real judge:
    each try is quantized by ORT, run on ``held``, judged by ``judge_outputs(path) -> min cosine``."""
    from dataclasses import replace

    from onnxdeploy.data.dataset import DataSet
    from onnxdeploy.quantize.partial import output_snr, rank_units
    from onnxdeploy.quantize.prepare import prepare
    from onnxdeploy.quantize.recipes import run_recipe

    prepared = prepare(onnx.load(str(path)), tmp_path, path.name).path
    axes = {k: (1 if k == "state" else None if np.ndim(v) == 0 else 0) for k, v in fit.items()}
    data = DataSet("fit", dict(fit), None, batch_axes=axes)
    calib = DataSet("calib", dict(calibration or fit), None,
                    batch_axes={k: axes[k] for k in fit})
    base = Recipe("static-qdq", "static")
    fit_ref = _run(prepared, fit)
    one = []

    def quantize_one(exclude):  # the unit alone int8 (every other unit float), the model's output SNR
        out = tmp_path / "one.onnx"
        run_recipe(replace(base, nodes_to_exclude=tuple(exclude)), prepared, out, calib)
        one.append(tuple(exclude))
        return output_snr(fit_ref, _run(out, fit))

    ranking = rank_units(prepared, base, data, tmp_path, 1, quantize_one=quantize_one, **rank)
    scores = {}

    def judge(recipe):
        out = tmp_path / f"try-{len(recipe.nodes_to_exclude)}.onnx"
        run_recipe(recipe, prepared, out, calib)
        cos = judge_outputs(out)
        scores[recipe.nodes_to_exclude] = cos
        return SimpleNamespace(admissible=cos >= BOUND, min_cosine=cos, error=1 - cos, failures=[])

    full = tmp_path / "full.onnx"
    run_recipe(base, prepared, full, calib)
    record, found = search(base, ranking, judge)
    return SimpleNamespace(full=judge_outputs(full), ranking=ranking, record=record, found=found,
                           scores=scores, quantized_alone=one)


def test_fast_vad_static_search_keeps_proj_float_and_the_chained_state_holds(tmp_path):
    path = tmp_path / "vad.onnx"
    save(vad_lstm(), path)
    fit, held = vad_data(16, 0), vad_data(16, 7)
    # calibration sees the states a stream reaches (as auto's does): the data's own states and
    # those after 1-3 chained float steps
    parts = [fit] + [{**fit, "state": _chained_state(path, fit, s)} for s in (1, 2, 3)]
    calib = {"input": np.concatenate([p["input"] for p in parts]),
             "state": np.concatenate([p["state"] for p in parts], axis=1), "sr": fit["sr"]}
    ref_one, ref_chain = _run(path, held)["stateN"], _chained_state(path, held, 4)

    def quality(model):
        one = per_sample_min_cosine(ref_one, _run(model, held)["stateN"], 1)
        return min(one, per_sample_min_cosine(ref_chain, _chained_state(model, held, 4), 1))

    s = _static_search(path, fit, held, quality, tmp_path, calibration=calib)
    assert s.full < BOUND - MARGIN, s.full
    assert s.ranking[0].node == "/proj/Conv" and s.ranking[0].method == "simulated"
    # static QDQ rounds the QOperator registry's ops too: the input's ``* sr / 16000`` Mul is a
    # unit, and its 0-d operand (a numpy scalar once exposed) is simulated like any other
    assert {c.method for c in s.ranking} == {"simulated"} and "/Mul" in {c.node for c in s.ranking}
    assert s.record.kept == ["/proj/Conv", "/Relu_3"], s.scores
    assert s.scores[("/proj/Conv", "/Relu_3")] >= BOUND


def test_fast_conv_static_search_keeps_only_the_sensitive_layer_float(tmp_path):
    path = tmp_path / "conv.onnx"
    save(conv_net(), path)
    fit, held = conv_data(16, 0), conv_data(16, 9)
    ref = _run(path, held)["embedding"]

    def quality(model):
        return per_sample_min_cosine(ref, _run(model, held)["embedding"], 0)

    s = _static_search(path, fit, held, quality, tmp_path)
    assert s.full < BOUND - MARGIN, s.full
    assert {c.node for c in s.ranking[:2]} == {"/conv3/Conv", "/conv4/Conv"}
    assert "/conv4/Conv" in s.record.kept
    assert set(s.record.kept) <= {"/conv3/Conv", "/Relu_2", "/conv4/Conv", "/Relu_3"}, s.scores
    assert max(s.scores.values()) >= BOUND


def test_quantize_one_at_a_time_ranks_the_conv_net_as_simulation_does(tmp_path):
    """The other measuring path: every unit quantized alone by ORT's quantizer (the rest
    float) and the model's output compared with float. Recorded as such, one quantize a unit,
    and it finds the same two convs and keeps the same nodes float as the simulated ranking."""
    path = tmp_path / "conv.onnx"
    save(conv_net(), path)
    fit, held = conv_data(16, 0), conv_data(16, 9)
    ref = _run(path, held)["embedding"]

    def quality(model):
        return per_sample_min_cosine(ref, _run(model, held)["embedding"], 0)

    q = _static_search(path, fit, held, quality, tmp_path / "q", method="quantized")
    sim = _static_search(path, fit, held, quality, tmp_path / "s")
    assert {c.method for c in q.ranking} == {"quantized"} and {c.method for c in sim.ranking} == {"simulated"}
    assert len(q.quantized_alone) == len(q.ranking) == 5 and not sim.quantized_alone
    # each measurement excluded every unit but its own
    everything = {n for c in q.ranking for n in c.members}
    assert all(everything - set(ex) == set(c.members) for c, ex in
               zip(sorted(q.ranking, key=lambda c: c.node), sorted(q.quantized_alone,
                   key=lambda ex: sorted(everything - set(ex))[0])))
    assert {c.node for c in q.ranking[:2]} == {"/conv3/Conv", "/conv4/Conv"}
    assert set(q.record.kept) == set(sim.record.kept) and "/conv4/Conv" in q.record.kept


def test_search_probes_the_limit_before_doubling_past_4():
    """With probe_limit, after 1, 2 and 4 miss the limit is tried next: a miss there ends the
    search (the loss is spread over the model), a pass is bisected down from it."""
    ranking = [LayerCost(f"c{i}", [4], float(i), nodes=[f"c{i}"], op_type="Conv") for i in range(20)]

    def judge_from(passes_from, seen):
        def judge(recipe):
            k = len(recipe.nodes_to_exclude)
            seen.append(k)
            ok = k >= passes_from
            return SimpleNamespace(admissible=ok, min_cosine=0.995 if ok else 0.9, error=None, failures=[])
        return judge

    seen: list[int] = []
    record, recipe = search(Recipe("static-qdq", "static"), ranking, judge_from(9, seen), probe_limit=True)
    assert seen == [1, 2, 4, 10, 7, 8, 9] and len(recipe.nodes_to_exclude) == 9
    seen.clear()
    record, recipe = search(Recipe("static-qdq", "static"), ranking, judge_from(99, seen), probe_limit=True)
    assert seen == [1, 2, 4, 10] and recipe is None
    assert "spread over the model" in record.summary and "up to 10 of 20" in record.summary
    seen.clear()  # without it, the doubling goes on to the limit
    search(Recipe("static-qdq", "static"), ranking, judge_from(99, seen))
    assert seen == [1, 2, 4, 8, 10]


def test_with_tensors_widens_a_unit_to_the_quantized_nodes_around_its_tensors():
    """A Conv kept float alone still reads the tensor its quantized producer writes (rounded
    once for all its quantized readers); widened, the unit takes that producer too, and a node a
    costlier unit took is not repeated."""
    from onnxdeploy.quantize.partial import with_tensors

    model = conv_net(outlier=1.0)
    ranking = [LayerCost("/conv4/Conv", [32], 1.0, nodes=["/conv4/Conv", "/Relu_3"], op_type="Conv"),
               LayerCost("/conv3/Conv", [32], 2.0, nodes=["/conv3/Conv", "/Relu_2"], op_type="Conv")]
    wide = with_tensors(ranking, model, Recipe("static-qdq", "static"))
    assert [c.node for c in wide] == ["/conv4/Conv", "/conv3/Conv"]
    assert wide[0].members == ["/conv4/Conv", "/Relu_3", "/Relu_2"]
    assert wide[1].members == ["/conv3/Conv", "/Relu_1"]


def test_with_tensors_is_not_tied_by_a_shared_constant():
    """hardswish's ``+ 3`` reads one initializer in every block: it ties no two blocks together
    (PP-OCRv4 det: one unit took all 27 of its Adds and 24 Clips before this)."""
    from onnx import TensorProto, helper

    from onnxdeploy.quantize.partial import with_tensors

    three = helper.make_tensor("three", TensorProto.FLOAT, [], [3.0])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "three"], ["a"], name="add1"),
         helper.make_node("Relu", ["a"], ["b"], name="relu1"),
         helper.make_node("Add", ["b", "three"], ["c"], name="add2"),
         helper.make_node("Relu", ["c"], ["y"], name="relu2")],
        "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [three])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    wide = with_tensors([LayerCost("add1", [], 0.0, nodes=["add1"], op_type="Add")], model,
                        Recipe("static-qdq", "static"))
    assert wide[0].members == ["add1", "relu1"]
