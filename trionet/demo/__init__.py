"""The ``trionet demo`` command: every component in one program, and one small demo per
component.

Run it from the command line (``trionet demo``, ``trionet demo --serve``,
``trionet demo --only PART``); the modules here are not an API. It sits on top of every other
package and nothing in trionet imports it, except the command line:

* ``_run``: the command (``run_demo``): the parts, ``--only``, ``--serve``;
* ``_stack``: ``Stack``, every server of trionet in one nursery with health checks and an
  ordered graceful shutdown, and ``exercise``, the client tour of a running stack;
* ``_aproto``, ``_asgi``, ``_bus``, ``_channel``, ``_kafka``, ``_mail``, ``_mqtt``: one small demo
  per component (``trionet demo --only PART``), each using only that component's public API.
"""

from __future__ import annotations

__all__: list[str] = []
