"""Small blocking HTTP helpers for everything that is not load: health, metadata, metrics, accuracy."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

from ..errors import OptionError, ServerError


def split_url(url: str) -> tuple[str, int]:
    """``(host, port)`` of an ``http://host:port`` base URL."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise OptionError(f"--url {url}: expected http://HOST:PORT (plain HTTP)")
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise OptionError(f"--url {url}: bad port ({exc})") from exc
    return parts.hostname, port


def request(
    url: str, method: str, path: str, body: bytes | None = None, *, timeout: float = 30.0
) -> tuple[int, bytes]:
    """One request on a fresh connection: ``(status, body)``; connection errors raise OSError."""
    host, port = split_url(url)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def get_json(url: str, path: str, *, timeout: float = 30.0) -> Any:
    """GET a JSON document or raise ServerError naming the URL and what came back."""
    try:
        status, body = request(url, "GET", path, timeout=timeout)
    except OSError as exc:
        raise ServerError(f"{url}{path}: cannot connect ({exc})") from exc
    if status != 200:
        raise ServerError(f"{url}{path}: HTTP {status}: {body[:200].decode(errors='replace')}")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ServerError(f"{url}{path}: not JSON ({body[:80]!r})") from exc


def is_up(url: str, path: str, *, timeout: float = 2.0) -> bool:
    """True when ``GET path`` answers 200."""
    try:
        status, _ = request(url, "GET", path, timeout=timeout)
    except OSError:
        return False
    return status == 200
