"""``DistributedApplication``: consumer and producer applications on one message bus.

Every application runs as a task of one nursery (:meth:`DistributedApplication.serve`), each
with its own socket, resources and state. What happens when things go wrong:

* A handler error is dealt with by the application's :class:`ErrorPolicy`: by default it is
  logged (with the message id and correlation id), the message acknowledged and the
  application goes on; retries, a dead-letter topic, or ``"raise"`` are opt-in.
* A producer that raises is logged and ends; the other applications go on (``on_error="raise"``
  makes its error end the whole bus instead).
* An application that fails otherwise (its socket cannot connect, a resource cannot be entered,
  or ``on_error="raise"``) fails the whole :class:`DistributedApplication` (its siblings are
  cancelled and the error propagates), unless it has a :class:`RestartPolicy`.
* Shutdown, by :meth:`DistributedApplication.stop`, SIGINT/SIGTERM under
  :meth:`~DistributedApplication.start`, or cancellation of the surrounding nursery, is
  graceful: producers are cancelled, consumers stop taking messages, handlers already running
  finish (and acknowledge) within ``shutdown_timeout`` seconds, then sockets close.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar

import trio

from .. import metrics as _metrics, tracing as _tracing
from .._threads import in_main_thread
from .._util import reraise_single
from ..errors import ConfigurationError
from ..observability import CORRELATION_HEADER, reset_correlation_id, set_correlation_id
from ..supervision import RetryPolicy
from ._errors import BusClosed, BusError, InvalidPayload, RequestTimeout
from ._message import BusMessage
from ._middleware import (
    Middleware,
    check_middleware,
    consume_scopes,
    install_publish_middleware,
    wrap_consume,
)
from ._ordering import ConsumeLoop
from ._policy import AckPolicy, ErrorPolicy, RestartPolicy
from ._providers import from_config
from ._socket import BusSocket, Delivery, ProviderSpec, SocketProvider
from ._topics import check_topic, normalize_topics
from ._typed import ConsumerBinding, bind_consumer, publish_result, return_annotation

__all__ = [
    "AppStatistics",
    "ApplicationSpec",
    "ConsumerCallback",
    "DistributedApplication",
    "ProducerCallback",
    "Resource",
]

logger = logging.getLogger("trionet.bus")

#: A consumer: ``async def handler(message, socket, state, **resources)`` (it may declare only
#: the arguments it uses).
ConsumerCallback: TypeAlias = Callable[..., Awaitable[Any]]
#: A producer: ``async def producer(socket, state, **resources)``, run once.
ProducerCallback: TypeAlias = Callable[..., Awaitable[Any]]
#: A resource: a context manager (sync or async), or a callable returning a fresh one each
#: time the application starts (needed for applications that may be restarted).
Resource: TypeAlias = (
    AbstractContextManager[Any]
    | AbstractAsyncContextManager[Any]
    | Callable[[], AbstractContextManager[Any] | AbstractAsyncContextManager[Any]]
)

CallbackT = TypeVar("CallbackT", bound=Callable[..., Awaitable[Any]])

_RESERVED_ARGUMENTS = frozenset({"message", "socket", "state"})


@dataclass(slots=True)
class AppStatistics:
    """Counters of one application, kept across restarts.

    Attributes:
        handled: messages whose handler returned.
        failed: handler calls that raised (retries included).
        dead_lettered: messages sent to the dead-letter topic.
        invalid: messages that did not fit a typed handler (:class:`InvalidPayload`; counted
            in ``failed`` too).
        restarts: times the application was restarted by its restart policy.
        in_flight: handlers running right now.
        expired: messages whose deadline passed before their handler finished (it was
            cancelled, or not called); they are acknowledged.
    """

    handled: int = 0
    failed: int = 0
    dead_lettered: int = 0
    restarts: int = 0
    invalid: int = 0
    in_flight: int = 0
    expired: int = 0


@dataclass(frozen=True)
class ApplicationSpec:
    """One registered application (what the decorators record; nothing is shared).

    Attributes:
        kind: ``"consumer"`` or ``"producer"``.
        callback: the coroutine function.
        name: unique within its :class:`DistributedApplication`.
        topics: the consumer's topic filters.
        socket_provider: the provider, or ``None`` for the application's default.
        state: the object passed as ``state``.
        resources: the context managers (or factories) entered for each run.
        max_concurrency: handlers of this application that may run at once.
        ack: the :class:`AckPolicy`.
        on_error: the :class:`ErrorPolicy`.
        restart: the :class:`RestartPolicy`, or ``None`` to fail the whole bus.
        payload_type: the annotation of the consumer's payload parameter (``None``: the
            consumer takes the raw :class:`BusMessage`, or no payload).
        result_type: the consumer's return annotation when it has publishers (else ``None``).
        publishes: the topics its return value is published to
            (:meth:`DistributedApplication.publisher`).
        middleware: the :class:`~trionet.bus.Middleware` around its handler and publishes,
            outermost first (the application's, then its own).
        binding: how a typed consumer is called (built at registration; ``None`` for
            consumers that use only spa_dat's argument names, and for producers).
    """

    kind: Literal["consumer", "producer"]
    callback: Callable[..., Awaitable[Any]]
    name: str
    topics: tuple[str, ...]
    socket_provider: SocketProvider | None
    state: Any
    resources: Mapping[str, Resource]
    max_concurrency: int
    ack: AckPolicy
    on_error: ErrorPolicy
    restart: RestartPolicy | RetryPolicy | None
    accepts: frozenset[str] | None
    """The keyword arguments the callback takes (``None``: it takes ``**kwargs``)."""
    payload_type: Any = None
    result_type: Any = None
    publishes: tuple[str, ...] = ()
    middleware: tuple[Middleware, ...] = ()
    binding: ConsumerBinding | None = None


def _accepted_arguments(callback: Callable[..., Any]) -> tuple[frozenset[str] | None, list[str]]:
    """The callback's keyword parameters (None for **kwargs) and its required ones."""
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return None, []
    names: set[str] = set()
    required: list[str] = []
    var_keyword = False
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            var_keyword = True
        elif parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                inspect.Parameter.KEYWORD_ONLY):
            names.add(parameter.name)
            if parameter.default is inspect.Parameter.empty:
                required.append(parameter.name)
        elif (parameter.kind is inspect.Parameter.POSITIONAL_ONLY
              and parameter.default is inspect.Parameter.empty):
            required.append(parameter.name)
    return (None if var_keyword else frozenset(names)), required


def _is_async_callable(callback: object) -> bool:
    if inspect.iscoroutinefunction(callback):
        return True
    call = getattr(callback, "__call__", None)  # noqa: B004 - instances with async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def _is_async_cm(value: object) -> bool:
    return hasattr(value, "__aenter__") and hasattr(value, "__aexit__")


def _is_sync_cm(value: object) -> bool:
    return hasattr(value, "__enter__") and hasattr(value, "__exit__")


def _check_resources(resources: Mapping[str, Resource]) -> dict[str, Resource]:
    checked: dict[str, Resource] = {}
    for name, resource in resources.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigurationError(f"resource name {name!r} must be a Python identifier")
        if name in _RESERVED_ARGUMENTS:
            raise ConfigurationError(
                f"resource name {name!r} clashes with the {name!r} argument of handlers"
            )
        if not (_is_async_cm(resource) or _is_sync_cm(resource) or callable(resource)):
            raise ConfigurationError(
                f"resource {name!r} must be a context manager (sync or async) or a callable "
                f"returning one, not {type(resource).__name__}"
            )
        checked[name] = resource
    return checked


async def _enter_resources(stack: AsyncExitStack, resources: Mapping[str, Resource]
                           ) -> dict[str, Any]:
    entered: dict[str, Any] = {}
    for name, resource in resources.items():
        manager: object = resource
        if not (_is_async_cm(manager) or _is_sync_cm(manager)):
            manager = resource()  # type: ignore[operator]
        if _is_async_cm(manager):
            entered[name] = await stack.enter_async_context(manager)  # type: ignore[arg-type]
        elif _is_sync_cm(manager):
            entered[name] = stack.enter_context(manager)  # type: ignore[arg-type]
        else:
            raise ConfigurationError(
                f"resource {name!r}: the factory returned {type(manager).__name__}, "
                "not a context manager"
            )
    return entered



def _invoker(spec: ApplicationSpec
             ) -> Callable[[BusMessage, dict[str, Any]], Awaitable[Any]] | None:
    """How the runner calls a typed consumer or one with consume middleware (``None``: the
    plain spa_dat call, the fastest)."""
    scopes = consume_scopes(spec.middleware)
    if spec.binding is None and not scopes:
        return None
    callback = spec.callback
    if spec.binding is not None:
        invoke = spec.binding.invoker(callback)
    elif spec.accepts is None or "message" in spec.accepts:
        def invoke(message: BusMessage, kwargs: dict[str, Any]) -> Awaitable[Any]:
            return callback(message=message, **kwargs)
    else:
        def invoke(message: BusMessage, kwargs: dict[str, Any]) -> Awaitable[Any]:
            return callback(**kwargs)
    return wrap_consume(scopes, invoke) if scopes else invoke


def _note(exc: BaseException, text: str) -> None:
    if text not in getattr(exc, "__notes__", ()):
        exc.add_note(text)


class _AppRunner:
    """Runs one application for one :meth:`DistributedApplication.serve` call."""

    def __init__(self, spec: ApplicationSpec, provider: SocketProvider,
                 statistics: AppStatistics, shutdown_timeout: float) -> None:
        self.spec = spec
        self.provider = provider
        self.statistics = statistics
        self.shutdown_timeout = shutdown_timeout
        self.stopping = False
        self.ready = False
        self._task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        self._shield: trio.CancelScope | None = None
        self._loop: ConsumeLoop | None = None
        self._sleep_scope: trio.CancelScope | None = None
        self._producer_scope: trio.CancelScope | None = None
        self._pass_message = spec.accepts is None or "message" in spec.accepts
        self._invoke = _invoker(spec)
        self._socket: BusSocket | None = None
        #: The last failure came from the producer's own code (not from the bus).
        self._callback_failed = False

    # -- shutdown -------------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Stop taking messages; give running handlers ``shutdown_timeout`` seconds."""
        if self.stopping:
            return
        self.stopping = True
        if self._socket is not None:
            self._socket._wake_receiver()
        if self._loop is not None:
            self._loop.wake()
        for scope in (self._sleep_scope, self._producer_scope):
            if scope is not None:
                scope.cancel()
        if self._shield is not None:
            if not self.ready:
                self._shield.cancel()
            else:
                self._shield.deadline = min(
                    self._shield.deadline, trio.current_time() + self.shutdown_timeout
                )

    def _shutting_down(self) -> bool:
        return self.stopping

    def force_shutdown(self) -> None:
        """Cancel running handlers now."""
        self.begin_shutdown()
        if self._shield is not None:
            self._shield.cancel()

    # -- running --------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        self._task_status = task_status
        if self.spec.kind == "producer":
            with trio.CancelScope() as self._producer_scope:
                if self.stopping:
                    self._producer_scope.cancel()
                await self._supervise()
        else:
            await self._run_shielded()
        if not self.ready:  # shut down before it was up: nothing to wait for
            self._mark_ready()

    async def _run_shielded(self) -> None:
        # Consumers run shielded from outside cancellation, so that cancelling the bus still
        # lets running handlers finish (and acknowledge). A watcher task outside the shield
        # notices the cancellation and turns it into a graceful shutdown with a deadline.
        finished = False

        async def watch_for_cancellation() -> None:
            try:
                await trio.sleep_forever()
            finally:
                if not finished:
                    self.begin_shutdown()

        async with trio.open_nursery() as guard:
            guard.start_soon(watch_for_cancellation)
            with trio.CancelScope(shield=True) as self._shield:
                if self.stopping:
                    self._shield.cancel()
                try:
                    await self._supervise()
                finally:
                    finished = True
            guard.cancel_scope.cancel()

    def _mark_ready(self) -> None:
        if not self.ready:
            self.ready = True
            self._task_status.started()

    async def _supervise(self) -> None:
        spec = self.spec
        policy = spec.restart.retry if isinstance(spec.restart, RestartPolicy) else spec.restart
        retries = None if policy is None else policy.start()
        while True:
            if retries is not None:
                retries.began()
            try:
                await self._run_once()
                return
            except Exception as exc:
                _note(exc, f"in bus application {spec.name!r}")
                if retries is None or self.stopping:
                    if self._producer_ends(exc):
                        return
                    raise
                delay = retries.failed()
                breaker = retries.policy.breaker
                if delay is None or (breaker is not None and breaker.state == "open"):
                    logger.error("bus application %r failed %d time(s); giving up%s",
                                 spec.name, retries.attempts + 1,
                                 "" if delay is None else " (its circuit breaker is open)")
                    if self._producer_ends(exc):
                        return
                    raise
                self.statistics.restarts += 1
                logger.warning("bus application %r failed (%s: %s); restart %d in %.2f s",
                               spec.name, type(exc).__name__, exc, retries.attempts, delay)
            with trio.CancelScope() as self._sleep_scope:
                await trio.sleep(delay)
            self._sleep_scope = None
            if self._shutting_down():  # stop() came during the backoff
                return

    def _producer_ends(self, exc: Exception) -> bool:
        """Log a producer's own failure and end it quietly, unless ``on_error="raise"``."""
        if not self._callback_failed or self.spec.on_error.action == "raise":
            return False
        correlation_id = (exc.correlation_id if isinstance(exc, RequestTimeout)
                          else getattr(exc, "correlation_id", None))
        logger.error(
            "bus producer %r failed (correlation id %s): %s: %s; it has ended, the other "
            "applications go on", self.spec.name, correlation_id or "-",
            type(exc).__name__, exc, exc_info=exc,
        )
        return True

    async def _run_once(self) -> None:
        spec = self.spec
        logger.info("starting bus application %r", spec.name)
        self._callback_failed = False
        try:
            async with AsyncExitStack() as stack:
                socket = self.provider.create_socket(spec.topics, name=spec.name)
                install_publish_middleware(socket, spec.middleware)
                await stack.enter_async_context(socket)
                self._socket = socket
                stack.callback(self._forget_socket)
                resources = await _enter_resources(stack, spec.resources)
                kwargs: dict[str, Any] = {"socket": socket, "state": spec.state, **resources}
                if spec.binding is not None:
                    kwargs = spec.binding.run_kwargs(kwargs)
                elif spec.accepts is not None:
                    kwargs = {k: v for k, v in kwargs.items() if k in spec.accepts}
                self._mark_ready()
                if spec.kind == "producer":
                    self._callback_failed = True
                    await spec.callback(**kwargs)
                    self._callback_failed = False
                elif not self.stopping:
                    await self._consume(socket, kwargs)
        finally:
            logger.info("halted bus application %r", spec.name)

    def _forget_socket(self) -> None:
        self._socket = None

    # -- consuming ------------------------------------------------------------------------------

    async def _consume(self, socket: BusSocket, kwargs: dict[str, Any]) -> None:
        # Taking messages, order per key, concurrency and deadlines: trionet.bus._ordering.
        async def process(delivery: Delivery) -> None:
            await self._process(socket, delivery, kwargs)

        self._loop = ConsumeLoop(socket, process, self.spec.max_concurrency, self._shutting_down,
                                 self.statistics, self.spec.name)
        try:
            await self._loop.run()
        finally:
            self._loop = None

    async def _process(self, socket: BusSocket, delivery: Delivery,
                       kwargs: dict[str, Any]) -> None:
        spec = self.spec
        stats = self.statistics
        message = delivery.message
        if spec.ack is AckPolicy.BEFORE:
            await delivery.ack()
        policy = spec.on_error
        attempt = 0
        stats.in_flight += 1
        # measured only while a metrics sink listens (no clock reads otherwise)
        began = trio.current_time() if _metrics.sinks else None
        if began is not None:
            _metrics.message("bus", "in")
        # The handler's logs (and what it publishes) carry the message's correlation id.
        correlation_id = message.headers.get(CORRELATION_HEADER) or message.correlation_id
        span = (_tracing.consumer_span(message, correlation_id, socket)
                if _tracing.enabled() else None)
        if span is not None:  # the handler runs in a CONSUMER span (trionet.tracing)
            correlation_id = span.correlation_id
        token = set_correlation_id(correlation_id)
        try:
            while True:
                try:
                    if self._invoke is not None:
                        result = await self._invoke(message, kwargs)
                    elif self._pass_message:
                        result = await spec.callback(message=message, **kwargs)
                    else:
                        result = await spec.callback(**kwargs)
                    if result is not None:
                        await publish_result(socket, message, result, spec.publishes, None)
                    stats.handled += 1
                    if began is not None:
                        _metrics.request("bus", trio.current_time() - began, True)
                    break
                except Exception as exc:
                    stats.failed += 1
                    if span is not None:
                        span.failed(exc)
                    if began is not None:
                        _metrics.request("bus", trio.current_time() - began, False)
                    invalid = isinstance(exc, InvalidPayload)
                    stats.invalid += invalid
                    # Invalid payloads are not retried: the same bytes would fail again.
                    if attempt < policy.retries and not self.stopping and not invalid:
                        attempt += 1
                        delay = policy.backoff.delay(attempt)
                        logger.warning(
                            "bus application %r: handler failed on message %s (topic %r, "
                            "correlation id %s): %s: %s; retry %d of %d in %.2f s",
                            spec.name, message.message_id or "-", message.topic,
                            correlation_id or "-", type(exc).__name__, exc, attempt,
                            policy.retries, delay,
                        )
                        await trio.sleep(delay)
                        continue
                    if policy.action == "raise":
                        _note(exc, f"while handling message {message.message_id or '-'} "
                                   f"on {message.topic!r} (correlation id "
                                   f"{correlation_id or '-'})")
                        raise
                    if policy.action == "dead_letter":
                        await self._dead_letter(socket, message, exc, correlation_id)
                    else:
                        logger.error(
                            "bus application %r: handler failed on message %s (topic %r, "
                            "correlation id %s): %s: %s; message acknowledged and skipped",
                            spec.name, message.message_id or "-", message.topic,
                            correlation_id or "-", type(exc).__name__, exc, exc_info=exc,
                        )
                    break
        finally:
            stats.in_flight -= 1
            reset_correlation_id(token)
            if span is not None:
                span.end()
        await delivery.ack()

    async def _dead_letter(self, socket: BusSocket, message: BusMessage,
                           exc: Exception, correlation_id: str | None) -> None:
        topic = self.spec.on_error.dead_letter_topic
        assert topic is not None
        headers = dict(message.headers)
        headers["x-error"] = f"{type(exc).__name__}: {exc}"
        headers["x-original-topic"] = message.topic
        headers["x-application"] = self.spec.name
        await socket.publish(message.copy(topic=topic, headers=headers, deadline=None))
        self.statistics.dead_lettered += 1
        logger.warning(
            "bus application %r: handler failed on message %s (topic %r, correlation id %s): "
            "%s: %s; sent to %r", self.spec.name, message.message_id or "-", message.topic,
            correlation_id or "-", type(exc).__name__, exc, topic,
        )


class DistributedApplication:
    """Consumer and producer applications connected to one message bus (spa_dat's class).

    Args:
        default_socket_provider: the broker of applications that name none: a provider, a
            configuration, or a URL (``"memory://"``, ``"mqtt://host:1883"``,
            ``"kafka://host:9092"``). ``None``: ``memory://``, or what ``trionet run
            --broker`` says.
        shutdown_timeout: seconds that running handlers get to finish when the bus shuts down.
        middleware: :class:`Middleware` around every application's handler and publishes
            (outermost first; classes are instantiated once).

    Example::

        app = DistributedApplication("memory://")

        @app.application("greetings/#")
        async def greeter(message, socket):
            await socket.reply(message, b"hello " + message.payload)

        @app.producer()
        async def ask(socket):
            reply = await socket.request(BusMessage(b"trio", "greetings/en"))
            print(reply.payload)
            app.stop()

        app.start()
    """

    def __init__(self, default_socket_provider: ProviderSpec | None = None, *,
                 shutdown_timeout: float = 10.0,
                 middleware: Sequence[Middleware | type[Middleware]] = ()) -> None:
        self.default_socket_provider: SocketProvider | None = (
            None if default_socket_provider is None else from_config(default_socket_provider)
        )
        if not shutdown_timeout >= 0:
            raise ConfigurationError("shutdown_timeout must be >= 0")
        self.shutdown_timeout = shutdown_timeout
        #: The middleware of every application, outermost first.
        self.middleware: tuple[Middleware, ...] = check_middleware(middleware)
        self._publishers: list[tuple[Callable[..., Any], str]] = []
        #: The registered applications, in registration order.
        self.applications: list[ApplicationSpec] = []
        #: Per-application counters, by application name.
        self.statistics: dict[str, AppStatistics] = {}
        self._runners: list[_AppRunner] | None = None
        #: The signal that forced the last :meth:`start_async` to stop at once (a second
        #: SIGINT or SIGTERM), or ``None`` when it stopped gracefully or had no signal.
        self.forced_by_signal: signal.Signals | None = None

    # -- registration ---------------------------------------------------------------------------

    def _unique_name(self, name: str | None, callback: Callable[..., Any]) -> str:
        base = name or getattr(callback, "__name__", None) or "app"
        taken = {spec.name for spec in self.applications}
        if name is not None and name in taken:
            raise ConfigurationError(f"an application named {name!r} is already registered")
        unique, counter = base, 2
        while unique in taken:
            unique, counter = f"{base}-{counter}", counter + 1
        return unique

    def _register(
        self,
        kind: Literal["consumer", "producer"],
        callback: Callable[..., Awaitable[Any]],
        *,
        topics: tuple[str, ...],
        socket_provider: ProviderSpec | None,
        state: Any,
        ressources: Mapping[str, Resource] | None,
        resources: Mapping[str, Resource] | None,
        name: str | None,
        max_concurrency: int = 1,
        ack: AckPolicy | str = AckPolicy.AFTER,
        on_error: ErrorPolicy | str = "log",
        restart: RestartPolicy | RetryPolicy | None = None,
        middleware: Sequence[Middleware | type[Middleware]] = (),
    ) -> ApplicationSpec:
        if not _is_async_callable(callback):
            raise ConfigurationError(
                f"{getattr(callback, '__name__', callback)!r} must be an async function"
            )
        if ressources is not None and resources is not None:
            raise ConfigurationError("give either ressources= or resources=, not both")
        checked = _check_resources(ressources or resources or {})
        accepts, required = _accepted_arguments(callback)
        offered = {"socket", "state", *checked}
        binding = None
        publishes: tuple[str, ...] = ()
        if kind == "consumer":
            binding = bind_consumer(callback, frozenset(offered))
            offered.add("message")
            if binding is not None:
                offered |= binding.provided
            publishes = tuple(t for c, t in self._publishers if c is callback)
            self._publishers = [(c, t) for c, t in self._publishers if c is not callback]
        missing = [p for p in required if p not in offered]
        if missing:
            raise ConfigurationError(
                f"{getattr(callback, '__name__', 'callback')}() requires "
                f"{', '.join(map(repr, missing))}, which the bus does not provide "
                f"(it provides {', '.join(sorted(offered))})"
            )
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) \
                or max_concurrency < 1:
            raise ConfigurationError("max_concurrency must be an integer >= 1")
        try:
            ack_policy = AckPolicy(ack)
        except ValueError:
            raise ConfigurationError(f"unknown ack policy {ack!r}; use 'after' or 'before'"
                                     ) from None
        error_policy = ErrorPolicy.coerce(on_error)  # type: ignore[arg-type]
        if kind == "producer" and (error_policy.action == "dead_letter"
                                   or error_policy.retries):
            raise ConfigurationError(
                "a producer's on_error is 'log' or 'raise' (use restart= to run it again)"
            )
        if restart is not None and not isinstance(restart, (RestartPolicy, RetryPolicy)):
            raise ConfigurationError("restart must be a RestartPolicy, a RetryPolicy or None")
        provider = None if socket_provider is None else from_config(socket_provider)
        spec = ApplicationSpec(
            kind=kind,
            callback=callback,
            name=self._unique_name(name, callback),
            topics=topics,
            socket_provider=provider,
            state=state,
            resources=checked,
            max_concurrency=max_concurrency,
            ack=ack_policy,
            on_error=error_policy,
            restart=restart,
            accepts=accepts,
            payload_type=None if binding is None else binding.payload_type,
            result_type=return_annotation(callback) if publishes else None,
            publishes=publishes,
            middleware=self.middleware + check_middleware(middleware),
            binding=binding,
        )
        self.applications.append(spec)
        self.statistics[spec.name] = AppStatistics()
        return spec

    def application(
        self,
        topics: str | Sequence[str],
        *,
        socket_provider: ProviderSpec | None = None,
        state: Any = None,
        ressources: Mapping[str, Resource] | None = None,
        resources: Mapping[str, Resource] | None = None,
        name: str | None = None,
        max_concurrency: int = 1,
        ack: AckPolicy | Literal["after", "before"] = AckPolicy.AFTER,
        on_error: ErrorPolicy | Literal["raise", "log"] = "log",
        restart: RestartPolicy | RetryPolicy | None = None,
        middleware: Sequence[Middleware | type[Middleware]] = (),
    ) -> Callable[[CallbackT], CallbackT]:
        """Decorator: a consumer called as ``callback(message=, socket=, state=, **ressources)``
        for each message on *topics*.

        The callback may declare only the arguments it uses. Resources are entered once per
        run of the application and passed as the entered objects. A parameter annotated with
        a payload type (a dataclass, a msgspec ``Struct``, a ``TypedDict``, a pydantic model,
        ``bytes``, ``str``, ``dict``, ...) gets the payload decoded into it; markers such as
        :func:`Header` and :data:`CorrelationId` inject other parts of the message (see
        :doc:`/bus`). What the callback returns is the reply to a request, and is published
        to the topics of its :meth:`publisher` decorators.

        Args:
            topics: a topic filter or several (``+`` and ``#`` wildcards allowed).
            socket_provider: this application's broker (default: the application's default).
            state: any object, passed as ``state`` to every call.
            ressources: name → context manager (sync or async) or factory of one (spa_dat's
                spelling; ``resources=`` is accepted too).
            resources: the same, spelled in English.
            name: the application's name (default: the callback's name).
            max_concurrency: how many messages may be handled at once (1: in order).
            ack: :class:`AckPolicy` (``"after"`` the handler, or ``"before"``).
            on_error: :class:`ErrorPolicy`, ``"log"`` (default: log with the message id and
                correlation id, acknowledge, go on) or ``"raise"`` (end the application).
            restart: a :class:`RestartPolicy` (or a shared
                :class:`~trionet.supervision.RetryPolicy`), or ``None`` to let a failure end
                the bus.
            middleware: this application's own :class:`Middleware`, inside the bus's.

        Raises:
            ConfigurationError: for an invalid filter, a callback that is not async or that
                requires arguments the bus does not provide, a payload type msgspec cannot
                decode (or msgspec missing), or an invalid option.
        """
        filters = normalize_topics(topics)
        if not filters:
            raise ConfigurationError("an application needs at least one topic")

        def decorate(callback: CallbackT) -> CallbackT:
            self._register(
                "consumer", callback, topics=filters, socket_provider=socket_provider,
                state=state, ressources=ressources, resources=resources, name=name,
                max_concurrency=max_concurrency, ack=ack, on_error=on_error, restart=restart,
                middleware=middleware,
            )
            return callback

        return decorate

    def publisher(self, topic: str) -> Callable[[CallbackT], CallbackT]:
        """Decorator: publish what a consumer returns to *topic* (stack several for several
        topics; above or below :meth:`application`, in either order).

        The return value is encoded as :meth:`BusSocket.publish` encodes objects (typed
        objects as JSON, ``bytes`` as they are); ``None`` publishes nothing. A message that
        is a request gets the return value as its reply as well.

        Raises:
            ConfigurationError: for a topic with wildcards, or on a producer.
        """
        check_topic(topic)

        def decorate(callback: CallbackT) -> CallbackT:
            found = False
            for index, spec in enumerate(self.applications):
                if spec.callback is callback:
                    if spec.kind != "consumer":
                        raise ConfigurationError("a publisher goes on a consumer, not a producer")
                    self.applications[index] = dataclasses.replace(
                        spec, publishes=(*spec.publishes, topic),
                        result_type=return_annotation(callback),
                    )
                    found = True
            if not found:
                self._publishers.append((callback, topic))
            return callback

        return decorate

    async def publish(
        self,
        message: BusMessage | Any,
        topic: str | None = None,
        *,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """Publish a message or any object on the default broker, from anywhere while the bus
        runs (see :meth:`BusSocket.publish` for how objects are encoded).

        It goes through the socket of a running application on the default broker (and its
        middleware).

        Raises:
            BusClosed: if no application on the default broker is running.
        """
        for runner in self._runners or ():
            socket = runner._socket
            if runner.spec.socket_provider is None and socket is not None and not socket.closed:
                await socket.publish(message, topic, content_type=content_type,
                                     headers=headers, correlation_id=correlation_id)
                return
        raise BusClosed("publish() needs a running application on the default broker")

    def producer(
        self,
        *,
        socket_provider: ProviderSpec | None = None,
        state: Any = None,
        ressources: Mapping[str, Resource] | None = None,
        resources: Mapping[str, Resource] | None = None,
        name: str | None = None,
        restart: RestartPolicy | RetryPolicy | None = None,
        on_error: ErrorPolicy | Literal["raise", "log"] = "log",
    ) -> Callable[[CallbackT], CallbackT]:
        """Decorator: a producer, called once as ``callback(socket=, state=, **ressources)``.

        Producers start once every consumer is connected and subscribed, so their first
        messages are not lost. A producer that returns is done; the others go on.

        Args:
            socket_provider: this application's broker (default: the application's default).
            state: any object, passed as ``state``.
            ressources: name → context manager or factory (``resources=`` works too).
            resources: the same, spelled in English.
            name: the application's name (default: the callback's name).
            restart: a :class:`RestartPolicy` for a producer that raises.
            on_error: ``"log"`` (default): a producer that raises (a :class:`RequestTimeout`,
                say) is logged, with the correlation id, and ends; the other applications go
                on. ``"raise"``: its exception ends the whole bus. With *restart*, the
                producer is restarted first, and *on_error* applies once the policy gives up.
        """

        def decorate(callback: CallbackT) -> CallbackT:
            self._register(
                "producer", callback, topics=(), socket_provider=socket_provider, state=state,
                ressources=ressources, resources=resources, name=name, restart=restart,
                on_error=on_error,
            )
            return callback

        return decorate

    def add_application(
        self,
        async_consumer_callback: ConsumerCallback,
        socket_provider: ProviderSpec | None = None,
        state: Any = None,
        ressources: Mapping[str, Resource] | None = None,
        *,
        topics: str | Sequence[str] | None = None,
        **options: Any,
    ) -> ApplicationSpec:
        """Register a consumer without the decorator (spa_dat's method).

        *topics* defaults to the provider's ``default_subscription_topics``; *options* are
        the other keyword arguments of :meth:`application`.
        """
        if topics is None:
            provider = (from_config(socket_provider) if socket_provider is not None
                        else self.default_socket_provider)
            topics = provider.config.topics if provider is not None else ()
        filters = normalize_topics(topics)
        if not filters:
            raise ConfigurationError("an application needs at least one topic")
        return self._register("consumer", async_consumer_callback, topics=filters,
                              socket_provider=socket_provider, state=state,
                              ressources=ressources, resources=options.pop("resources", None),
                              name=options.pop("name", None), **options)

    def add_producer_application(
        self,
        async_producer_callback: ProducerCallback,
        socket_provider: ProviderSpec | None = None,
        state: Any = None,
        ressources: Mapping[str, Resource] | None = None,
        **options: Any,
    ) -> ApplicationSpec:
        """Register a producer without the decorator (spa_dat's method)."""
        return self._register("producer", async_producer_callback, topics=(),
                              socket_provider=socket_provider, state=state,
                              ressources=ressources, resources=options.pop("resources", None),
                              name=options.pop("name", None), **options)

    def asyncapi(self, *, title: str | None = None, version: str = "0.1.0",
                 description: str | None = None) -> dict[str, Any]:
        """The application's AsyncAPI 3.0 document, as JSON-compatible data: its servers (no
        credentials), channels, operations and message schemas (see :doc:`/asyncapi`).

        Args:
            title: ``info.title`` (default: ``"trionet bus application"``).
            version: ``info.version``, the version of the application's API.
            description: ``info.description`` (CommonMark).
        """
        from ._asyncapi import asyncapi_document

        return asyncapi_document(self, title=title, version=version, description=description)

    # -- running --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether :meth:`serve` is running."""
        return self._runners is not None

    @property
    def ready(self) -> bool:
        """Whether the bus is serving: :meth:`serve` runs, every application has its socket
        open (consumers subscribed) and no shutdown has begun. For readiness probes (see
        :class:`trionet.asgi.Health`)."""
        runners = self._runners
        return runners is not None and all(r.ready and not r.stopping for r in runners)

    def stop(self) -> None:
        """Shut down gracefully: producers are cancelled, consumers stop taking messages and
        finish the ones they are handling (within ``shutdown_timeout``), then :meth:`serve`
        returns. Does nothing when the application is not running."""
        for runner in self._runners or ():
            runner.begin_shutdown()

    def _force_stop(self) -> None:
        for runner in self._runners or ():
            runner.force_shutdown()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Run every application until they are all done or the bus is shut down.

        Use ``await nursery.start(app.serve)``: it returns once every consumer is connected
        and subscribed (producers start then). Cancelling the nursery shuts down gracefully
        (running handlers get ``shutdown_timeout`` seconds).

        Raises:
            BusError: if the application is already running.
            Exception: the exception of an application that failed (with a note naming it);
                an :class:`ExceptionGroup` if several failed at once.
        """
        if self._runners is not None:
            raise BusError("this DistributedApplication is already running")
        default = self.default_socket_provider or from_config("memory://")
        runners = [
            _AppRunner(spec, spec.socket_provider or default, self.statistics[spec.name],
                       self.shutdown_timeout)
            for spec in self.applications
        ]
        self._runners = runners
        try:
            async with trio.open_nursery() as nursery:
                consumers = [r for r in runners if r.spec.kind == "consumer"]
                if consumers:
                    async with trio.open_nursery() as starting:
                        for runner in consumers:
                            starting.start_soon(nursery.start, runner.run)
                task_status.started()
                for runner in runners:
                    if runner.spec.kind == "producer":
                        nursery.start_soon(runner.run)
        except BaseExceptionGroup as group:
            reraise_single(group)
        finally:
            self._runners = None

    async def start_async(self, *, handle_signals: bool = True) -> None:
        """Run the applications until they are done or stopped (spa_dat's method).

        Args:
            handle_signals: when run in the main thread, SIGINT and SIGTERM shut down
                gracefully (a second signal cancels running handlers at once and is
                recorded in :attr:`forced_by_signal`).
        """
        self.forced_by_signal = None
        try:
            async with trio.open_nursery() as nursery:
                if handle_signals and in_main_thread():
                    await nursery.start(self._watch_signals)
                await self.serve()
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            reraise_single(group)

    async def _watch_signals(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                             ) -> None:
        # Every signal is read until serve() returns and cancels this task: one left unread in
        # the receiver would be re-delivered when it closes and kill the process after a stop.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            count = 0
            async for signum in signals:
                count += 1
                name = signal.Signals(signum).name
                if count == 1:
                    logger.warning("received %s: shutting down (again to force)", name)
                    self.stop()
                elif count == 2:
                    logger.warning("received %s again: cancelling running handlers", name)
                    self.forced_by_signal = signal.Signals(signum)
                    self._force_stop()

    def start(self) -> None:
        """Run the applications in a new trio event loop until they are done or stopped."""
        trio.run(self.start_async)

