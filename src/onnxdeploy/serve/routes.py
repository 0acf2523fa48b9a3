"""The route table of ``serve``, and the one router both ways in use.

Every URL the server answers is one ``Route`` in ``ROUTES``: its methods, its rules (Flask's rule
syntax, so Flask's blueprints are registered from this table too), the endpoint name the metrics
count it under, the view that answers it (``serve.views.Views``), the lane the granian front runs
it in, and whether it needs the API key. ``Router.match`` finds a request's route the way Flask's
URL map does (``<name>`` is one path segment, ``<path:...>`` the rest), and answers what matches
nothing with a route as well (404, 405, ``OPTIONS``), so every request reaches a view.

A request arrives as a ``Request``: the method, the URL path already percent-decoded as UTF-8
(granian decodes it; Werkzeug does the same under ``--dev`` and the test client), the few
headers a view reads (``HEADERS``) and the buffered body. Both decoders replace invalid UTF-8 by
U+FFFD, so that character in a path is how a request with undecodable bytes in its URL is
known (``BAD_PATH_CHAR``; a path that really holds U+FFFD is refused alike).

Only the standard library here: the front imports this module in granian's parent process.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

#: the request headers views read, lower-case (granian names them so; Werkzeug's lookup is
#: case-insensitive)
HEADERS = ("authorization", "content-type", "inference-header-content-length", "if-none-match")
#: what both URL decoders put for bytes that are not UTF-8
BAD_PATH_CHAR = "\ufffd"

#: the front's lanes: inference (``--http-threads``, admitted), probes, everything else
WORK, PROBE, MISC = "work", "probe", "misc"


class Request(NamedTuple):
    """A request as the views see it, whichever server parsed it."""

    method: str
    path: str  # percent-decoded, as UTF-8
    header: Callable[[str], str | None]  # by lower-case name, one of HEADERS
    body: bytes


@dataclass(frozen=True)
class Route:
    """One endpoint: its rules, the view that answers it and how it is run."""

    endpoint: str  # the metrics label and the Flask endpoint inside its blueprint
    method: str  # GET routes answer HEAD too (without the body)
    rules: tuple[str, ...]
    view: str  # a method of serve.views.Views
    blueprint: str = ""  # "" for the router's own answers (no Flask rule)
    lane: str = MISC
    public: bool = False  # answered without the API key

    @property
    def methods(self) -> tuple[str, ...]:
        """What the ``Allow`` header lists for this route's paths."""
        return (self.method, "HEAD", "OPTIONS") if self.method == "GET" else (self.method,
                                                                                "OPTIONS")


_INFER = ("/v2/models/<name>/infer", "/v2/models/<name>/versions/<version>/infer")
ROUTES: tuple[Route, ...] = (
    Route("predict", "POST", ("/predict",), "predict", "simple", WORK),
    Route("v2_infer", "POST", _INFER, "v2_infer", "v2", WORK),
    Route("v2_live", "GET", ("/v2/health/live",), "live", "v2", PROBE, public=True),
    Route("v2_ready", "GET", ("/v2/health/ready",), "ready", "v2", PROBE),
    Route("v2_server", "GET", ("/v2",), "server_metadata", "v2"),
    Route("v2_model", "GET", ("/v2/models/<name>", "/v2/models/<name>/versions/<version>"),
          "model_metadata", "v2"),
    Route("v2_model_ready", "GET", ("/v2/models/<name>/ready",
                                    "/v2/models/<name>/versions/<version>/ready"),
          "model_ready", "v2"),
    Route("metrics", "GET", ("/metrics",), "metrics_text", "ops", PROBE),
    Route("openapi", "GET", ("/openapi.json",), "openapi", "ops"),
    # the docs page and its assets are static (the spec they load still needs the key)
    Route("page", "GET", ("/docs",), "docs_page", "docs", public=True),
    Route("static", "GET", ("/docs/static/<path:filename>",), "docs_static", "docs",
          public=True),
)
DOCS_BLUEPRINT = "docs"

#: what the router answers itself (counted under their endpoint like any route)
NOT_FOUND = Route("unmatched", "", (), "not_found")
NOT_ALLOWED = Route("unmatched", "", (), "not_allowed")
OPTIONS = Route("options", "OPTIONS", (), "options")


class Match(NamedTuple):
    """A route and the arguments its rule took from the path."""

    route: Route
    args: dict[str, str]


_CONVERTER = re.compile(r"<(?:(path):)?(\w+)>")


def _pattern(rule: str) -> re.Pattern:
    """A Flask rule as a regex: ``<name>`` one segment, ``<path:name>`` the rest (not from /)."""
    out, pos = [], 0
    for m in _CONVERTER.finditer(rule):
        out.append(re.escape(rule[pos:m.start()]))
        out.append(f"(?P<{m.group(2)}>[^/].*)" if m.group(1) else f"(?P<{m.group(2)}>[^/]+)")
        pos = m.end()
    out.append(re.escape(rule[pos:]))
    return re.compile("".join(out))


class Router:
    """Find the route of a method and path, as Flask's URL map would."""

    def __init__(self, routes: tuple[Route, ...] = ROUTES):
        self.routes = routes
        self._static: dict[str, list[Route]] = {}
        self._dynamic: list[tuple[re.Pattern, Route]] = []
        for route in routes:
            for rule in route.rules:
                if "<" in rule:
                    self._dynamic.append((_pattern(rule), route))
                else:
                    self._static.setdefault(rule, []).append(route)

    def match(self, method: str, path: str) -> Match:
        """The route answering ``method path``; ``NOT_FOUND``, ``NOT_ALLOWED`` or ``OPTIONS``
        when no route takes this method on this path."""
        want = "GET" if method == "HEAD" else method
        static = self._static.get(path)
        others: list[Route] = []
        if static is not None:
            for route in static:
                if route.method == want:
                    return Match(route, {})
                others.append(route)
        else:  # the rules of one method never overlap: the first that matches is the route
            for pattern, route in self._dynamic:
                m = pattern.fullmatch(path)
                if m is not None:
                    if route.method == want:
                        return Match(route, {k: v for k, v in m.groupdict().items()
                                             if v is not None})
                    others.append(route)
        if not others:
            return Match(NOT_FOUND, {})
        allowed = tuple(dict.fromkeys(m for route in others for m in route.methods))
        return Match(OPTIONS if method == "OPTIONS" else NOT_ALLOWED, {"allowed": allowed})
