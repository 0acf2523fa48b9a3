"""Tiny Hugging Face directories built offline: random weights, a WordPiece tokenizer trained here.

Nothing downloads: configs are written by hand, weights are random (seeded), the tokenizer is
trained by ``tokenizers`` on ``CORPUS``. Directories and exports are made once per test session
(``built(kind)`` / ``exported(kind)``) under one temporary directory removed at exit.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world this is a test of the tokenizer",
    "onnx runtime runs exported transformer models on a cpu",
    "a sentence embedding model turns each text into one vector",
    "similar texts get similar vectors and different texts do not",
    "padding truncation and attention masks must agree",
    "good great excellent wonderful happy",
    "bad awful terrible sad poor",
    "tokens numbers 12 345 and punctuation",
] * 4
MAX_POSITIONS = 64
LABELS = {0: "negative", 1: "positive"}

_root: Path | None = None
_built: dict[str, Path] = {}
_exported: dict[str, Path] = {}


def root() -> Path:
    """The session's scratch directory (removed at interpreter exit)."""
    global _root
    if _root is None:
        _root = Path(tempfile.mkdtemp(prefix="onnxdeploy-hf-tests-"))
        atexit.register(shutil.rmtree, _root, ignore_errors=True)
    return _root


def train_tokenizer(*, with_types: bool):
    """A BERT-style WordPiece fast tokenizer trained on CORPUS."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(
        vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    names = ["input_ids", "token_type_ids", "attention_mask"] if with_types else ["input_ids", "attention_mask"]
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=MAX_POSITIONS,
        model_input_names=names)


def make_bert_classifier(path: Path) -> Path:
    """A 2-layer BERT (hidden 32) sequence classifier with token_type_ids and two labels."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tok = train_tokenizer(with_types=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=MAX_POSITIONS, num_labels=2, id2label=LABELS,
                        label2id={v: k for k, v in LABELS.items()})
    BertForSequenceClassification(config).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_distilbert(path: Path) -> Path:
    """A 2-layer DistilBERT (dim 32): no token_type_ids."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    tok = train_tokenizer(with_types=False)
    torch.manual_seed(1)
    config = DistilBertConfig(vocab_size=tok.vocab_size, dim=32, n_layers=2, n_heads=4,
                              hidden_dim=64, max_position_embeddings=MAX_POSITIONS)
    DistilBertModel(config).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_sentence_transformers(path: Path, *, modes=("mean",), normalize=True,
                               max_seq_length: int = 48) -> Path:
    """A sentence-transformers layout around a DistilBERT: modules.json, 1_Pooling, Normalize."""
    make_distilbert(path)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
        (path / "2_Normalize").mkdir()
    (path / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (path / "1_Pooling").mkdir()
    flags = {"word_embedding_dimension": 32, "pooling_mode_cls_token": "cls" in modes,
             "pooling_mode_mean_tokens": "mean" in modes, "pooling_mode_max_tokens": "max" in modes,
             "pooling_mode_mean_sqrt_len_tokens": False}
    (path / "1_Pooling" / "config.json").write_text(json.dumps(flags), encoding="utf-8")
    (path / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}), encoding="utf-8")
    return path


BUILDERS = {"bert-classifier": make_bert_classifier, "distilbert": make_distilbert,
            "st": make_sentence_transformers}


def built(kind: str) -> Path:
    """The directory of ``kind`` (``bert-classifier``, ``distilbert``, ``st``), built once."""
    if kind not in _built:
        _built[kind] = BUILDERS[kind](root() / kind)
    return _built[kind]


def exported(kind: str, task: str | None = None) -> tuple[Path, object]:
    """``(onnx path, ExportReport)`` of ``kind`` exported with ``task``, once per session."""
    from onnxdeploy.export import ExportOptions, export_model

    key = f"{kind}-{task}"
    if key not in _exported:
        out = root() / "onnx" / f"{key}.onnx"
        _exported[key] = (out, export_model(str(built(kind)), out, ExportOptions(task=task)))
    return _exported[key]
