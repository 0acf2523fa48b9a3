"""``GET /docs``: Swagger UI over ``/openapi.json``, its assets served from the installed
``swagger-ui-py`` package (no CDN: the page works on a machine without internet access).

The page and the assets are answered by ``serve.views`` (``docs_page``, ``docs_static``) like
every other route; without the package both routes are left out of the table (404).
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("onnxdeploy.serve")

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>onnxdeploy API</title>
  <link rel="stylesheet" href="/docs/static/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/static/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/static/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui",
                                 deepLinking: true, tryItOutEnabled: true});
  </script>
</body>
</html>
"""


def assets_dir() -> Path | None:
    """Where the Swagger UI files are, or None when swagger-ui-py is not installed."""
    # found, not imported: swagger_ui's __init__ imports its core (and yaml), which no route of
    # ours uses; only the files under static/ are served
    import importlib.util

    try:
        spec = importlib.util.find_spec("swagger_ui")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "static"
    return root if (root / "swagger-ui-bundle.js").is_file() else None
