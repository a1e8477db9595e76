"""Reconnecting: what a lost connection means, and the reconnect loop with backoff.

The supervisor task waits for a loss; unless the loss is final (``reconnect=False``, a session
taken over), it reconnects with the :class:`~trionet.mqtt.ReconnectPolicy`'s backoff, which
restarts only after a connection that stayed up ``stable_after`` seconds; a shared circuit
breaker, when the policy has one, counts the attempts and holds them back while it is open.
"""

from __future__ import annotations

import logging

import trio

from .. import metrics as _metrics
from ..errors import CircuitOpenError, MQTTConnectError, MQTTNotConnected, MQTTTimeout
from ..supervision import CircuitBreaker
from ._connection import Connecting
from ._errors import SESSION_TAKEN_OVER, MQTTSessionTakenOver
from ._message import ConnectionState

_log = logging.getLogger("trionet.mqtt")


class Reconnecting(Connecting):
    """Loss handling and the reconnect loop (see :mod:`._base`)."""

    async def _supervise(self) -> None:
        while True:
            await self._lost.wait()
            self._lost = trio.Event()
            if self._fatal is not None:
                raise self._fatal
            if self._closing or self._state is not ConnectionState.RECONNECTING:
                continue
            await self._reconnect_loop()

    async def _reconnect_loop(self) -> None:
        policy = self._options.policy
        assert policy is not None
        attempt = 0
        last: BaseException | None = None
        while policy.max_attempts is None or attempt < policy.max_attempts:
            attempt += 1
            # (the backoff goes on from where the last outage left it, unless the connection
            # in between lasted policy.stable_after seconds: see _on_control_event)
            await trio.sleep(policy.delay(self._backoff))
            self._backoff += 1
            if policy.breaker is not None:
                await _breaker_lets_us_try(policy.breaker)
            if self._closing or self._state is not ConnectionState.RECONNECTING:
                return
            try:
                session_present = await self._connect_once(first=False)
            except MQTTSessionTakenOver as exc:
                self._set_state(ConnectionState.DISCONNECTED, reason=str(exc),
                                reason_code=exc.reason_code)
                self._fatal = exc
                if self._engine is not None:
                    self._submit_quiet(self._engine.abandon, str(exc))
                raise
            except (MQTTConnectError, MQTTTimeout) as exc:
                last = exc
                if policy.breaker is not None:
                    policy.breaker.record_failure()
                _log.info("MQTT reconnect attempt %d to %s:%s failed: %s", attempt, self._host,
                          self._port, exc)
                self._set_state(ConnectionState.RECONNECTING, reason=str(exc), attempt=attempt,
                                reason_code=getattr(exc, "reason_code", None))
                continue
            if self._current_state() is not ConnectionState.RECONNECTING:  # disconnect()
                return
            if policy.breaker is not None:
                policy.breaker.record_success()
            self._reconnects += 1
            _metrics.reconnect("mqtt")
            _log.info("MQTT client %s reconnected to %s:%s (session present: %s)",
                      self._client_id, self._host, self._port, session_present)
            self._set_state(ConnectionState.CONNECTED, session_present=session_present,
                            reason="reconnected")
            return
        self._set_state(ConnectionState.DISCONNECTED, reason="gave up reconnecting")
        error = MQTTConnectError(
            f"gave up reconnecting to {self._host}:{self._port} after {attempt} attempts: {last}",
            reason_code=getattr(last, "reason_code", None),
        )
        error.__cause__ = last
        self._fatal = error
        if self._engine is not None:
            self._submit_quiet(self._engine.abandon, "gave up reconnecting")
        raise error

    def _on_lost(self, code: int, reason: str, intentional: bool) -> None:
        if intentional:
            return
        if self._state in (ConnectionState.CONNECTING, ConnectionState.RECONNECTING):
            # the connection being set up died right after its CONNACK
            self._lost_while_connecting = True
            self._lost_code = code
            return
        if self._state is not ConnectionState.CONNECTED:
            return
        text = f"connection lost: {reason}"
        policy = self._options.policy
        if code == SESSION_TAKEN_OVER and self._v5:
            text = (f"connection lost: another client connected with client id "
                    f"{self._client_id!r} (session taken over)")
        _log.info("MQTT client %s: %s", self._client_id, text)
        if self._fatal_takeover(code) and not self._closing:
            self._set_state(ConnectionState.DISCONNECTED, reason_code=code, reason=text)
            if self._engine is not None:
                self._submit_quiet(self._engine.abandon, text)
            self._fatal = MQTTSessionTakenOver(self._client_id)
        elif policy is not None and not self._closing:
            uptime = trio.current_time() - self._connected_at
            if uptime >= policy.stable_after:
                self._backoff = 0
            else:
                _log.info("MQTT client %s: the connection lasted %.3g s only; the reconnect "
                          "backoff goes on (wait number %d)", self._client_id, uptime,
                          self._backoff + 1)
            self._set_state(ConnectionState.RECONNECTING, reason_code=code, reason=text,
                            attempt=1)
        else:
            self._set_state(ConnectionState.DISCONNECTED, reason_code=code, reason=text)
            if not self._closing and self._engine is not None:
                self._submit_quiet(self._engine.abandon, text)
                self._fatal = MQTTNotConnected(f"{text} (reconnect is disabled)")
        self._lost.set()


async def _breaker_lets_us_try(breaker: CircuitBreaker) -> None:
    """Wait while the shared breaker is open (a reconnect loop waits rather than fail)."""
    while True:
        try:
            breaker.check()
        except CircuitOpenError as exc:
            _log.info("MQTT reconnect waits %.2f s for the circuit breaker", exc.retry_after)
            await trio.sleep(max(exc.retry_after, 0.01))
        else:
            return
