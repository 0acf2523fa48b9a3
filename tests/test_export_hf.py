"""Export of Hugging Face directories: tiny random BERT/DistilBERT built here, real ORT, no network."""

from __future__ import annotations

import json
import shutil
import socket

import hf_fixtures as hf
import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from onnxdeploy.cli import cli
from onnxdeploy.errors import DataError, TextTooLongError
from onnxdeploy.modelfile import classifier_info, metadata, signature
from onnxdeploy.runtimes import make_session
from onnxdeploy.tokenizer import META_TEXT, META_TOKENIZER, TextEncoder, has_tokenizer, pad_feeds

TEXTS = ["good great wonderful", "the quick brown fox jumps over the lazy dog again and again",
         "bad", "hello world this is a test"]


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="session")
def classifier():
    return hf.exported("bert-classifier")


@pytest.fixture(scope="session")
def embedder():
    return hf.exported("st")


@pytest.fixture(scope="session")
def features(tmp_path_factory):
    """DistilBERT exported through the CLI with every socket connection refused."""
    out = tmp_path_factory.mktemp("features") / "distil.onnx"
    real_connect = socket.socket.connect

    def refuse(self, address):
        raise OSError(f"test: network access attempted to {address}")

    socket.socket.connect = refuse
    try:
        result = run_cli("export", hf.built("distilbert"), "-o", out, "--task", "feature-extraction", "--json")
    finally:
        socket.socket.connect = real_connect
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def _hf_tokenize(kind, texts):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf.built(kind)), local_files_only=True)
    return tok(texts, padding=True, truncation=True, max_length=hf.MAX_POSITIONS, return_tensors="np")


def test_classifier_takes_the_tokenizers_inputs_and_matches_pytorch(classifier):
    from transformers import AutoModelForSequenceClassification

    path, report = classifier
    assert report.parity.passed and report.parity.tokenizer_agrees is True
    assert report.parity.data == "text" and report.parity.batch_sizes == [1, 2, 8]
    # one parity round pads to the longest of two texts, one truncates at the max length
    assert "8x64" in report.parity.per_batch
    model = onnx.load(str(path))
    sig = signature(model)
    assert [(s.name, str(s.dtype), s.shape) for s in sig.inputs] == [
        ("input_ids", "int64", ("batch", "sequence")), ("attention_mask", "int64", ("batch", "sequence")),
        ("token_type_ids", "int64", ("batch", "sequence"))]
    assert [(s.name, s.shape) for s in sig.outputs] == [("logits", ("batch", 2))]
    info = classifier_info(model)
    assert info is not None and info.labels == ("negative", "positive")
    assert report.text["task"] == "text-classification"
    # independently of the export's own check: transformers' tokenizer and model, padded batch
    enc = _hf_tokenize("bert-classifier", TEXTS)
    torch_model = AutoModelForSequenceClassification.from_pretrained(
        str(hf.built("bert-classifier")), local_files_only=True).eval()
    with torch.no_grad():
        expected = torch_model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()
    (got,) = make_session(path).run(None, {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
    assert got.shape == (4, 2) and np.abs(got - expected).max() < 1e-4
    assert np.abs(expected).max() > 1e-3  # the comparison is not between two near-zero outputs


def test_feature_extraction_without_token_type_ids_offline(features):
    from transformers import AutoModel

    out, report = features
    assert [i["name"] for i in report["inputs"]] == ["input_ids", "attention_mask"]
    assert report["outputs"] == [{"name": "last_hidden_state", "dtype": "float32",
                                  "shape": ["batch", "sequence", 32], "batch_axis": 0}]
    assert report["metadata"]["onnxdeploy.task"] == "feature-extraction"
    assert report["metadata"][META_TOKENIZER].startswith("tokenizer.json, ")  # summarized in the report
    assert report["parity"]["passed"] and report["parity"]["tokenizer_agrees"] is True
    enc = _hf_tokenize("distilbert", TEXTS)
    assert "token_type_ids" not in enc
    model = AutoModel.from_pretrained(str(hf.built("distilbert")), local_files_only=True).eval()
    with torch.no_grad():
        expected = model(**{k: torch.from_numpy(v) for k, v in enc.items()}).last_hidden_state.numpy()
    (got,) = make_session(out).run(None, dict(enc))
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4


def test_sentence_transformers_pooling_and_normalization_are_in_the_graph(embedder):
    from transformers import AutoModel

    path, report = embedder
    assert report.parity.passed and report.text["pooling"] == ["mean"] and report.text["normalize"]
    assert report.text["max_length"] == 48  # sentence_bert_config's max_seq_length wins
    assert [(s.name, s.shape) for s in signature(onnx.load(str(path))).outputs] == [
        ("sentence_embedding", ("batch", 32))]
    meta = metadata(onnx.load(str(path)))
    assert meta["onnxdeploy.task"] == "sentence-embedding"
    assert json.loads(meta["onnxdeploy.pooling"]) == {"modes": ["mean"], "normalize": True}
    encoder = TextEncoder.from_model(path)
    feeds = encoder.encode(TEXTS)
    (got,) = make_session(path).run(None, feeds)
    model = AutoModel.from_pretrained(str(hf.built("st")), local_files_only=True).eval()
    with torch.no_grad():
        hidden = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state
    mask = torch.from_numpy(feeds["attention_mask"]).unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()
    assert np.abs(got - expected).max() < 1e-4
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # padding does not leak: each text alone embeds as it does in the padded batch
    for i, text in enumerate(TEXTS):
        (alone,) = make_session(path).run(None, encoder.encode([text]))
        assert np.abs(alone[0] - got[i]).max() < 1e-5


@pytest.mark.parametrize("modes,normalize", [
    (("cls",), False), (("max",), False), (("mean", "max"), False), (("mean_sqrt_len",), False),
    (("weightedmean",), False), (("lasttoken",), False), (("cls", "mean"), True)])
def test_pooling_modes_match_sentence_transformers_definitions(modes, normalize):
    from onnxdeploy.sources.hf import _pool

    torch.manual_seed(0)
    hidden = torch.randn(3, 6, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    got = _pool(hidden, mask, modes, normalize=normalize)
    parts = []
    for mode in modes:
        rows = []
        for b in range(3):
            n = int(mask[b].sum())
            valid = hidden[b, :n]
            weights = torch.arange(1, n + 1, dtype=torch.float32).unsqueeze(1)
            rows.append({"cls": hidden[b, 0], "max": valid.max(0).values, "mean": valid.mean(0),
                         "mean_sqrt_len": valid.sum(0) / n ** 0.5,
                         "weightedmean": (valid * weights).sum(0) / weights.sum(),
                         "lasttoken": valid[-1]}[mode])
        parts.append(torch.stack(rows))
    expected = torch.cat(parts, dim=1)
    if normalize:
        expected = expected / expected.norm(dim=1, keepdim=True)
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-6)


def test_the_carried_tokenizer_turns_text_into_feeds_from_the_onnx_file_alone(classifier, tmp_path):
    path, _ = classifier
    alone = tmp_path / "copy.onnx"
    shutil.copy(path, alone)  # no directory beside it: the file is all there is
    assert has_tokenizer(alone)
    encoder = TextEncoder.from_model(alone)
    assert encoder.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert encoder.max_length == hf.MAX_POSITIONS
    feeds = encoder.encode(TEXTS)
    enc = _hf_tokenize("bert-classifier", TEXTS)
    for name in encoder.input_names:
        assert feeds[name].dtype == np.int64 and np.array_equal(feeds[name], enc[name])
    long = encoder.encode(["fox " * 500])
    assert long["input_ids"].shape == (1, hf.MAX_POSITIONS)  # truncated at the model's max length
    with pytest.raises(TextTooLongError, match="at most 100,000"):
        encoder.encode(["x" * 100_001])
    for bad, msg in (("one text", "list of strings"), ([], "at least one"), (["ok", 3], r"texts\[1\]")):
        with pytest.raises(DataError, match=msg):
            encoder.encode(bad)
    a, b = encoder.encode(TEXTS[:1]), encoder.encode(TEXTS[1:3])
    merged, rows = encoder.merge([a, b])
    assert rows == [1, 2] and merged["input_ids"].shape == feeds["input_ids"][:3].shape
    assert np.array_equal(merged["attention_mask"], feeds["attention_mask"][:3])
    assert pad_feeds([a])[0]["input_ids"].shape == a["input_ids"].shape
    config = json.loads(metadata(onnx.load(str(alone)))[META_TEXT])
    assert config["inputs"] == {"input_ids": "ids", "attention_mask": "attention_mask",
                                "token_type_ids": "type_ids"}


def test_quantized_variant_inherits_the_tokenizer(embedder, tmp_path):
    from onnxruntime.quantization import quantize_dynamic

    path, _ = embedder
    q = tmp_path / "q.onnx"
    quantize_dynamic(str(path), str(q), op_types_to_quantize=["MatMul"])
    assert has_tokenizer(q)
    feeds = TextEncoder.from_model(q).encode(TEXTS)
    (a,) = make_session(path).run(None, feeds)
    (b,) = make_session(q).run(None, feeds)
    assert np.min(np.sum(a * b, axis=1)) > 0.9  # both unit vectors: cosine


def _bad_dirs(tmp):
    no_tok = tmp / "no-tokenizer"
    shutil.copytree(hf.built("distilbert"), no_tok)
    for f in no_tok.glob("tokenizer*"):
        f.unlink()
    dense = tmp / "dense"
    shutil.copytree(hf.built("st"), dense)
    modules = json.loads((dense / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (dense / "modules.json").write_text(json.dumps(modules))
    no_weights = tmp / "no-weights"
    shutil.copytree(hf.built("distilbert"), no_weights)
    (no_weights / "model.safetensors").unlink()
    return {
        "no tokenizer": ([no_tok], "ModelSourceError", "cannot load the tokenizer"),
        "dense module": ([dense], "ModelSourceError", "module 'sentence_transformers.models.Dense' is not supported"),
        "no weights": ([no_weights], "ModelSourceError", "cannot load the model"),
        "shape given": ([hf.built("distilbert"), "--input-shape", "1,8"], "OptionError",
                        "takes its inputs from its tokenizer"),
        # a head transformers would initialize at random is refused, not exported as noise
        "no head": ([hf.built("distilbert"), "--task", "text-classification"], "ModelSourceError",
                    "holds no classification head"),
    }


@pytest.mark.parametrize("case", ["no tokenizer", "dense module", "no weights", "shape given", "no head"])
def test_bad_directories_are_one_line_exit_2(tmp_path, case):
    args, error, text = _bad_dirs(tmp_path)[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()  # the output's directory must exist (a missing one is its own error)
    result = run_cli("export", *args, "-o", out_dir / "m.onnx")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{error}: "), result.stderr
    assert text in lines[0]
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_terminal_report_names_the_text_facts_without_dumping_the_tokenizer(embedder, capsys):
    from onnxdeploy.cli.export import render

    render(embedder[1])
    out = capsys.readouterr().out
    assert "passed" in out and "[green]" not in out
    assert "sentence-embedding (distilbert), pooling mean + L2 normalize; max length 48 tokens" in out
    assert "carried tokenizer agrees" in out
    assert "onnxdeploy.tokenizer = tokenizer.json, " in out and '"vocab"' not in out


def test_sentence_embedding_matches_sentence_transformers_itself(embedder):
    st = pytest.importorskip("sentence_transformers")  # installed by the hf-bench extra
    path, _ = embedder
    model = st.SentenceTransformer(str(hf.built("st")), device="cpu", local_files_only=True)
    expected = model.encode(TEXTS, convert_to_numpy=True)
    (got,) = make_session(path).run(None, TextEncoder.from_model(path).encode(TEXTS))
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-5


def test_plain_directory_as_sentence_embedding_gets_mean_pooling_unnormalized(tmp_path):
    from transformers import AutoModel

    out = tmp_path / "mean.onnx"
    result = run_cli("export", hf.built("distilbert"), "-o", out, "--task", "sentence-embedding", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["text"]["pooling"] == ["mean"] and report["text"]["normalize"] is False
    assert report["outputs"][0]["name"] == "sentence_embedding"
    feeds = TextEncoder.from_model(out).encode(TEXTS)
    (got,) = make_session(out).run(None, feeds)
    model = AutoModel.from_pretrained(str(hf.built("distilbert")), local_files_only=True).eval()
    with torch.no_grad():
        hidden = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state
    mask = torch.from_numpy(feeds["attention_mask"]).unsqueeze(-1).float()
    expected = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    assert np.abs(got - expected).max() < 1e-4
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)  # really not normalized
