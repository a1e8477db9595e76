"""Every ASGI test runs on both trio workers: trionet's (the default) and Hypercorn's."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, params=["trionet", "hypercorn"])
def asgi_worker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The worker ``serve()`` uses in this test (also in subprocesses, through the
    ``TRIONET_ASGI_WORKER`` environment variable)."""
    worker: str = request.param
    monkeypatch.setenv("TRIONET_ASGI_WORKER", worker)
    return worker
