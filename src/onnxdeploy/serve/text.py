"""Text requests for a model that carries a tokenizer: what it accepts, and texts -> feeds.

A model exported from a Hugging Face directory carries its tokenizer (``onnxdeploy.tokenizer``)
and a small JSON config (``onnxdeploy.text``: max_length, pad_id, which graph input each
encoding field feeds). ``text_info`` reads the config without importing ``tokenizers`` (the
server's parent process reads it for the ready line and ``/openapi.json``); each worker builds
its own ``TextEncoder`` beside its session (``SessionHolder.load``).

Limits are explicit and the same on every route: at most ``MAX_BATCH`` texts a request (400),
a text of more than ``max_chars`` characters is refused before tokenizing (413), token
sequences are truncated at the model's ``max_length``. On the v2 route texts arrive as the
``BYTES`` input ``text`` of shape ``[N]``: strings in JSON, or in the binary extension each
element a 4-byte little-endian length followed by its UTF-8 bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .. import tokenizer as tok
from ..errors import ModelLoadError, TextTooLongError
from .validation import ApiError

#: the v2 input that carries texts (DESIGN: "Text over HTTP")
TEXT_INPUT = "text"
TEXT_DATATYPE = "BYTES"
#: bytes of the little-endian length before each element of a binary BYTES tensor
LENGTH_PREFIX = 4


@dataclass(frozen=True)
class TextInfo:
    """What a text model's metadata says about the text it takes (no tokenizer loaded)."""

    max_length: int
    pad_id: int
    inputs: tuple[str, ...]  # graph inputs the tokenizer feeds, in the model's order
    #: the two metadata entries (tokenizer.json text included), so a worker builds its
    #: TextEncoder without parsing the model file again
    metadata: dict[str, str] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Texts:
    """The texts one request sent, checked for type and count, still to be tokenized."""

    items: list[str]
    where: str  # how the request named them, for messages: "inputs", "input 'text'"


def text_info(meta: dict[str, str], input_names: list[str]) -> TextInfo | None:
    """The text facts of a model's metadata, None when it carries no tokenizer."""
    if not (tok.META_TOKENIZER in meta and tok.META_TEXT in meta):
        return None
    try:
        config = json.loads(meta[tok.META_TEXT])
        fed = [str(name) for name in config["inputs"]]
        info = TextInfo(int(config["max_length"]), int(config["pad_id"]),
                        tuple(n for n in input_names if n in fed),
                        {k: meta[k] for k in (tok.META_TOKENIZER, tok.META_TEXT)})
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelLoadError(f"the model's {tok.META_TEXT} metadata is unreadable ({exc}); "
                             "re-export it from its Hugging Face directory") from exc
    missing = [n for n in input_names if n not in fed]
    if missing:
        raise ModelLoadError(f"the model's tokenizer feeds {fed} but the graph also takes "
                             f"{missing}; a text model's inputs must all come from the tokenizer")
    return info


def check_texts(values: Any, where: str, *, max_batch: int, max_chars: int) -> Texts:
    """``values`` as Texts, or a 400 (not a list of strings, empty, too many) / 413 (too long)."""
    if not isinstance(values, list):
        raise ApiError(400, f"{where}: got {_kind(values)}; expected a list of strings (texts)")
    if not values:
        raise ApiError(400, f"{where}: empty list; expected at least one text")
    if len(values) > max_batch:
        raise ApiError(400, f"{where}: {len(values)} texts; expected at most {max_batch} per "
                            "request")
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise ApiError(400, f"{where}[{i}]: got {_kind(value)}; expected a string")
        if len(value) > max_chars:
            raise ApiError(413, f"{where}[{i}]: {len(value):,} characters; expected at most "
                                f"{max_chars:,} a text")
    return Texts(values, where)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


def encode(encoder: tok.TextEncoder | None, texts: Texts) -> dict:
    """Token feeds for checked texts; 501 when this worker has no tokenizer library."""
    if encoder is None:
        raise ApiError(501, "this server cannot tokenize texts (the 'tokenizers' package is not "
                            "installed: pip install 'onnxdeploy[hf]'); send token ids instead")
    try:
        return encoder.encode(texts.items)
    except TextTooLongError as exc:  # checked already; the encoder's own guard, to be sure
        raise ApiError(413, f"{texts.where}: {exc}") from exc


# --------------------------------------------------------------------------- v2 BYTES


def v2_texts(item: dict, binary: bytes | None, *, max_batch: int, max_chars: int) -> Texts:
    """The v2 ``text`` input (JSON ``data`` or binary elements) as checked Texts."""
    where = f"input '{TEXT_INPUT}'"
    if item.get("datatype") != TEXT_DATATYPE:
        raise ApiError(400, f"{where}: datatype {item.get('datatype')!r}; expected "
                            f"{TEXT_DATATYPE!r}")
    shape = item.get("shape")
    if not (isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int)
            and not isinstance(shape[0], bool) and shape[0] >= 0):
        raise ApiError(400, f"{where}: shape {shape!r}; expected [N], N the number of texts")
    count = shape[0]
    if count > max_batch:  # before reading any element: a huge N must cost nothing
        raise ApiError(400, f"{where}: {count} texts; expected at most {max_batch} per request")
    if binary is None:
        if "data" not in item:
            raise ApiError(400, f"{where}: no 'data'; expected 'data' (a list of strings) or "
                                "parameters.binary_data_size")
        values = item["data"]
        if isinstance(values, list) and len(values) != count:
            raise ApiError(400, f"{where}: 'data' has {len(values)} elements but shape [{count}] "
                                f"needs {count}")
    else:
        values = bytes_elements(binary, count, where)
    return check_texts(values, where, max_batch=max_batch, max_chars=max_chars)


def bytes_elements(chunk: bytes, count: int, where: str) -> list[str]:
    """Decode a binary BYTES tensor: ``count`` elements, each a 4-byte LE length + UTF-8 bytes."""
    texts: list[str] = []
    pos, view = 0, memoryview(chunk)
    while pos < len(chunk):
        i = len(texts)
        if i == count:
            raise ApiError(400, f"{where}: binary data holds more than the {count} elements of "
                                f"its shape ({len(chunk) - pos} bytes left over)")
        if pos + LENGTH_PREFIX > len(chunk):
            raise ApiError(400, f"{where}: element {i}: {len(chunk) - pos} bytes left where a "
                                f"{LENGTH_PREFIX}-byte little-endian length was expected")
        size = int.from_bytes(view[pos:pos + LENGTH_PREFIX], "little")
        pos += LENGTH_PREFIX
        if pos + size > len(chunk):
            raise ApiError(400, f"{where}: element {i} declares {size} bytes but only "
                                f"{len(chunk) - pos} remain")
        try:
            texts.append(str(view[pos:pos + size], "utf-8"))
        except UnicodeDecodeError as exc:
            raise ApiError(400, f"{where}: element {i} is not valid UTF-8 (at byte {exc.start}); "
                                "expected UTF-8 text") from exc
        pos += size
    if len(texts) != count:
        raise ApiError(400, f"{where}: binary data holds {len(texts)} elements but shape "
                            f"[{count}] needs {count}")
    return texts


def encode_bytes(texts: list[str]) -> bytes:
    """Texts as a binary BYTES tensor (the inverse of ``bytes_elements``), for clients and tests."""
    out = bytearray()
    for text in texts:
        raw = text.encode("utf-8")
        out += len(raw).to_bytes(LENGTH_PREFIX, "little") + raw
    return bytes(out)
