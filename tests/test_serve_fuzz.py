"""Any bytes in a URL, any shape in a body: a JSON 4xx, counted in /metrics, never a 500.

Real ``onnxdeploy serve`` processes on free ports (the granian front), then schemathesis over the
server's own ``/openapi.json``. The URLs below are the ones an outside fuzzer (schemathesis 4.32)
and issue 26 found answered 500: granian hands the path percent-decoded, and the old front put
that string in a WSGI environ where werkzeug needs Latin-1 (PEP 3333).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest
from builders import mlp_classifier, save
from prometheus_client.parser import text_string_to_metric_families
from test_serve_server import Server

pytestmark = pytest.mark.slow

FUZZ_SEED = 21
FUZZ_EXAMPLES = 25  # per operation; ~600 requests, ~10 s here
ROW = [0.5] * 64


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_fuzz")
    return {"root": root, "mlp": save(mlp_classifier(), root / "mlp.onnx")}


@pytest.fixture(scope="module")
def server(models):
    s = Server(models["mlp"], "--workers", "1", tmp=models["root"])
    yield s
    s.stop()


def counts(server, headers=None) -> Counter:
    """``onnxdeploy_requests_total`` by (endpoint, status)."""
    status, _, body = server.get("/metrics", headers=headers)
    assert status == 200
    out: Counter = Counter()
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == "onnxdeploy_requests_total":
                out[(s.labels["endpoint"], s.labels["status"])] += s.value
    return out


def _refused(server, method, path, body=None, headers=None, *, status=None, headers_metrics=None):
    """Send one request; check it is a JSON 4xx with a one-line error, counted once."""
    before = counts(server, headers_metrics)
    got, answer_headers, raw = server.request(method, path, body, headers)
    assert 400 <= got < 500, (path, got, raw[:300])
    if status is not None:
        assert got == status, (path, got, raw[:300])
    assert answer_headers["Content-Type"] == "application/json", (path, raw[:300])
    message = json.loads(raw)["error"]
    assert message and "\n" not in message and "Traceback" not in message
    delta = counts(server, headers_metrics) - before
    # leave out the first scrape, and the readiness poll of the parent's ready line
    delta = Counter({k: v for k, v in delta.items() if k[0] not in ("metrics", "v2_ready")})
    assert list(delta.values()) == [1] and next(iter(delta))[1] == str(got), (path, delta)
    return got, message


#: what schemathesis 4.32 got a 500 for (valid UTF-8 names, not Latin-1)
FUZZER_URLS = [
    "/v2/models/%C2%85%F1%85%A7%A8%29",
    "/v2/models/%F3%B7%A6%AD%F3%BE%92%8D%C3%86%C3%9E%C2%A0%1A%C2%BBNN%C2%90/ready",
    "/v2/models/%F3%8D%85%A9i%C2%BCh%F1%B4%B6%9F%C3%B8/versions/0.1.0",
    "/v2/models/%C2%A7%C2%90%13E%20%C3%9E%26%C2%9Cc%F3%AD%86%B3%7C/versions/0.1.0/ready",
]


@pytest.mark.parametrize("path", FUZZER_URLS)
def test_fuzzer_urls_are_an_unknown_model(server, path):
    status, message = _refused(server, "GET", path, status=404)
    assert "unknown model" in message and "'mlp'" in message


@pytest.mark.parametrize(("path", "method"), [
    ("/x%ff", "GET"),
    ("/docs/static/%c0%ae%c0%ae/x", "GET"),
    ("/pre%ffdict", "POST"),
])
def test_a_path_that_is_not_utf8_is_a_400(server, path, method):
    body = orjson.dumps({"inputs": [ROW]}) if method == "POST" else None
    headers = {"Content-Type": "application/json"} if body else None
    status, message = _refused(server, method, path, body, headers, status=400)
    assert "not valid UTF-8" in message


def test_a_path_that_is_not_utf8_is_a_400_with_an_api_key_too(start_keyed):
    server, auth = start_keyed
    _refused(server, "GET", "/x%ff", status=400, headers_metrics=auth)
    _refused(server, "GET", "/v2/models/%C2%85", headers=auth, status=404, headers_metrics=auth)
    _refused(server, "GET", "/v2/models/%C2%85", status=401, headers_metrics=auth)


@pytest.fixture(scope="module")
def start_keyed(models):
    s = Server(models["mlp"], "--workers", "1", "--api-key-env", "FUZZ_KEY", tmp=models["root"],
               env={"FUZZ_KEY": "k"}, headers={"Authorization": "Bearer k"})
    yield s, {"Authorization": "Bearer k"}
    s.stop()


# impossible shapes and model names that are not ASCII (or not UTF-8): test_serve_hostile,
# over REST and gRPC


def _schemathesis() -> list[str]:
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("schemathesis is not installed (the dev extra)")
    return [exe]


def test_schemathesis_finds_no_server_error(server, tmp_path):
    """Property-based requests from the server's own OpenAPI document: examples, coverage
    (boundary and invalid values, odd path parameters), fuzzing and stateful, seed fixed."""
    har = tmp_path / "run.har"
    before = counts(server)
    run = subprocess.run(
        [*_schemathesis(), "run", f"http://127.0.0.1:{server.port}/openapi.json",
         "--checks", "not_a_server_error", "--seed", str(FUZZ_SEED),
         "--max-examples", str(FUZZ_EXAMPLES), "--workers", "1", "--no-shrink",
         "--request-timeout", "10", "--report", "har", "--report-har-path", str(har)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)  # its cache stays there
    entries = json.loads(har.read_text())["log"]["entries"]
    statuses = Counter(e["response"]["status"] for e in entries)
    errors = [(e["request"]["method"], e["request"]["url"], e["response"]["status"])
              for e in entries if e["response"]["status"] >= 500]
    print(f"schemathesis: {len(entries)} requests, statuses {dict(sorted(statuses.items()))}")
    assert not errors, errors[:10]
    assert run.returncode == 0, run.stdout[-3000:]
    assert len(entries) > 200 and statuses[200] > 0 and sum(statuses.values()) > statuses[404]
    # every answer was counted (the spec download and our scrapes are counted too)
    answered = sum((counts(server) - before).values())
    assert len(entries) <= answered <= len(entries) + 5, (len(entries), answered)
    assert "Traceback" not in server.text()
