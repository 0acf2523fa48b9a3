"""Which request threads must refuse inference: the link between the gunicorn worker and the app.

The gunicorn worker (``serve.worker``) decides at dispatch time, before a request is parsed,
that a worker is full; it hands such requests to threads marked here, and the app's inference
views answer them 503 + ``Retry-After`` without reading the body. Kept free of gunicorn so the
app also runs under Flask's server and the test client.
"""

from __future__ import annotations

import threading

_local = threading.local()


def mark_shedding() -> None:
    """Mark the calling thread: inference requests it handles are refused (thread initializer)."""
    _local.shed = True


def shedding() -> bool:
    """True in a thread that answers only overload refusals for inference."""
    return getattr(_local, "shed", False)
