"""The Flask application factory: thin blueprints over the one request path (``serve.service``).

Flask serves the app under ``--dev``, the test client and any WSGI server
(``'onnxdeploy.serve.app:create_app()'``). Its blueprints are registered from the route table
(``serve.routes.ROUTES``) and each of their views only reads the body and hands the request to
``Service.handle``: the API key, admission, the views, the JSON errors and the metrics are the
service's, the same code the granian front calls without Flask. What Flask's URL map does not
route (404, 405, ``OPTIONS``) goes to the same router and is answered and counted alike.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .front import CONFIG_ENV
from .routes import HEADERS, NOT_FOUND, Match, Request, Route
from .service import DEFAULTS, Service
from .validation import ApiError

__all__ = ["DEFAULTS", "create_app"]


def create_app(test_config: dict[str, Any] | None = None):
    """Build the serving app: ``DEFAULTS``, then the deployment's config (``CONFIG_ENV``, when
    set), then ``test_config``. The keys are ``Service``'s; ``LOAD_ON_START`` creates the
    session now rather than on first use. ``app.extensions["onnxdeploy"]`` is the ``Service``.
    """
    from flask import Blueprint, Flask, request
    from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

    deployed = json.loads(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else {}
    service = Service({**deployed, **(test_config or {})})
    app = Flask("onnxdeploy.serve")
    app.config.update(service.config)
    # Werkzeug enforces this while reading a body without a Content-Length (chunked)
    app.config["MAX_CONTENT_LENGTH"] = service.max_body
    app.url_map.merge_slashes = False  # as the front's router: "//predict" is no route
    app.extensions["onnxdeploy"] = service

    blueprints: dict[str, Blueprint] = {}
    for route in service.routes:
        bp = blueprints.setdefault(route.blueprint, Blueprint(route.blueprint, __name__))
        view = _view(service, route)
        for rule in route.rules:
            bp.add_url_rule(rule, route.endpoint, view, methods=[route.method],
                            provide_automatic_options=False)
    for bp in blueprints.values():
        app.register_blueprint(bp)

    @app.errorhandler(HTTPException)
    def unrouted(exc: HTTPException):
        if isinstance(exc, (NotFound, MethodNotAllowed)):
            # Flask's URL map found no rule for this method (404, 405, OPTIONS): the router
            # says which, as it does under the front
            match = service.router.match(request.method, request.path)
            return _response(service.handle(match, _request(request, b"")))
        error = ApiError(exc.code or 400, exc.description or exc.name)
        return _response(service.refuse(NOT_FOUND.endpoint, error))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):  # a bug in this module: JSON all the same, never HTML
        app.logger.exception("unhandled error in %s %s", request.method, request.path)
        return _response(service.refuse(NOT_FOUND.endpoint, exc))

    if service.config["LOAD_ON_START"]:
        service.holder.load()
    return app


def _view(service: Service, route: Route):
    """The Flask view of a route: read the body, hand the request to the service."""
    from flask import request

    def view(**args):
        # the path and the key from the headers first, as the front does: no body read
        refused = service.check_first(Match(route, args), request.method, request.path,
                                      request.headers.get)
        if refused is not None:
            return _response(refused)
        try:
            body = _body(request, service.max_body)
        except ApiError as exc:
            return _response(service.refuse(route.endpoint, exc))
        return _response(service.handle(Match(route, args), _request(request, body)))

    return view


def _request(request, body: bytes) -> Request:
    headers = {name: request.headers.get(name) for name in HEADERS}
    return Request(request.method, request.path, headers.get, body)


def _body(request, cap: int) -> bytes:
    from werkzeug.exceptions import RequestEntityTooLarge

    if (request.content_length or 0) > cap:
        raise ApiError(413, f"request body is {request.content_length} bytes; expected at most "
                            f"{cap} bytes")
    try:
        data = request.get_data(cache=False)
    except RequestEntityTooLarge:  # chunked, stopped at the cap
        data = None
    if data is None or len(data) > cap:
        raise ApiError(413, f"request body is over {cap} bytes; expected at most {cap} bytes")
    return data


def _response(reply):
    from flask import Response

    return Response(reply.body, status=reply.status, headers=reply.headers)
