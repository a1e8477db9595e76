"""Connecting: the connection state, ``connect()``, ``disconnect()`` and the waits on them."""

from __future__ import annotations

import dataclasses
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from ..errors import ConfigurationError, MQTTConnectError, MQTTError, MQTTNotConnected, MQTTTimeout
from ._auth import AUTH_FAILURES
from ._base import ClientBase
from ._errors import SESSION_TAKEN_OVER, MQTTAuthError, MQTTSessionTakenOver
from ._events import Connack, ConnectFailed
from ._message import ConnectionState
from ._subscription import ConnectionEvents, _Box

_log = logging.getLogger("trionet.mqtt")


class Connecting(ClientBase):
    """Connecting and the connection state (see :mod:`._base`)."""

    @asynccontextmanager
    async def connection_events(
        self, max_buffer_size: int = 16
    ) -> AsyncIterator[ConnectionEvents]:
        """Watch connection-state changes: ``async with client.connection_events() as events``.

        Yields a :class:`~trionet.mqtt.ConnectionEvents` receive channel of
        :class:`~trionet.mqtt.ConnectionEvent`; it keeps the newest *max_buffer_size* events.
        """
        if max_buffer_size < 1:
            raise ConfigurationError("max_buffer_size must be at least 1")
        stream = ConnectionEvents(max_buffer_size)
        if self._state is ConnectionState.CLOSED:
            stream._end()
        self._event_streams.append(stream)
        try:
            yield stream
        finally:
            self._event_streams.remove(stream)
            stream._end()

    async def wait_connected(self) -> None:
        """Wait until the client is connected (returns at once if it is).

        Raises:
            MQTTNotConnected: the client closed.
        """
        while self._state is not ConnectionState.CONNECTED:
            if self._state is ConnectionState.CLOSED:
                raise MQTTNotConnected("the MQTT client is closed")
            await self._state_changed.wait()
        await trio.lowlevel.checkpoint()

    async def connect(
        self,
        host: str = "localhost",
        port: int | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        ssl: ssl.SSLContext | bool | None = None,
    ) -> None:
        """Connect to the broker and wait for its CONNACK.

        Args:
            host: the broker's host name or address.
            port: its port (default 1883, 8883 with TLS, 80/443 for WebSockets).
            username: overrides the constructor's user name (mtaio's signature).
            password: overrides the constructor's password.
            ssl: overrides the constructor's ``tls`` (only before the first connection).

        Raises:
            MQTTConnectError: the broker refused (``reason_code`` says why) or is unreachable.
            MQTTTimeout: no CONNACK within ``connect_timeout`` seconds.
            MQTTError: the client is already connected or connecting.
            MQTTNotConnected: used outside ``async with client:``.
        """
        # A cancellation that came while the client was starting has already told its driver
        # to stop: it must come out as itself, not as "the MQTT client is closed".
        await trio.lowlevel.checkpoint_if_cancelled()
        self._engine_or_fail()
        if self._state is not ConnectionState.DISCONNECTED:
            raise MQTTError(f"the client is already {self._state.value}", fault="local")
        if username is not None or password is not None or ssl is not None:
            self._reconfigure(username, password, ssl)
        settings = self._settings
        if port is None:
            tls = settings.tls is not None
            if settings.transport == "websockets":
                port = 443 if tls else 80
            else:
                port = 8883 if tls else 1883
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigurationError(f"invalid port {port!r}")
        if settings.password is not None and settings.tls is None and (
            not self._options.allow_insecure_auth
        ):
            raise ConfigurationError(
                f"refusing to send the MQTT password to {host}:{port} over a connection "
                "without TLS: anyone on the path could read it. Connect with TLS (tls=True "
                "or an SSLContext; mqtts:// or wss:// in a URL), or pass "
                "allow_insecure_auth=True (?allow_insecure_auth=true) for a trusted network"
            )
        if settings.authenticator is not None and settings.tls is None and (
            not self._options.allow_insecure_auth
        ):
            raise ConfigurationError(
                f"refusing to run the MQTT enhanced authentication "
                f"({settings.authenticator.method}) with {host}:{port} over a connection "
                "without TLS: an eavesdropper could record it and try passwords against it "
                "offline. Connect with TLS (tls=True or an SSLContext), or pass "
                "allow_insecure_auth=True for a trusted network"
            )
        self._host, self._port = host, port
        self._backoff = 0
        self._set_state(ConnectionState.CONNECTING)
        try:
            session_present = await self._connect_once(first=True)
        except BaseException as exc:
            self._set_state(ConnectionState.DISCONNECTED, reason=str(exc),
                            reason_code=getattr(exc, "reason_code", None))
            raise
        self._set_state(ConnectionState.CONNECTED, session_present=session_present,
                        reason="connected")

    def _reconfigure(
        self, username: str | None, password: str | None, tls: ssl.SSLContext | bool | None
    ) -> None:
        settings = self._settings
        changes: dict[str, Any] = {}
        if username is not None:
            changes["username"] = username
            changes["password"] = password
        if tls is not None and tls is not False:
            context = ssl.create_default_context() if tls is True else tls
            if not isinstance(context, ssl.SSLContext):
                raise ConfigurationError("ssl must be an ssl.SSLContext or a bool")
            changes["tls"] = context
        if not changes:
            return
        new = dataclasses.replace(settings, **changes)
        if new == settings:
            return
        if self._host:
            raise ConfigurationError(
                "credentials and TLS can only be given to connect() before the first connection; "
                "pass them to MQTTClient() instead"
            )
        self._settings = new
        # rebuilt on the network thread, before the connect call that follows
        self._submit(self._engine_or_fail().reconfigure, new)

    async def _connect_once(self, *, first: bool) -> bool:
        self._attempt += 1
        attempt = self._attempt
        self._lost_while_connecting = False
        self._lost_code = None
        box: _Box[Connack | ConnectFailed] = _Box()
        self._connect_boxes[attempt] = box
        engine = self._engine_or_fail()
        driver = self._driver
        assert driver is not None
        answered = False
        event: Connack | ConnectFailed | None = None
        try:
            with trio.move_on_after(self._options.connect_timeout):
                try:
                    await driver.connect(attempt, self._host, self._port, first)
                except trio.ClosedResourceError:
                    # stopped by a cancellation of the client's block: that, not this
                    await trio.lowlevel.checkpoint_if_cancelled()
                    raise MQTTNotConnected("the MQTT client is closed") from None
                event = await box.wait()
                answered = True
        finally:
            self._connect_boxes.pop(attempt, None)
            if not answered:
                driver.interrupt_connect()  # a handshake still blocking ends now
                self._submit_quiet(engine.abort_connect, attempt)
        where = f"{self._host}:{self._port}"
        if event is None:
            raise MQTTTimeout(f"no CONNACK from {where} within {self._options.connect_timeout:g} s")
        authenticator = self._settings.authenticator
        if isinstance(event, ConnectFailed):
            if isinstance(event.error, MQTTAuthError):
                raise MQTTAuthError(f"enhanced authentication with {where} failed: "
                                    f"{event.reason}", method=event.error.method
                                    ) from event.error.__cause__
            error = MQTTConnectError(f"cannot connect to {where}: {event.reason}")
            if event.error is not None:
                raise error from event.error
            raise error
        if not event.ok:
            if authenticator is not None and event.reason_code in AUTH_FAILURES:
                raise MQTTAuthError(
                    f"{where} refused the connection: {event.reason} (enhanced authentication, "
                    f"method {authenticator.method!r})",
                    method=authenticator.method, reason_code=event.reason_code)
            raise MQTTConnectError(f"{where} refused the connection: {event.reason}",
                                   reason_code=event.reason_code)
        if self._lost_while_connecting:
            if self._fatal_takeover(self._lost_code_seen()):
                raise MQTTSessionTakenOver(self._client_id)
            raise MQTTConnectError(f"{where} closed the connection right after accepting it")
        return event.session_present

    def _lost_code_seen(self) -> int | None:
        # (a method, so that type checkers do not narrow self._lost_code across awaits)
        return self._lost_code

    async def disconnect(self) -> None:
        """Send DISCONNECT and close the connection (no automatic reconnect afterwards).

        QoS 1/2 publishes still waiting for their handshake fail with
        :exc:`~trionet.errors.MQTTNotConnected`. ``connect()`` may be called again later.
        """
        if self._state in (ConnectionState.DISCONNECTED, ConnectionState.CLOSED):
            await trio.lowlevel.checkpoint()
            return
        engine = self._engine_or_fail()
        self._set_state(ConnectionState.DISCONNECTED, reason="disconnect() was called")
        box: _Box[Any] = _Box()
        self._submit(engine.disconnect, box, "disconnect() was called")
        with trio.move_on_after(self._options.close_timeout):
            await box.wait()

    async def reauthenticate(self) -> None:
        """Run the ``authenticator``'s exchange again on the open connection (MQTT 5
        re-authentication, AUTH reason code 0x19), for example after the credentials changed
        or before a token expires. One at a time; the connection carries on meanwhile.

        Raises:
            MQTTAuthError: the broker refused (it then closes the connection, and the client
                reconnects, running the full exchange again) or failed to prove itself (the
                client closes the connection).
            MQTTTimeout: the broker did not finish within ``connect_timeout`` seconds.
            MQTTNotConnected: not connected (or the connection ended meanwhile).
            ConfigurationError: the client has no ``authenticator``.
        """
        if self._settings.authenticator is None:
            raise ConfigurationError("reauthenticate() needs MQTTClient(authenticator=...)")
        engine = self._engine_or_fail()
        if self._state is not ConnectionState.CONNECTED:
            raise MQTTNotConnected()
        async with self._reauth_lock:
            box: _Box[None] = _Box()
            self._submit(engine.reauthenticate, box)
            try:
                with trio.fail_after(self._options.connect_timeout):
                    await box.wait()
            except trio.TooSlowError:
                raise MQTTTimeout(f"the broker did not finish the re-authentication within "
                                  f"{self._options.connect_timeout:g} s") from None
            finally:
                if not box.done:
                    self._submit_quiet(engine.forget_reauthentication, box)

    def _fatal_takeover(self, code: int | None) -> bool:
        """Whether a loss with this reason code is a takeover that ends the client."""
        return code == SESSION_TAKEN_OVER and self._v5 and not (
            self._options.policy is not None and self._options.policy.retry_takeover
        )
