"""Data, signatures and run_dataset on the fixtures that look like third-party models (tests/wild.py)."""

from __future__ import annotations

import numpy as np
import pytest
import wild

from onnxdeploy.data import load_data
from onnxdeploy.modelfile import signature
from onnxdeploy.runtimes import make_session, run, run_dataset


@pytest.mark.parametrize("name", sorted(wild.BUILDERS))
def test_every_fixture_runs_on_random_data_in_several_batches(wild_models, name):
    model = wild_models(name)
    sig = signature(model)
    data = load_data("random", sig, count=9)
    session = make_session(model, threads=1)
    whole = run(session, data.feeds(1)) if name == "rnn-state-batch1" else run(session, data.slice(0, 9))
    batched = run_dataset(session, data, batch_size=4)
    if name == "rnn-state-batch1":
        # only batch 1 fits: run one at a time, and the per-sample output still has 9 rows
        assert batched["output"].shape == (9, 1)
        np.testing.assert_allclose(batched["output"][:1], whole["output"], rtol=1e-5, atol=1e-6)
        return
    for out in sig.outputs:
        got, want = batched[out.name], whole[out.name]
        if out.kind == "sequence":  # ZipMap: one dict of class -> probability per sample
            assert len(got) == 9 and [d.keys() for d in got] == [d.keys() for d in want]
            continue
        want = np.asarray(want)
        assert got.shape == want.shape, out.name
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert any("prove that the steps run" in n for n in data.notes)


def test_rnn_state_batch_on_axis_one_and_scalar_sample_rate(wild_models):
    sig = signature(wild_models("rnn-state"))
    assert sig.batch_axes == {"input": 0, "state": 1, "sr": None}
    assert sig.input("sr").shape == () and sig.batch_dim == "batch"
    data = load_data("random", sig, count=5, int_ranges={"sr": (wild.SAMPLE_RATE, wild.SAMPLE_RATE + 1)})
    assert data.inputs["state"].shape == (wild.RNN_LAYERS, 5, wild.RNN_HIDDEN)
    assert data.inputs["sr"].shape == () and int(data.inputs["sr"]) == wild.SAMPLE_RATE
    feeds = data.feeds(32)
    assert feeds["state"].shape == (wild.RNN_LAYERS, 32, wild.RNN_HIDDEN) and feeds["sr"].shape == ()
    session = make_session(wild_models("rnn-state"), threads=1)
    out = run(session, feeds)
    assert out["output"].shape == (32, 1) and out["stateN"].shape == (wild.RNN_LAYERS, 32, wild.RNN_HIDDEN)
    assert data.batch_sizes([1, 32], probe=lambda f: run(session, f)).usable == (1, 32)
    # stateN is joined along axis 1 too: sample 4's state equals a batch-1 run of sample 4
    joined = run_dataset(session, data, batch_size=2)
    alone = run(session, data.slice(4, 5))
    np.testing.assert_allclose(joined["stateN"][:, 4:5], alone["stateN"], rtol=1e-5, atol=1e-6)


def test_state_fixed_at_one_skips_larger_batches_without_blaming_the_data(wild_models):
    model = wild_models("rnn-state-batch1")
    sig = signature(model)
    assert sig.batch_axes == {"input": 0, "state": None, "sr": None}
    data = load_data("random", sig, count=4)
    static = data.batch_sizes([1, 32])
    assert static.usable == (1,) and "exported for batch 1" in static.skipped[32]
    session = make_session(model, threads=1)
    probed = data.batch_sizes([1, 32], probe=lambda f: run(session, f))
    assert probed.usable == (1,) and "refused 32 samples" in probed.skipped[32]


def test_paddle_dims_are_dynamic_and_accepted_from_an_npz(wild_models, tmp_path):
    model = wild_models("ocr-paddle-dims")
    x = signature(model).input("x")
    assert x.shape == (-1, 3, 8, "?") and x.batch_axis == 0
    path = tmp_path / "lines.npz"
    lines = np.random.default_rng(0).random((3, 3, 8, 48), dtype=np.float32)
    np.savez(path, x=lines)
    data = load_data(path, signature(model))
    assert data.inputs["x"].shape == (3, 3, 8, 48) and len(data) == 3
    out = run_dataset(make_session(model, threads=1), data, batch_size=2)
    assert out["probs"].shape == (3, 48, 6)
    np.testing.assert_allclose(out["probs"].sum(axis=-1), 1.0, rtol=1e-5)
    rand = load_data("random", signature(model), dims={"x:3": 40}, count=2)
    assert rand.inputs["x"].shape == (2, 3, 8, 40)
    assert load_data("random", signature(model)).feeds(32)["x"].shape[0] == 32


def test_paddle_dims_rewrite_keeps_outputs(wild_models):
    plain = wild.detection_head(constant_weights=False)
    rewritten = wild.paddle_dims(plain)
    assert signature(rewritten).input("x").shape == (-1, 3, 16, 16)
    feeds = load_data("random", signature(plain), count=2).inputs
    np.testing.assert_array_equal(run(make_session(plain, threads=1), feeds)["prob_map"],
                                  run(make_session(rewritten, threads=1), feeds)["prob_map"])


def test_detection_head_is_near_zero_on_random_input(wild_models):
    model = wild_models("detection-constant-weights")
    assert not model.graph.initializer and any(n.op_type == "Constant" for n in model.graph.node)
    data = load_data("random", signature(model), count=4)
    out = run_dataset(make_session(model, threads=1), data)
    assert out["prob_map"].shape == (4, 1, 16, 16) and float(out["prob_map"].max()) < 1e-6


def test_control_flow_scalar_inputs_stay_scalar(wild_models):
    model = wild_models("control-flow")
    sig = signature(model)
    assert sig.batch_axes == {"x": 0, "flag": None, "n": None}
    data = load_data("random", sig, count=6, int_ranges={"n": (3, 4)})
    assert data.inputs["flag"].shape == () and data.inputs["n"].shape == () and int(data.inputs["n"]) == 3
    out = run_dataset(make_session(model, threads=1), data, batch_size=4)
    w = next(t for t in model.graph.initializer if t.name == "w")
    from onnx import numpy_helper

    branch = 2 * data.inputs["x"] if bool(data.inputs["flag"]) else -data.inputs["x"]
    np.testing.assert_allclose(out["y"], 3 * branch @ numpy_helper.to_array(w), rtol=1e-4, atol=1e-5)


def test_multi_output_int32_and_bool_inputs(wild_models, tmp_path):
    model = wild_models("multi-output")
    sig = signature(model)
    data = load_data("random", sig, count=5, dims={"seq": 7}, int_ranges={"tokens": (0, 50)})
    assert data.inputs["tokens"].dtype == np.int32 and data.inputs["mask"].dtype == np.bool_
    assert data.inputs["tokens"].shape == (5, 7) == data.inputs["mask"].shape
    out = run_dataset(make_session(model, threads=1), data, batch_size=2)
    assert out["class_scores"].shape == (5, 5) and out["embedding"].shape == (5, 8)
    assert out["token_scores"].shape == (5, 7, 3)
    path = tmp_path / "tokens.npz"
    np.savez(path, tokens=data.inputs["tokens"].astype(np.int64), mask=data.inputs["mask"])
    again = load_data(path, sig)
    assert again.inputs["tokens"].dtype == np.int32  # int64 values within int32: cast losslessly


def test_sklearn_signature_as_skl2onnx_writes_it(wild_models):
    zipmap = signature(wild_models("sklearn-zipmap"))
    assert zipmap.input("input").shape == (None, 64) and zipmap.batch_axes == {"input": 0}
    kinds = {o.name: o.kind for o in zipmap.outputs}
    assert kinds == {"output_label": "tensor", "output_probability": "sequence"}
    domains = {o.domain for o in wild_models("sklearn-zipmap").opset_import}
    assert "ai.onnx.ml" in domains
    plain = signature(wild_models("sklearn-tensor"))
    assert [o.kind for o in plain.outputs] == ["tensor", "tensor"]


@pytest.mark.parametrize("name", sorted(wild.BUILDERS))
def test_batch_32_where_the_model_can_take_it(wild_models, name, capfd):
    model = wild_models(name)
    data = load_data("random", signature(model), count=3)
    session = make_session(model, threads=1)
    sizes = data.batch_sizes([1, 32], probe=lambda f: run(session, f))
    expected = (1,) if name == "rnn-state-batch1" else (1, 32)
    assert sizes.usable == expected, sizes.skipped
    if 32 in sizes.usable:
        out = run(session, data.feeds(32))
        first = next(o for o in signature(model).outputs)
        assert len(out[first.name]) == 32 or np.shape(out[first.name])[first.batch_axis or 0] == 32
    assert "onnxruntime" not in capfd.readouterr().err  # a refused size is a note, not log noise


def test_rnn_npz_with_state_on_axis_one_and_0d_sample_rate(wild_models, tmp_path):
    sig = signature(wild_models("rnn-state"))
    rng = np.random.default_rng(1)
    good, bad = tmp_path / "vad.npz", tmp_path / "bad.npz"
    np.savez(good, input=rng.standard_normal((6, 64)).astype(np.float32),
             state=np.zeros((2, 6, 16), np.float32), sr=np.array(16000))
    data = load_data(good, sig)
    assert len(data) == 6 and data.inputs["sr"].shape == () and data.batch_axes["state"] == 1
    out = run_dataset(make_session(wild_models("rnn-state"), threads=1), data, batch_size=4)
    assert out["output"].shape == (6, 1) and out["stateN"].shape == (2, 6, 16)
    np.savez(bad, input=np.zeros((6, 64), np.float32), state=np.zeros((2, 5, 16), np.float32), sr=np.array(16000))
    with pytest.raises(Exception, match=r"disagree on the number of samples along their batch axes \('input' 6, 'state' 5\)"):
        load_data(bad, sig)


def test_save_fixture_writes_a_loadable_model(tmp_path):
    path = wild.save_fixture("control-flow", tmp_path)
    assert path.name == "control-flow.onnx"
    assert signature(onnx_load(path)).batch_axes == {"x": 0, "flag": None, "n": None}


def onnx_load(path):
    from onnxdeploy.modelfile import load_model

    return load_model(path)


def test_sentence_embedding_transformer_token_ids():
    from onnxdeploy.modelfile import metadata
    from onnxdeploy.outputkinds import output_kind, task_of

    model = wild.SLOW_BUILDERS["sentence-embedding"]()
    sig = signature(model)
    assert sig.batch_dim == "batch" and sig.batch_axes == {"input_ids": 0, "attention_mask": 0}
    data = load_data("random", sig, count=5, dims={"sequence": 6},
                     int_ranges={"input_ids": (0, 100), "attention_mask": (1, 2)})
    assert data.inputs["input_ids"].shape == (5, 6) and (data.inputs["attention_mask"] == 1).all()
    session = make_session(model, threads=1)
    out = run_dataset(session, data, batch_size=2)
    assert out["sentence_embedding"].shape == (5, 32)
    np.testing.assert_allclose(out["sentence_embedding"][3:4], run(session, data.slice(3, 4))["sentence_embedding"],
                               rtol=1e-4, atol=1e-5)
    kind = output_kind(sig.outputs[0], task_of(metadata(model)))
    assert kind == "embedding"
    assert data.batch_sizes([1, 32], probe=lambda f: run(session, f)).usable == (1, 32)
