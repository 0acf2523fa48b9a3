"""Text data files (.txt, .jsonl) tokenized by the tokenizer the model carries; real ORT runs."""

from __future__ import annotations

import json

import hf_fixtures as hf
import numpy as np
import onnx
import pytest
from builders import mlp_classifier

from onnxdeploy.compare import accuracy
from onnxdeploy.data.text import is_text_source, load_text_data, read_texts
from onnxdeploy.errors import DataError, TextTooLongError
from onnxdeploy.modelfile import metadata, signature
from onnxdeploy.runtimes import make_session, run_dataset
from onnxdeploy.tokenizer import TextEncoder

TEXTS = ["good great wonderful", "bad awful", "the quick brown fox jumps over the lazy dog",
         "hello world", "similar texts get similar vectors and different texts do not", "sad"]


@pytest.fixture(scope="session")
def classifier():
    return hf.exported("bert-classifier")[0]


@pytest.fixture(scope="session")
def embedder():
    return hf.exported("st")[0]


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_txt_file_is_tokenized_to_padded_batches_that_embed_like_single_texts(embedder, tmp_path):
    src = _write(tmp_path / "texts.txt", [TEXTS[0], "", *TEXTS[1:]])  # a blank line is skipped
    model = onnx.load(str(embedder))
    data = load_text_data(src, model, signature(model))
    assert data.name == "text:texts.txt" and data.labels is None and len(data) == len(TEXTS)
    assert data.batched == frozenset({"input_ids", "attention_mask"})
    encoder = TextEncoder.from_model(model)
    lengths = [len(encoder.encode([t])["input_ids"][0]) for t in TEXTS]
    assert data.inputs["input_ids"].shape == (len(TEXTS), max(lengths))
    assert data.inputs["input_ids"].dtype == np.int64
    assert data.inputs["attention_mask"].sum(axis=1).tolist() == lengths
    session = make_session(embedder)
    out = run_dataset(session, data, batch_size=4)["sentence_embedding"]
    for i, text in enumerate(TEXTS):
        (alone,) = session.run(None, encoder.encode([text]))
        assert np.abs(alone[0] - out[i]).max() < 1e-5
    # metadata alone is enough (the lead's data.load_data may hand over either)
    again = load_text_data(src, metadata(model), signature(model))
    assert np.array_equal(again.inputs["input_ids"], data.inputs["input_ids"])


def test_jsonl_labels_by_name_or_index_give_the_classifiers_accuracy(classifier, tmp_path):
    session = make_session(classifier)
    encoder = TextEncoder.from_model(classifier)
    preds = [int(session.run(None, encoder.encode([t]))[0].argmax()) for t in TEXTS]
    names = ["negative", "positive"]
    # the first four labelled as predicted (by name and by index), the last two the other way
    rows = [{"text": t, "label": names[p] if i % 2 else p} for i, (t, p) in enumerate(zip(TEXTS[:4], preds))]
    rows += [{"text": t, "label": 1 - p} for t, p in zip(TEXTS[4:], preds[4:])]
    src = _write(tmp_path / "labelled.jsonl", [json.dumps(r) for r in rows])
    model = onnx.load(str(classifier))
    data = load_text_data(src, model, signature(model))
    assert data.labels.tolist() == [*preds[:4], *(1 - p for p in preds[4:])]
    assert set(data.inputs) == {"input_ids", "attention_mask", "token_type_ids"}
    assert accuracy(run_dataset(session, data), data.labels) == pytest.approx(4 / 6)


def test_read_texts_and_suffixes(tmp_path):
    src = _write(tmp_path / "t.jsonl", ['{"text": "a"}', '{"text": "b c"}'])
    assert read_texts(src) == (["a", "b c"], None)
    assert is_text_source("x.txt") and is_text_source("x.JSONL") and not is_text_source("x.npz")


@pytest.mark.parametrize("name,lines,error,text", [
    ("bad.jsonl", ['{"text": "a"}', "{oops"], DataError, "line 2 is not JSON"),
    ("notext.jsonl", ['{"label": 1}'], DataError, 'string "text"'),
    ("mixed.jsonl", ['{"text": "a", "label": 0}', '{"text": "b"}'], DataError, "label every line or none"),
    ("unknown.jsonl", ['{"text": "a", "label": "neutral"}'], DataError, "not one of the model's labels"),
    ("range.jsonl", ['{"text": "a", "label": 5}'], DataError, "outside 0..1"),
    ("empty.txt", ["", "  "], DataError, "holds no text"),
    ("long.txt", ["x" * 100_001], TextTooLongError, "at most 100,000"),
])
def test_bad_text_files_name_the_problem(classifier, tmp_path, name, lines, error, text):
    model = onnx.load(str(classifier))
    with pytest.raises(error, match=text):
        load_text_data(_write(tmp_path / name, lines), model, signature(model))


def test_text_data_needs_a_model_with_a_tokenizer(tmp_path):
    model = mlp_classifier()
    with pytest.raises(DataError, match="carries a tokenizer"):
        load_text_data(_write(tmp_path / "t.txt", ["a"]), model, signature(model))
    with pytest.raises(DataError, match="no such file"):
        read_texts(tmp_path / "missing.txt")
