"""Built-in models: registry, cache location, training cache, listing (real torch training)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from onnxdeploy import zoo
from onnxdeploy.cli import cli
from onnxdeploy.errors import ModelLoadError
from onnxdeploy.zoo.train import count_params, read_record

MLP_PARAMS = 64 * 2048 + 2048 + 2048 * 2048 + 2048 + 2048 * 10 + 10


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_names_and_unknown_entry_lists_known():
    assert zoo.NAMES == ("digits-cnn", "digits-mlp")
    assert zoo.get_entry("digits-cnn").input_shape == (1, 1, 8, 8)
    with pytest.raises(ModelLoadError, match="digits-cnn, digits-mlp"):
        zoo.get_entry("digits-rnn")


def test_cache_dir_option_beats_env_beats_home(monkeypatch, tmp_path):
    monkeypatch.setenv("ONNXDEPLOY_CACHE", str(tmp_path / "env"))
    assert zoo.cache_dir(tmp_path / "opt") == tmp_path / "opt"
    assert zoo.cache_dir() == tmp_path / "env"
    monkeypatch.delenv("ONNXDEPLOY_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert zoo.cache_dir() == tmp_path / "home" / ".cache" / "onnxdeploy"


def test_models_have_the_promised_structure():
    cnn, mlp = zoo.get_entry("digits-cnn").build(), zoo.get_entry("digits-mlp").build()
    kinds = {type(m).__name__ for m in cnn.modules()}
    assert {"Conv2d", "BatchNorm2d", "ReLU", "Linear"} <= kinds
    assert cnn(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    assert [m.out_features for m in mlp.modules() if isinstance(m, torch.nn.Linear)] == [2048, 2048, 10]
    assert count_params(mlp) == MLP_PARAMS


def test_listing_without_training_says_not_trained(tmp_path):
    empty = tmp_path / "cache"
    result = run_cli("zoo", "--cache-dir", empty)
    assert result.exit_code == 0, result.output
    assert result.stdout.count("not trained yet") == 2
    assert "digits-cnn" in result.stdout and "4,349,962" in result.stdout
    listing = json.loads(run_cli("zoo", "--cache-dir", empty, "--json").stdout)
    assert [m["name"] for m in listing["models"]] == list(zoo.NAMES)
    assert all(not m["trained"] and m["accuracy"] is None for m in listing["models"])
    assert listing["models"][1]["params"] == MLP_PARAMS
    assert listing["models"][0]["input_shape"] == ["batch", 1, 8, 8]
    assert not empty.exists()  # listing never trains


def test_trained_models_are_cached_accurate_and_listed(builtin_onnx, zoo_cache):
    for name in zoo.NAMES:
        builtin_onnx(name)  # trains (once per session) into zoo_cache
    module, info = zoo.load_trained("digits-cnn", cache_dir=zoo_cache, progress=False)
    assert info.cached and not module.training
    assert info.accuracy >= 0.95
    assert torch.load(info.weights_path, weights_only=True).keys() == module.state_dict().keys()
    listing = json.loads(run_cli("zoo", "--cache-dir", zoo_cache, "--train", "--json").stdout)
    by_name = {m["name"]: m for m in listing["models"]}
    assert by_name["digits-cnn"]["accuracy"] == pytest.approx(info.accuracy)
    assert by_name["digits-mlp"]["trained"] and by_name["digits-mlp"]["accuracy"] >= 0.95
    text = run_cli("zoo", "--cache-dir", zoo_cache).stdout
    assert f"{100 * info.accuracy:.2f}%" in text and "not trained yet" not in text


def test_corrupt_cache_is_retrained_deterministically(builtin_onnx, zoo_cache, tmp_path):
    builtin_onnx("digits-cnn")
    entry = zoo.get_entry("digits-cnn")
    good = read_record(entry, zoo_cache, 0)
    stem = f"digits-cnn-seed0-{entry.version}"
    fresh = tmp_path / "cache"
    fresh.mkdir()
    shutil.copy(zoo_cache / f"{stem}.json", fresh / f"{stem}.json")
    (fresh / f"{stem}.pt").write_bytes(b"not a checkpoint")
    module, info = zoo.load_trained("digits-cnn", cache_dir=fresh, progress=False)
    assert not info.cached  # the broken weights were not trusted
    assert info.accuracy == pytest.approx(good["accuracy"])
    if good.get("torch") == torch.__version__:  # same seed, same torch: same weights
        cached = torch.load(zoo_cache / f"{stem}.pt", weights_only=True)
        for key, value in module.state_dict().items():
            assert torch.equal(value, cached[key]), key
    assert read_record(entry, fresh, 0)["accuracy"] == pytest.approx(info.accuracy)
    assert [p.name for p in fresh.iterdir() if p.name.startswith(".")] == []  # no temp files left
