"""Statistics, verdict, request encoding and metrics parsing on known inputs (no servers)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from builders import mlp_classifier

from onnxdeploy.bench.bodies import build_requests, http_request
from onnxdeploy.bench.scrape import parse_prometheus, server_split
from onnxdeploy.bench.stats import RunResult, aggregate, latency_summary, spread
from onnxdeploy.bench.verdict import make_verdict
from onnxdeploy.data import load_data
from onnxdeploy.modelfile import signature


def test_latency_summary_on_known_array():
    lat_us = np.arange(1, 1001) * 1000  # 1 ms .. 1000 ms
    s = latency_summary(lat_us)
    assert s == {"p50": 500.0, "p90": 900.0, "p95": 950.0, "p99": 990.0, "p99.9": 999.0, "max": 1000.0}


def test_latency_summary_is_ordered_and_observed():
    rng = np.random.default_rng(0)
    lat = rng.lognormal(7, 1, size=333).astype(np.int64)
    s = latency_summary(lat)
    assert s["p50"] <= s["p90"] <= s["p95"] <= s["p99"] <= s["max"]
    assert all(v * 1000 in set(lat.astype(float)) for v in s.values())


def test_latency_summary_empty():
    assert latency_summary([]) == {"p50": None, "p90": None, "p95": None, "p99": None, "p99.9": None, "max": None}


def test_spread_keeps_the_repeats_in_run_order():
    s = spread([100.0, 120.0, 110.0])
    assert s == {"median": 110.0, "min": 100.0, "max": 120.0, "rel_spread": pytest.approx(20 / 110),
                 "values": [100.0, 120.0, 110.0]}


def _run(target, conc, rps, p99, repeat):
    lat = {"p50": p99 / 2, "p90": p99 * 0.8, "p95": p99 * 0.9, "p99": p99, "max": p99 * 2}
    return RunResult(target, conc, requests=int(rps), errors={}, elapsed_s=1.0, latency_ms=lat, repeat=repeat)


def test_aggregate_and_verdict():
    runs = [_run("a", 8, r, 4.0 + i, i) for i, r in enumerate((1000, 1010, 990))]
    runs += [_run("b", 8, r, 2.0 + i * 0.1, i) for i, r in enumerate((1800, 1790, 1820))]
    runs += [_run("a", 1, 500, 1.0, 0), _run("b", 1, 600, 1.0, 0)]
    agg = aggregate(runs)
    a8 = next(e for e in agg if e["target"] == "a" and e["concurrency"] == 8)
    assert a8["repeats"] == 3 and a8["requests"] == 3000 and a8["rps"]["median"] == 1000
    v = make_verdict(agg, ("a", "b"), {"a": 0.95, "b": 0.948})
    assert v["rps_ratio"] == pytest.approx(1.8)
    assert v["p99_ratio"] == pytest.approx(2.1 / 5.0)
    assert v["speedup"]["rps"] == pytest.approx(1.8) and v["speedup"]["p99"] == pytest.approx(5.0 / 2.1)
    assert v["accuracy_delta"] == pytest.approx(-0.002)
    assert not v["within_noise"] and v["ranked"] and v["level"] == 8 and v["ship"] == "b"
    assert v["text"].startswith("Ship b") and "1.8x faster" in v["text"] and "\u22120.2 pp" in v["text"]


def test_verdict_within_noise():
    runs = [_run("a", 4, r, p, i) for i, (r, p) in enumerate(((1000, 3.0), (1100, 3.4), (950, 2.9)))]
    runs += [_run("b", 4, r, p, i) for i, (r, p) in enumerate(((1050, 3.1), (980, 3.3), (1120, 2.8)))]
    v = make_verdict(aggregate(runs), ("a", "b"), {})
    # 15% spread: inside the judge's cap, so the margin is the repeats' spread and the 0.98x is equal
    assert v["speed"] == "equal" and v["within_noise"] and not v["ranked"] and "equal to a" in v["text"]
    assert v["margin"] == pytest.approx((150 / 1000 + 140 / 1050) / 2)
    assert v["ship"] == "a" and "faster" not in v["text"] and "slower" not in v["text"]
    # the same sizes: the tie goes to the baseline; a smaller b within the noise ships instead
    v = make_verdict(aggregate(runs), ("a", "b"), {}, sizes={"a": 400, "b": 100})
    assert v["ship"] == "b" and v["rested_on"] == "size" and "4.0x smaller" in v["text"]


def test_verdict_undecided_when_the_repeats_spread_too_wide():
    runs = [_run("a", 4, r, 3.0, i) for i, r in enumerate((1000, 1800, 900))]
    runs += [_run("b", 4, r, 3.0, i) for i, r in enumerate((1050, 950, 1000))]
    v = make_verdict(aggregate(runs), ("a", "b"), {}, sizes={"a": 400, "b": 100})
    assert v["speed"] == "undecided" and not v["ranked"]
    assert "undecided (spread 90%" in v["text"] and "within" not in v["text"].split("undecided")[1][:20]
    # it rests on size and quality, and says so
    assert v["ship"] == "b" and v["rested_on"] == "size and quality" and "rests on size and quality" in v["text"]
    # the findings alone, when the caller decides (the pipeline)
    f = make_verdict(aggregate(runs), ("a", "b"), {}, decide_ship=False)
    assert "ship" not in f and "Ship" not in f["text"] and f["speed"] == "undecided"


def test_requests_are_one_sample_each():
    sig = signature(mlp_classifier())
    data = load_data("digits", sig)
    reqs = build_requests(sig, data)
    assert len(reqs) == len(data)
    first = json.loads(reqs.bodies[0])
    assert np.allclose(first["inputs"], data.inputs["x"][:1])
    raw = http_request("POST", "/predict", "h:1", reqs.bodies[0])
    assert raw.startswith(b"POST /predict HTTP/1.1\r\n") and raw.endswith(b"\r\n\r\n" + reqs.bodies[0])
    assert f"Content-Length: {len(reqs.bodies[0])}".encode() in raw


def test_metrics_split():
    def text(req_sum, req_n, comp_sum, comp_n):
        return (f'# HELP x\nonnxdeploy_request_duration_seconds_sum{{endpoint="predict"}} {req_sum}\n'
                f'onnxdeploy_request_duration_seconds_count{{endpoint="predict"}} {req_n}\n'
                f'onnxdeploy_request_duration_seconds_sum{{endpoint="v2_live"}} 5.0\n'
                f'onnxdeploy_model_compute_seconds_sum {comp_sum}\nonnxdeploy_model_compute_seconds_count {comp_n}\n')
    before, after = parse_prometheus(text(1.0, 100, 0.2, 100)), parse_prometheus(text(3.0, 1100, 0.7, 1100))
    split = server_split(before, after, client_mean_ms=4.0)
    assert split["server_ms"] == pytest.approx(2.0)
    assert split["compute_ms"] == pytest.approx(0.5)
    # the share is of the time in the server's view (2.0 ms), not of the client's 4.0 ms (queueing)
    assert split["compute_share"] == pytest.approx(0.25) and split["other_ms"] == pytest.approx(3.5)
    assert server_split(None, after, 1.0) == {}


def test_bodies_keep_scalars_scalar_and_cut_samples_along_each_batch_axis():
    from onnxdeploy.bench.bodies import sample_count
    from onnxdeploy.data import DataSet
    from onnxdeploy.modelfile import Signature, TensorSpec

    f32 = np.dtype(np.float32)
    sig = Signature(inputs=(TensorSpec("x", f32, ("batch", 3), batch_axis=0),
                            TensorSpec("state", f32, (2, "batch", 4), batch_axis=1),
                            TensorSpec("sr", np.dtype(np.int64), (), batch_axis=None)),
                    outputs=(), batch_dim="batch")
    x = np.arange(15, dtype=np.float32).reshape(5, 3)
    state = np.arange(40, dtype=np.float32).reshape(2, 5, 4)
    data = DataSet("t", {"x": x, "state": state, "sr": np.array(16000, dtype=np.int64)}, None,
                   frozenset({"x", "state"}), batch_axes={"x": 0, "state": 1, "sr": None})
    assert sample_count(sig, data) == 5
    reqs = build_requests(sig, data)
    assert len(reqs) == 5
    third = json.loads(reqs.bodies[2])["inputs"]
    assert third["sr"] == 16000  # a 0-d input stays a bare number, not [16000]
    assert np.array_equal(third["x"], x[2:3]) and np.array(third["x"]).shape == (1, 3)
    assert np.array_equal(third["state"], state[:, 2:3, :]) and np.array(third["state"]).shape == (2, 1, 4)
