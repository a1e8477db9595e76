"""Every ASGI test runs on both trio workers: trionet's (the default, with its own HTTP/1.1
path) and Hypercorn's. ``test_asgi_worker.py`` also runs on trionet's worker with HTTP/1.1
left to Hypercorn's protocol (``trionet-hc11``), the A/B switch of ``TRIONET_ASGI_HTTP1``."""

from __future__ import annotations

import pytest
from asgi_support import use_worker


@pytest.fixture(autouse=True, params=["trionet", "hypercorn"])
def asgi_worker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The worker ``serve()`` uses in this test (also in subprocesses, through the
    ``TRIONET_ASGI_WORKER`` environment variable)."""
    return use_worker(monkeypatch, request.param)
