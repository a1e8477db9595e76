"""Health endpoints: ``/healthz`` (liveness) and ``/readyz`` (readiness) for an ASGI app.

A :class:`Health` registry holds named readiness checks. :meth:`Health.add_routes` puts two
``GET``/``HEAD`` routes on an :class:`~trionet.asgi.ASGIApplication` (or a
:class:`~trionet.asgi.Router`):

* ``/healthz`` answers 200 ``{"status": "ok"}`` whenever the process serves HTTP. It runs no
  check: a broker that is down is a reason to take the pod out of load balancing, not to
  restart it.
* ``/readyz`` runs every check (concurrently, each bounded by a timeout) and answers 200
  ``{"status": "ok", "checks": {...}}`` when all pass, 503 ``{"status": "unavailable", ...}``
  with each failing check's reason otherwise, and 503 from :meth:`Health.begin_shutdown` on.

Both carry ``Cache-Control: no-store``. trionet's MQTT client, Kafka consumer, bus
application and ASGI application are adapted by :meth:`Health.add_check` from the state they
already keep; nothing here starts a task or a thread.
"""

from __future__ import annotations

import inspect
import logging
import math
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, final

import trio

from ..errors import ASGIError, ConfigurationError
from ._app import ASGIApplication
from ._requests import Request
from ._responses import Response
from ._routing import Router

__all__ = ["CheckResult", "Health", "HealthCheck", "HealthReport", "HealthStatus"]

logger = logging.getLogger("trionet.asgi.health")

#: What a check returns: ``True`` or ``None`` when ready, ``False`` when not, or a string
#: that says why it is not ready.
CheckResult = bool | str | None
#: A readiness check: a function (plain or ``async``) taking no argument.
HealthCheck = Callable[[], CheckResult | Awaitable[CheckResult]]

_NO_STORE = {"cache-control": "no-store"}


@final
@dataclass(frozen=True)
class HealthStatus:
    """The outcome of one check.

    Attributes:
        ok: whether the component is ready.
        reason: why it is not ready (empty when ``ok``).
    """

    ok: bool
    reason: str = ""

    def as_json(self) -> dict[str, str]:
        """``{"status": "ok"}`` or ``{"status": "unavailable", "reason": ...}``."""
        if self.ok:
            return {"status": "ok"}
        return {"status": "unavailable", "reason": self.reason}


@final
@dataclass(frozen=True)
class HealthReport:
    """The outcome of every check, as ``/readyz`` reports it.

    Attributes:
        ok: whether every check passed and no shutdown has begun.
        checks: each check's :class:`HealthStatus`, by name, in registration order.
        reason: why the whole program is not ready regardless of the checks ("shutting
            down"), or empty.
    """

    ok: bool
    checks: dict[str, HealthStatus]
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        """The ``/readyz`` body."""
        body: dict[str, Any] = {"status": "ok" if self.ok else "unavailable"}
        if self.reason:
            body["reason"] = self.reason
        body["checks"] = {name: status.as_json() for name, status in self.checks.items()}
        return body


def _interpret(result: object) -> HealthStatus:
    if result is True or result is None:
        return HealthStatus(True)
    if result is False:
        return HealthStatus(False, "not ready")
    if isinstance(result, str):
        return HealthStatus(False, result or "not ready")
    raise TypeError(
        f"a health check must return True, False, None or a reason string, "
        f"not {type(result).__name__}"
    )


def _adapt(target: object) -> HealthCheck:
    """Turn a component into a check (see :meth:`Health.add_check` for the rules)."""
    # The optional subpackages are looked up only if the program imported them: an object of
    # their classes cannot exist otherwise, and importing them here could need an extra.
    mqtt = sys.modules.get("trionet.mqtt")
    if mqtt is not None and isinstance(target, mqtt.MQTTClient):
        client = target
        connected = mqtt.ConnectionState.CONNECTED

        def mqtt_check() -> CheckResult:
            state = client.state
            return True if state is connected else f"MQTT client is {state.value}"

        return mqtt_check
    kafka = sys.modules.get("trionet.kafka")
    if kafka is not None and isinstance(target, kafka.KafkaConsumer):
        consumer = target

        async def kafka_consumer_check() -> CheckResult:
            try:
                assigned = await consumer.assignment()
            except trio.ClosedResourceError:
                return "Kafka consumer is not open"
            return True if assigned else "Kafka consumer has no partition assigned"

        return kafka_consumer_check
    bus = sys.modules.get("trionet.bus")
    if bus is not None and isinstance(target, bus.DistributedApplication):
        bus_app = target

        def bus_check() -> CheckResult:
            if bus_app.ready:
                return True
            return "bus is starting or stopping" if bus_app.running else "bus is not running"

        return bus_check
    if isinstance(target, ASGIApplication):
        app = target

        def lifespan_check() -> CheckResult:
            try:
                app.nursery  # noqa: B018 - set from lifespan startup to shutdown
            except ASGIError:
                return "HTTP application is not between lifespan startup and shutdown"
            return True

        return lifespan_check
    if callable(target):
        return target
    if hasattr(target, "ready"):
        component = target

        def ready_check() -> CheckResult:
            ready = component.ready
            return bool(ready() if callable(ready) else ready)

        return ready_check
    raise TypeError(
        f"cannot check a {type(target).__name__}: pass a function returning True/False/a "
        "reason, an object with a 'ready' attribute, or a trionet MQTTClient, KafkaConsumer, "
        "DistributedApplication or ASGIApplication"
    )


@final
class Health:
    """A registry of readiness checks, served as ``/healthz`` and ``/readyz``.

    Example::

        health = Health()
        health.add_check("mqtt", client)        # an MQTTClient: ready while connected
        health.add_check("disk", lambda: shutil.disk_usage("/").free > 2**30 or "disk full")
        health.add_routes(app)                  # GET/HEAD /healthz and /readyz

    Args:
        timeout: the default seconds a check may take before it counts as failed.
    """

    def __init__(self, *, timeout: float = 2.0) -> None:
        _check_timeout(timeout)
        self.timeout = timeout
        self._checks: dict[str, tuple[HealthCheck, float]] = {}
        self._shutdown_reason = ""

    def add_check(self, name: str, check: object, *, timeout: float | None = None) -> None:
        """Register a readiness check under ``name`` (a key of the ``/readyz`` body).

        ``check`` may be:

        * a function, plain or ``async``, taking no argument and returning ``True`` or
          ``None`` (ready), ``False`` (not ready) or a string (not ready, and why). A check
          that raises counts as not ready, with the exception as the reason (and a log
          record). Plain functions run in the event loop: they must not block.
        * a :class:`~trionet.mqtt.MQTTClient`: ready while its state is ``CONNECTED``; the
          reason names the state otherwise (``"MQTT client is reconnecting"``).
        * a :class:`~trionet.kafka.KafkaConsumer`: ready while it is open and has at least
          one partition assigned (one call on the consumer's own thread).
        * a :class:`~trionet.bus.DistributedApplication`: its
          :attr:`~trionet.bus.DistributedApplication.ready`.
        * an :class:`~trionet.asgi.ASGIApplication`: ready between its lifespan startup and
          shutdown (:meth:`add_routes` adds this check for the application it is given).
        * any other object with a ``ready`` attribute (a bool, or a method returning one).

        Args:
            name: the check's name; registering a name again replaces the check.
            check: see above.
            timeout: seconds the check may take (default: the registry's ``timeout``).

        Raises:
            TypeError: ``check`` is none of the above.
        """
        if not isinstance(name, str) or not name:
            raise ConfigurationError("a health check needs a non-empty name")
        if timeout is not None:
            _check_timeout(timeout)
        self._checks[name] = (_adapt(check), self.timeout if timeout is None else timeout)

    def remove_check(self, name: str) -> None:
        """Forget the check named ``name`` (no error if there is none)."""
        self._checks.pop(name, None)

    @property
    def names(self) -> list[str]:
        """The registered checks' names, in registration order."""
        return list(self._checks)

    def begin_shutdown(self, reason: str = "shutting down") -> None:
        """From now on ``/readyz`` answers 503 with ``reason``, whatever the checks say.

        Call it when a graceful shutdown starts (on SIGTERM), so that load balancers stop
        sending new work while in-flight requests finish.
        """
        self._shutdown_reason = reason or "shutting down"

    @property
    def shutting_down(self) -> bool:
        """Whether :meth:`begin_shutdown` was called."""
        return bool(self._shutdown_reason)

    async def check(self) -> HealthReport:
        """Run every check concurrently and report (what ``/readyz`` serves)."""
        results: dict[str, HealthStatus] = {}
        checks = list(self._checks.items())
        if len(checks) == 1:
            name, (check, timeout) = checks[0]
            results[name] = await _run_check(name, check, timeout)
        elif checks:
            async with trio.open_nursery() as nursery:
                for name, (check, timeout) in checks:
                    nursery.start_soon(self._run_into, results, name, check, timeout)
        ordered = {name: results[name] for name, _ in checks}
        ok = not self._shutdown_reason and all(status.ok for status in ordered.values())
        return HealthReport(ok, ordered, self._shutdown_reason)

    @staticmethod
    async def _run_into(results: dict[str, HealthStatus], name: str, check: HealthCheck,
                        seconds: float) -> None:
        results[name] = await _run_check(name, check, seconds)

    # -- HTTP ---------------------------------------------------------------------------------

    async def liveness(self, request: Request) -> Response:
        """The ``/healthz`` endpoint: 200 ``{"status": "ok"}``."""
        return Response.json({"status": "ok"}, headers=_NO_STORE)

    async def readiness(self, request: Request) -> Response:
        """The ``/readyz`` endpoint: the :meth:`check` report, 200 or 503."""
        report = await self.check()
        return Response.json(report.as_json(), status_code=200 if report.ok else 503,
                             headers=_NO_STORE)

    def add_routes(
        self,
        target: ASGIApplication | Router,
        *,
        liveness: str = "/healthz",
        readiness: str = "/readyz",
    ) -> None:
        """Serve :meth:`liveness` and :meth:`readiness` on ``target`` (``GET`` and ``HEAD``).

        Given an :class:`~trionet.asgi.ASGIApplication`, also add a check named ``"http"``
        that is ready between the application's lifespan startup and shutdown (unless a
        check of that name exists). The routes go through the application's middleware like
        any other.
        """
        if isinstance(target, ASGIApplication) and "http" not in self._checks:
            self.add_check("http", target)
        target.route(liveness, name="healthz")(self.liveness)
        target.route(readiness, name="readyz")(self.readiness)


def _check_timeout(timeout: float) -> None:
    if not (isinstance(timeout, (int, float)) and timeout > 0 and math.isfinite(timeout)):
        raise ConfigurationError(f"a health check timeout must be a positive number, not "
                                 f"{timeout!r}")


async def _run_check(name: str, check: HealthCheck, seconds: float) -> HealthStatus:
    with trio.move_on_after(seconds):
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            return _interpret(result)
        except Exception as exc:
            logger.warning("health check %r failed: %s: %s", name, type(exc).__name__, exc,
                           exc_info=exc)
            return HealthStatus(False, f"{type(exc).__name__}: {exc}")
    return HealthStatus(False, f"timed out after {seconds:g} s")
