"""Wire formats: ``/predict`` JSON and the Open Inference Protocol (KServe v2) with Triton's
binary tensor extension. Parsing returns feeds for validation (or, for a model that carries a
tokenizer, the request's checked ``Texts``); encoding returns bytes.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from .. import modelfile
from ..tokenizer import DEFAULT_MAX_CHARS
from ..wire import NUMPY_TO_V2, V2_TO_NUMPY, v2_datatype  # noqa: F401 - the server's names for them
from . import text
from .model import ModelInfo
from .text import Texts
from .validation import ApiError, array_from_json, check_finite, check_v2_shape, v2_array

BINARY_HEADER = "Inference-Header-Content-Length"
PLATFORM = "onnx_onnxv1"
VERSION = "1"



def dumps(obj: Any) -> bytes:
    """JSON bytes; numpy arrays serialized natively (no ``tolist``)."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:  # a dtype orjson cannot take directly (e.g. non-contiguous): fall back
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY, default=_to_list)


def _to_list(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(type(obj).__name__)


#: when the signature cannot bound a request: at most one array or object per this many bytes
#: (beyond ``JSON_SLACK`` of them). Decoded, an array costs ~64 bytes however short its text
#: (``[],`` is 3 bytes): at one per 16 bytes, arrays decode to at most ~4x the body. Rows of
#: under ~8 values beyond 4096 of them are refused by this (tensor rows are longer in practice).
JSON_BYTES_PER_CONTAINER = 16
#: values, arrays and keys allowed over the signature's bound (names, shapes, v2 fields)
JSON_SLACK = 4096


def json_budget(info: ModelInfo, max_batch: int) -> int | None:
    """The most JSON values (numbers, strings, arrays, objects) a valid request of this model
    can hold, or None when its signature leaves a dim open (or it takes texts)."""
    from .validation import max_values

    if info.text is not None:
        return None
    total = 0
    for spec in info.signature.inputs:
        values = max_values(spec, max_batch)
        if values is None:
            return None
        total += values
    return 2 * total + JSON_SLACK  # each value, and at most one array around each


def check_json_size(body: bytes, max_values: int | None) -> None:
    """Refuse, before decoding, a body that would decode to far more Python objects than any
    request of this model holds: decoded, a JSON value costs 30-70 bytes for its 2-3 bytes of
    text (64 MiB of ``[],`` peaked at 2.5 GB). Counting separators is a C-speed scan of bytes
    already held; it over-counts (commas inside strings), never under-counts."""
    if max_values is not None:
        if len(body) <= max_values:  # each value needs a byte of its own: it cannot be over
            return
        count = body.count(b",") + body.count(b"[") + body.count(b"{")
        if count > max_values:
            raise ApiError(413, f"the JSON body holds about {count} values; expected at most "
                                f"{max_values} for this model (--max-batch rows of every input)")
        return
    if len(body) <= JSON_SLACK * JSON_BYTES_PER_CONTAINER:
        return
    containers = body.count(b"[") + body.count(b"{")
    allowed = len(body) // JSON_BYTES_PER_CONTAINER + JSON_SLACK
    if containers > allowed:
        raise ApiError(400, f"the JSON body opens {containers} arrays/objects in {len(body)} "
                            f"bytes; expected at most one per {JSON_BYTES_PER_CONTAINER} bytes "
                            "(rows this short, or empty arrays, are not tensors this server takes)")


def loads(body: bytes, max_values: int | None = None,
          numbers: Mapping[str, np.dtype | None] | np.dtype | None = None) -> Any:
    """Parse a JSON body or raise a 400 saying where it broke (a 413 past ``max_values``).

    A body of ``ARRAY_DECODE_MIN_BYTES`` or more has its long arrays of numbers (and its arrays
    of such arrays: the rows of a 2-D tensor) decoded straight into numpy arrays
    (``_decode_arrays``), not into Python objects (a float is 24 bytes and an int past 256 is
    28, plus an 8-byte list slot, for 2-7 bytes of text: a body of numbers decoded to 13-18x
    its size, then the array on top).
    ``numbers`` (``json_number_dtype``) gives each input's dtype (or one dtype for every input):
    an input's float arrays decode into its float dtype, every other array exactly. Bounded
    models too (``max_values`` set, the body sized first): orjson took the same time on their
    bodies of 5-11 MiB, and the Python objects of a body under their cap took 16x it
    (docs/serve.md, "JSON decoding")."""
    if not body:
        raise ApiError(400, "empty request body; expected a JSON object")
    check_json_size(body, max_values)
    if numbers is not None and len(body) >= ARRAY_DECODE_MIN_BYTES:
        return _decode_arrays(body, numbers)
    return _orjson(body)


#: bodies from this size on have their number arrays decoded into numpy (smaller ones: orjson,
#: faster for them and bounded by the body cap anyway)
ARRAY_DECODE_MIN_BYTES = 1 << 20
#: arrays (or arrays of arrays) whose text is at least this long are decoded into numpy; shorter
#: ones (shapes, short rows) are left to orjson (a numpy array costs ~110 bytes however short)
ARRAY_MIN_TEXT = 256
#: a long array's text is decoded this many bytes at a time (orjson, then numpy): the Python
#: objects of one piece at most are alive at once (256 KiB of "1," are 4 MiB of them)
ARRAY_PIECE_BYTES = 1 << 18
#: what an array that is not a float input's decodes to (exact): the dtype numpy gives its
#: values (``np.asarray`` of orjson's list: bool, int64 or float64), values exact; validation
#: then casts or refuses it as it does orjson's lists. Anything else (uint64 past int64, objects
#: for null, ragged rows) sends the whole body to orjson.
_EXACT_DTYPES = (np.dtype(bool), np.dtype(np.int64), np.dtype(np.float64))
_ROW = rb'\[[^\[\]{}"]*\]'
#: a JSON string (skipped whole, so no array is seen inside one); an array of arrays that hold
#: no string, array or object (a matrix: the rows of a 2-D tensor); such an array alone (a
#: flat array). Possessive repeats: no backtracking stack however many rows.
_CANDIDATE = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
                        rb'|(?P<matrix>\[\s*+%s(?:\s*+,\s*+%s)*+\s*+\])|%s' % (_ROW, _ROW, _ROW))
_COMMA, _CLOSE = ord(","), ord("]")


def json_number_dtype(info: ModelInfo) -> dict[str, np.dtype | None] | None:
    """Each input's dtype, for ``loads`` (None for a model without inputs): a float input's
    arrays decode into its dtype, every other array exactly (text models' token ids too)."""
    return {spec.name: spec.dtype for spec in info.signature.inputs} or None


class _Undecodable(Exception):
    """An array exact decoding cannot take: orjson decodes the whole body."""


def _decode_arrays(body: bytes, numbers: Mapping[str, np.dtype | None] | np.dtype) -> Any:
    """``orjson.loads(body)``, but with each long array of numbers (or array of such arrays of
    equal length) of an input's data a numpy array: 1-D, or 2-D for the rows of a matrix.

    The arrays are found in the text (a regex that skips strings whole) and cut out; the rest
    (keys, shapes, short arrays) is decoded by orjson with a marker string in each array's
    place; then each marker is replaced, knowing where it is. In an input's data (``/predict``'s
    ``inputs`` or ``inputs[name]``, v2's ``inputs[i].data`` of the input ``inputs[i].name``),
    the array decoded a piece at a time (``_numbers``): into the input's dtype when it is a
    float (not all numbers, or not fitting it, e.g. 1e39 in float32: orjson's list, and
    validation says what is wrong), else exact (an array numpy would not read as bool,
    int64 or float64: the whole body goes to orjson, so the answer is the one orjson's lists
    get). Anywhere else (v2 ``shape``, ``parameters``: fields read as JSON): orjson's list of the
    same text. Peak: the body, the arrays (8 bytes a value for int64 against 2-7 bytes of text,
    4 for float32, 1 for bool against 5-6), one piece's Python objects."""
    if isinstance(numbers, np.dtype):
        dtypes: Mapping[str, np.dtype | None] = {}
        sole: np.dtype | None = numbers
    else:
        dtypes = numbers
        sole = next(iter(dtypes.values())) if len(dtypes) == 1 else None
    token = os.urandom(8).hex().encode()  # no client can know it: a marker is ours
    pieces: list = []
    spans: list[tuple[int, int, bool]] = []
    start = 0
    view = memoryview(body)
    for match in _CANDIDATE.finditer(body):
        lo, hi = match.span()
        if body[lo] == 0x22 or hi - lo < ARRAY_MIN_TEXT:  # a string, or a short array
            continue
        spans.append((lo, hi, match.lastgroup == "matrix"))
        pieces += [view[start:lo], b'"\\u0000%s:%d"' % (token, len(spans) - 1)]
        start = hi
    if not spans:
        return _orjson(body)
    pieces.append(view[start:])
    skeleton = b"".join(pieces)
    del pieces
    try:
        tree = orjson.loads(skeleton)
    except orjson.JSONDecodeError:  # the body is broken outside the arrays: say where in it
        del skeleton
        return _orjson(body)
    del skeleton
    marker = "\0" + token.decode() + ":"
    root = [tree]
    del tree
    # no recursion: JSON nests as deep as orjson allows. Each node goes with where it is:
    # "wrap" (root), "payload", "inputs" (payload["inputs"]), "item" (a dict in the inputs
    # list: v2), "data" (an input's values; with the input's name, None for /predict's one
    # input), "out" (anything else)
    stack: list = [(root, "wrap", None)]
    try:
        while stack:
            node, where, name = stack.pop()
            is_dict = isinstance(node, dict)
            for key in (node.keys() if is_dict else range(len(node))):
                item = node[key]
                place, input_name = where, name
                if where == "wrap":
                    place = "payload"
                elif where == "payload":
                    place = "inputs" if is_dict and key == "inputs" else "out"
                elif where == "inputs":
                    if is_dict:
                        place, input_name = "data", key
                    else:
                        place = "item" if isinstance(item, dict) else "data"
                elif where == "item":
                    place = "data" if key == "data" else "out"
                    input_name = node.get("name") if place == "data" else None
                if isinstance(item, (list, dict)):
                    stack.append((item, place, input_name))
                elif isinstance(item, str) and item.startswith(marker):
                    lo, hi, matrix = spans[int(item[len(marker):])]
                    if place not in ("data", "inputs"):
                        node[key] = orjson.loads(view[lo:hi])
                        continue
                    dtype = (dtypes.get(input_name, sole) if isinstance(input_name, str)
                             else sole)
                    node[key] = _input_array(body, view, lo, hi, matrix, dtype)
    except (_Undecodable, orjson.JSONDecodeError):  # orjson's answer (and where it broke)
        del root, stack
        return _orjson(body)
    return root[0]


def _input_array(body: bytes, view: memoryview, lo: int, hi: int, matrix: bool,
                 dtype: np.dtype | None) -> Any:
    """The array ``body[lo:hi]`` of an input of ``dtype``: into that dtype when it is a float
    (orjson's list when it cannot be), else exact (``_Undecodable`` when it cannot be)."""
    if dtype is not None and dtype.kind == "f":
        arr = _numbers(body, view, lo, hi, dtype, matrix)
        return orjson.loads(view[lo:hi]) if arr is None else arr
    arr = _numbers(body, view, lo, hi, None, matrix)
    if arr is None:
        raise _Undecodable
    return arr


def _orjson(body) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON: {exc}; expected a JSON object") from exc


def _numbers(body: bytes, view: memoryview, lo: int, hi: int, dtype: np.dtype | None,
             matrix: bool) -> np.ndarray | None:
    """The values of the array whose text is ``body[lo:hi]`` (brackets included): a flat array
    (no brackets, braces or quotes inside) or, ``matrix``, an array of such arrays, which must
    all have the same length (2-D); decoded ``ARRAY_PIECE_BYTES`` at a time, cut at commas
    (a matrix's row brackets dropped from each piece's text, after checking that the k-th row
    ends after (k+1) x cols values). As ``dtype``, or (None: exact) as bool, int64 or
    float64, promoted as numpy promotes the values of one list. None when it is anything else:
    not all numbers, a value ``dtype`` cannot hold (1e39 in float32), ragged rows, text orjson
    refuses (then orjson decodes it in its place, and says where a broken body broke)."""
    if hi - lo <= ARRAY_PIECE_BYTES:  # one piece (most rows, small matrices): numpy reads it
        try:
            raw = np.array(orjson.loads(view[lo:hi]))
        except (orjson.JSONDecodeError, ValueError):  # broken text; ragged rows
            return None
        if raw.ndim != (2 if matrix else 1) or not raw.size:
            return None
        if dtype is None:
            return raw if raw.dtype in _EXACT_DTYPES else None
        if raw.dtype.kind not in "fi":
            return None
        with np.errstate(over="ignore", invalid="ignore"):
            arr = raw.astype(dtype)
        return arr if np.isfinite(arr).all() else None
    inner_lo, inner_hi = lo + 1, hi - 1
    if matrix:
        rows = body.count(b"[", inner_lo, inner_hi)
        cols = body.count(b",", inner_lo, body.find(b"]", inner_lo, inner_hi)) + 1
    else:
        rows, cols = 1, body.count(b",", inner_lo, inner_hi) + 1
    size = rows * cols
    out: np.ndarray | None = None
    filled, at, commas, closes = 0, inner_lo, 0, 0
    while at < inner_hi:
        end = body.find(b",", min(at + ARRAY_PIECE_BYTES, inner_hi), inner_hi)
        end = inner_hi if end < 0 else end
        if matrix:
            text = bytes(view[at:end])
            chars = np.frombuffer(text, np.uint8)
            comma_at = np.flatnonzero(chars == _COMMA)
            close_at = np.flatnonzero(chars == _CLOSE)
            del chars
            before = commas + np.searchsorted(comma_at, close_at)
            if not np.array_equal(before, (closes + np.arange(close_at.size) + 1) * cols - 1):
                return None  # ragged rows (or empty ones): orjson's lists, validation's message
            commas += comma_at.size + 1  # and the comma this piece was cut at
            closes += close_at.size
            del comma_at, close_at, before
            text = b"[" + text.translate(None, b"[]") + b"]"
        else:
            text = b"[" + bytes(view[at:end]) + b"]"
        try:
            values = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        del text
        raw = np.array(values)
        del values
        if raw.ndim != 1 or filled + raw.size > size:
            return None
        if dtype is not None:
            if raw.dtype.kind not in "fi":
                return None
            if out is None:
                out = np.empty(size, dtype)
            with np.errstate(over="ignore", invalid="ignore"):
                out[filled:filled + raw.size] = raw
            if not np.isfinite(out[filled:filled + raw.size]).all():
                return None
        else:
            if raw.dtype not in _EXACT_DTYPES:
                return None
            if out is None:
                out = np.empty(size, raw.dtype)
            elif raw.dtype != out.dtype:
                wider = np.result_type(out.dtype, raw.dtype)  # bool < int64 < float64
                if wider != out.dtype:
                    out = out.astype(wider)
            out[filled:filled + raw.size] = raw
        filled += raw.size
        at = end + 1
    if out is None or filled != size or (matrix and closes != rows):
        return None
    return out.reshape(rows, cols) if matrix else out


# --------------------------------------------------------------------------- /predict


def parse_predict(payload: Any, info: ModelInfo, *, max_batch: int = 1024,
                  max_chars: int = DEFAULT_MAX_CHARS) -> dict[str, np.ndarray] | Texts:
    """``{"inputs": [[...]]}`` (one input) or ``{"inputs": {name: [...]}}`` as feeds.

    For a model that carries a tokenizer, ``{"inputs": ["a text", ...]}`` (or ``{"inputs":
    {"text": [...]}}``) gives the checked Texts instead.
    """
    names = [s.name for s in info.signature.inputs]
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise ApiError(400, "expected a JSON object with key 'inputs', e.g. {\"inputs\": [[...]]}")
    inputs = payload["inputs"]
    if info.text is not None and _texts_given(inputs, names):
        if isinstance(inputs, dict):
            if len(inputs) != 1:
                raise ApiError(400, f"'inputs' has {sorted(inputs)}; expected either "
                                    f"'{text.TEXT_INPUT}' (texts) or the token inputs "
                                    f"({', '.join(names)}), not both")
            return text.check_texts(_listed(inputs[text.TEXT_INPUT]),
                                    f"inputs.{text.TEXT_INPUT}", max_batch=max_batch,
                                    max_chars=max_chars)
        return text.check_texts(_listed(inputs), "inputs", max_batch=max_batch,
                                max_chars=max_chars)
    if isinstance(inputs, dict):
        raw = inputs
    elif isinstance(inputs, (list, np.ndarray)):  # an array: a list of numbers decoded by numpy
        if len(names) != 1:
            raise ApiError(
                400, f"the model has {len(names)} inputs ({', '.join(names)}); expected 'inputs' "
                "as an object keyed by input name"
            )
        raw = {names[0]: inputs}
    else:
        raise ApiError(400, f"'inputs' is a {type(inputs).__name__}; expected a list (one-input "
                            "model) or an object keyed by input name")
    feeds = {}
    for name, value in raw.items():
        if name not in names:
            raise ApiError(400, f"unknown input {name!r}; expected inputs: {', '.join(names)}")
        feeds[name] = array_from_json(info.signature.input(name), value)
    return feeds


def _is_sequence(out: Any) -> bool:
    """A non-tensor output (ONNX sequence, e.g. skl2onnx's ZipMap: a list of ``{label: score}``)."""
    return isinstance(out, (list, tuple))


def _plain_sequence(out: Any) -> list:
    """A sequence output as JSON-able rows; map keys (ints for ZipMap) become strings."""
    rows = []
    for row in out:
        if isinstance(row, dict):
            rows.append({str(k): (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()})
        else:
            rows.append(np.asarray(row).tolist())
    return rows


def _texts_given(inputs: Any, names: list[str]) -> bool:
    """Whether a text model's ``inputs`` is texts rather than token ids."""
    if isinstance(inputs, dict):
        return text.TEXT_INPUT in inputs and text.TEXT_INPUT not in names
    if isinstance(inputs, str):
        return True  # answered "expected a list of strings"
    if not isinstance(inputs, (list, np.ndarray)):  # an array: a list of numbers (loads)
        return False
    # a list of lists for a one-input model is token ids; any other list is meant as texts
    # (a several-input model cannot take a bare list of ids)
    return not (len(names) == 1 and len(inputs) > 0
                and isinstance(inputs[0], (list, np.ndarray)))


def _listed(values: Any) -> Any:
    """What was sent as texts, with the numpy arrays ``loads`` made of lists of numbers (and of
    their elements) back as the lists orjson gives (a text model's arrays are exact: bool,
    int64, float64, so ``tolist`` gives the same values): the texts' checks answer as before."""
    if isinstance(values, np.ndarray):
        return values.tolist()
    if isinstance(values, list):
        return [v.tolist() if isinstance(v, np.ndarray) else v for v in values]
    return values


def predict_response(info: ModelInfo, outputs: list[np.ndarray]) -> dict[str, Any]:
    """The ``/predict`` answer: outputs by name, plus predictions and labels for a classifier."""
    body: dict[str, Any] = {
        "model": info.name,
        "outputs": {name: _plain_sequence(out) if _is_sequence(out) else _contiguous(out)
                    for name, out in zip(info.output_names, outputs)},
    }
    if info.classifier is not None and outputs and not _is_sequence(outputs[0]):
        scores = np.asarray(outputs[0])
        if scores.ndim >= 1 and scores.shape[-1] > 0:
            predictions = scores.argmax(axis=-1).astype(np.int64)
            body["predictions"] = predictions
            labels = info.classifier.labels
            if labels and len(labels) == scores.shape[-1]:
                body["labels"] = np.asarray(labels, dtype=object)[predictions].tolist()
    return body


def _contiguous(arr: np.ndarray) -> np.ndarray:
    # not np.ascontiguousarray: it turns a 0-d array into shape (1,)
    return arr if arr.flags.c_contiguous else np.array(arr, order="C")


# --------------------------------------------------------------------------- v2 infer


def split_binary(body: bytes, header_length: str | None, max_values: int | None = None,
                 numbers: np.dtype | None = None) -> tuple[Any, bytes]:
    """The JSON header and the raw tensor bytes after it (empty for a plain JSON request)."""
    if header_length is None:
        return loads(body, max_values, numbers), b""
    try:
        n = int(header_length) if header_length.strip().isdigit() else int("not a number")
    except ValueError as exc:
        raise ApiError(400, f"{BINARY_HEADER}: {header_length!r} is not an integer") from exc
    if not 0 < n <= len(body):
        raise ApiError(400, f"{BINARY_HEADER} is {n} but the body has {len(body)} bytes; expected "
                            "the length of the JSON header")
    return loads(body[:n], max_values), body[n:]


def parse_v2(payload: Any, binary: bytes, info: ModelInfo, *, max_batch: int = 1024,
             max_chars: int = DEFAULT_MAX_CHARS
             ) -> tuple[dict[str, np.ndarray] | Texts, dict]:
    """Feeds (or, for the ``text`` BYTES input of a text model, Texts) and the response options
    (``id``, requested outputs, binary flags)."""
    # (an array for 'inputs' is a list of numbers that loads decoded: refused below, as a list)
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), (list, np.ndarray)):
        raise ApiError(400, "expected a JSON object with 'inputs': a list of "
                            "{name, shape, datatype, data}")
    names = [s.name for s in info.signature.inputs]
    takes_text = info.text is not None and text.TEXT_INPUT not in names
    expected = ([text.TEXT_INPUT] if takes_text else []) + names
    feeds: dict[str, np.ndarray] = {}
    texts: Texts | None = None
    offset = 0
    for item in payload["inputs"]:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ApiError(400, "each entry of 'inputs' must be an object with a string 'name'")
        name = item["name"]
        if name not in expected:
            raise ApiError(400, f"unknown input {name!r}; expected inputs: {', '.join(expected)}")
        if name in feeds or (name == text.TEXT_INPUT and texts is not None):
            raise ApiError(400, f"input {name!r} given twice; expected each input once")
        chunk, offset = _binary_chunk(name, item, binary, offset)
        if name == text.TEXT_INPUT and takes_text:
            if isinstance(item.get("data"), np.ndarray):
                item = {**item, "data": _listed(item["data"])}
            texts = text.v2_texts(item, chunk, max_batch=max_batch, max_chars=max_chars)
            continue
        spec = info.signature.input(name)
        want = v2_datatype(spec.dtype)
        got = item.get("datatype")
        if got != want:
            raise ApiError(400, f"input '{name}': datatype {got!r}; expected {want!r}")
        if want not in V2_TO_NUMPY:
            raise ApiError(400, f"input '{name}': {want} tensors are not supported by this server")
        if chunk is None:
            feeds[name] = v2_array(spec, item, V2_TO_NUMPY[want])
        else:
            feeds[name] = _binary_array(spec, item.get("shape"), V2_TO_NUMPY[want], chunk)
    if offset != len(binary):
        raise ApiError(400, f"{len(binary) - offset} bytes of binary data left over; expected the "
                            "sum of the inputs' binary_data_size")
    if texts is not None:
        if feeds:
            raise ApiError(400, f"got '{text.TEXT_INPUT}' and {sorted(feeds)}; expected either "
                                f"'{text.TEXT_INPUT}' (texts) or the token inputs "
                                f"({', '.join(names)}), not both")
        return texts, _output_options(payload, info)
    return feeds, _output_options(payload, info)


def _binary_chunk(name: str, item: dict, binary: bytes, offset: int) -> tuple[bytes | None, int]:
    """This input's bytes of the binary part (None when its data is in the JSON) and the next offset."""
    params = item.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is None:
        return None, offset
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ApiError(400, f"input '{name}': binary_data_size must be a non-negative integer")
    chunk = binary[offset:offset + size]
    if len(chunk) != size:
        raise ApiError(400, f"input '{name}': binary_data_size {size} but only {len(chunk)} "
                            "bytes remain in the body")
    return chunk, offset + size


def _binary_array(spec, shape: Any, dtype: np.dtype, chunk: bytes) -> np.ndarray:
    name = spec.name
    shape = check_v2_shape(spec, shape)
    need = math.prod(shape) * dtype.itemsize
    if len(chunk) != need:
        raise ApiError(400, f"input '{name}': {len(chunk)} bytes of binary data but shape {shape} "
                            f"of {v2_datatype(dtype)} needs {need}")
    arr = np.frombuffer(chunk, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(shape)
    check_finite(name, arr)
    return arr


def _output_options(payload: dict, info: ModelInfo) -> dict:
    params = payload.get("parameters") or {}
    binary_all = bool(params.get("binary_data_output")) if isinstance(params, dict) else False
    requested = payload.get("outputs")
    wanted: list[tuple[str, bool]] = []
    if requested is None:
        wanted = [(n, binary_all) for n in info.output_names]
    elif isinstance(requested, list):
        for entry in requested:
            name = entry.get("name") if isinstance(entry, dict) else None
            if name not in info.output_names:
                raise ApiError(400, f"unknown output {name!r}; expected outputs: "
                                    f"{', '.join(info.output_names)}")
            p = entry.get("parameters") or {}
            wanted.append((name, bool(p.get("binary_data", binary_all)) if isinstance(p, dict)
                           else binary_all))
    else:
        raise ApiError(400, "'outputs' must be a list of {name, parameters?}")
    rid = payload.get("id")
    return {"id": rid if isinstance(rid, str) else "", "outputs": wanted}


def v2_response(info: ModelInfo, outputs: list[np.ndarray], options: dict) -> tuple[bytes, dict]:
    """The response body and extra headers (the binary header when any output is binary)."""
    by_name = dict(zip(info.output_names, outputs))
    entries, blobs = [], []
    for name, binary in options["outputs"]:
        out = by_name[name]
        if _is_sequence(out):
            # v2 has no map type: each row of a sequence output is one BYTES element holding its
            # JSON (a ZipMap row is {"0": 0.1, "1": 0.9, ...})
            texts = [dumps(row) for row in _plain_sequence(out)]
            entry = {"name": name, "datatype": "BYTES", "shape": [len(texts)],
                     "parameters": {"content": "json"}}
            if binary:
                raw = b"".join(len(t).to_bytes(4, "little") + t for t in texts)
                entry["parameters"]["binary_data_size"] = len(raw)
                blobs.append(raw)
            else:
                entry["data"] = [t.decode("utf-8") for t in texts]
            entries.append(entry)
            continue
        arr = _contiguous(np.asarray(out))
        entry: dict[str, Any] = {"name": name, "datatype": v2_datatype(arr.dtype),
                                 "shape": list(arr.shape)}
        if binary:
            raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = arr.reshape(-1)
        entries.append(entry)
    header = dumps({"model_name": info.name, "model_version": VERSION, "id": options["id"],
                    "outputs": entries})
    if not blobs:
        return header, {}
    return header + b"".join(blobs), {BINARY_HEADER: str(len(header))}


def model_metadata(info: ModelInfo, *, max_chars: int = DEFAULT_MAX_CHARS) -> dict[str, Any]:
    """``GET /v2/models/{name}``: inputs/outputs with -1 for variable dims."""

    def tensor(spec) -> dict[str, Any]:
        shape = [int(d) if modelfile.is_fixed_dim(d) else -1 for d in (spec.shape or [])]
        return {"name": spec.name, "datatype": v2_datatype(spec.dtype), "shape": shape}

    token_inputs = [tensor(s) for s in info.signature.inputs]
    meta: dict[str, Any] = {
        "name": info.name,
        "versions": [VERSION],
        "platform": PLATFORM,
        "inputs": token_inputs,
        "outputs": [tensor(s) for s in info.signature.outputs],
    }
    params: dict[str, Any] = {}
    if info.classifier is not None:
        params.update({"task": "classification", "labels": list(info.classifier.labels),
                       "input_scaling": info.classifier.input_scaling})
    if info.text is not None and text.TEXT_INPUT not in [s.name for s in info.signature.inputs]:
        # Texts are the model's input as a client sees it; token ids are still accepted (and
        # listed under parameters), but a tool that fills every listed input sends texts only.
        meta["inputs"] = [{"name": text.TEXT_INPUT, "datatype": text.TEXT_DATATYPE, "shape": [-1]}]
        params["text"] = {"max_length": info.text.max_length, "max_chars": max_chars,
                          "truncation": "the tokens past max_length are dropped",
                          "token_inputs": token_inputs}
    if params:
        meta["parameters"] = params
    return meta


def check_version(version: str | None) -> None:
    """Only version ``1`` exists; anything else is a 404."""
    if version is not None and version != VERSION:
        raise ApiError(404, f"unknown model version {version!r}; expected {VERSION!r}")


def check_name(name: str, info: ModelInfo) -> None:
    """A 404 naming the served model when the URL names another."""
    if name != info.name:
        raise ApiError(404, f"unknown model {name!r}; this server serves {info.name!r}")

