"""The engine's side of MQTT 5 enhanced authentication (a base of
:class:`~trionet.mqtt._paho.PahoEngine`).

paho-mqtt 2.x has no AUTH support: it treats an AUTH packet as a protocol error. With an
authenticator, the engine's paho client is an ``_AuthClient`` whose packet dispatch hands AUTH
packets to :meth:`EngineAuth._on_auth_packet` and stops a connection whose CONNACK
:meth:`EngineAuth._auth_connack` refuses. The exchange itself is driven here:

* connecting: :meth:`_auth_begin` puts the method and the authenticator's first data into the
  CONNECT properties (on every attempt, so that reconnects run the exchange again); each AUTH
  0x18 from the broker is answered with the authenticator's next data; the CONNACK's data
  goes to ``finish()`` before the connection counts as up.
* re-authenticating: :meth:`reauthenticate` sends AUTH 0x19 and the exchange ends with the
  broker's AUTH 0x00 (success) or its DISCONNECT (refusal).

Bounds on what the broker sends: :data:`~trionet.mqtt._auth.MAX_AUTH_DATA` bytes of data per
packet and :data:`~trionet.mqtt._auth.MAX_AUTH_ROUNDS` AUTH packets per exchange; the client's
``connect_timeout`` bounds the time. A broken bound, malformed data, a failing authenticator
or an AUTH packet nobody asked for closes the connection without sending anything more.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

from paho.mqtt.enums import MQTTErrorCode

from ..errors import MQTTNotConnected
from ._auth import (
    AUTH,
    AUTH_FAILURES,
    CONTINUE_AUTHENTICATION,
    MAX_AUTH_ROUNDS,
    REAUTHENTICATE,
    SUCCESS,
    Authenticator,
    decode_auth,
    encode_auth,
)
from ._errors import MQTTAuthError
from ._events import AuthDone, ConnectFailed, Event, Waiter

if TYPE_CHECKING:
    from ._options import EngineSettings
    from ._paho import _BufferedClient

__all__ = ["EngineAuth"]

_log = logging.getLogger("trionet.mqtt")

_OK: MQTTErrorCode = MQTTErrorCode.MQTT_ERR_SUCCESS
_CLOSE: MQTTErrorCode = MQTTErrorCode.MQTT_ERR_PROTOCOL


class EngineAuth:
    """AUTH exchanges of one engine (state of the current exchange, at most one at a time)."""

    _s: EngineSettings
    _client: _BufferedClient
    _events: list[Event]
    _connecting: int | None
    _connected: bool
    _refused: bool

    def _init_auth(self) -> None:
        self._auth_phase: Literal["connect", "reauth"] | None = None
        self._auth_rounds = 0
        self._auth_waiter: Waiter | None = None

    @property
    def _authenticator(self) -> Authenticator:
        authenticator = self._s.authenticator
        assert authenticator is not None
        return authenticator

    def _auth_begin(self, props: Any) -> Any:
        """Add the method and the first data to CONNECT properties (a new exchange)."""
        if self._s.authenticator is None:
            return props
        self._auth_lost(None)
        authenticator = self._authenticator
        try:
            data = authenticator.start()
        except Exception as exc:  # (connect() reports it as the attempt's failure)
            raise MQTTAuthError(f"the authenticator failed: {exc}",
                                method=authenticator.method) from exc
        props.AuthenticationMethod = authenticator.method
        if data is not None:
            props.AuthenticationData = bytes(data)
        self._auth_phase = "connect"
        self._auth_rounds = 0
        return props

    def _auth_reconnect(self, client: Any, props: Any) -> None:
        """Before paho reconnects: a new exchange for every attempt (new CONNECT properties)."""
        if self._s.authenticator is not None:
            client._connect_properties = self._auth_begin(props)

    def _auth_hook(self, client: Any) -> None:
        """Route the AUTH packets of a new paho client (an ``_AuthClient``) here."""
        if self._s.authenticator is not None:
            client.auth_packet = self._on_auth_packet
            client.auth_connack = self._on_connack_packet

    def _on_connack_packet(self, body: bytearray) -> None:
        # mosquitto 2.0 answers a refused re-authentication with a CONNACK (MQTT 5 §4.12.1
        # says DISCONNECT): its reason code is the answer to the re-authentication
        if self._auth_phase == "reauth" and len(body) >= 2:
            self._auth_lost(body[1])

    def _auth_fail(self, why: str, cause: BaseException | None = None) -> MQTTErrorCode:
        """End the exchange in progress: report *why*; the connection is to be closed."""
        phase = self._auth_phase
        self._auth_phase = None
        error = MQTTAuthError(why, method=self._authenticator.method)
        error.__cause__ = cause
        if phase == "connect" and self._connecting is not None:
            self._refused = True  # (the closing connection reports nothing more)
            self._events.append(ConnectFailed(self._connecting, error, why))
        elif phase == "reauth" and self._auth_waiter is not None:
            self._events.append(AuthDone(self._auth_waiter, error))
            self._auth_waiter = None
        _log.warning("MQTT enhanced authentication (%s) failed: %s",
                     self._authenticator.method, why)
        abort: Any = self._client
        abort.auth_abort = True  # (an _AuthClient: drops what is queued, closes)
        return _CLOSE

    def _on_auth_packet(self, body: bytearray) -> MQTTErrorCode:
        """An AUTH packet arrived (paho's dispatch, on the engine's owner)."""
        if self._auth_phase is None:
            _log.warning("the MQTT broker sent an AUTH packet outside an authentication "
                         "exchange; closing the connection")
            return _CLOSE
        try:
            packet = decode_auth(body)
        except ValueError as exc:
            return self._auth_fail(f"the broker sent a malformed AUTH packet: {exc}")
        method = self._authenticator.method
        if packet.method != method:
            return self._auth_fail(f"the broker's AUTH packet names the method "
                                   f"{packet.method!r}, not {method!r}")
        self._auth_rounds += 1
        if self._auth_rounds > MAX_AUTH_ROUNDS:
            return self._auth_fail(f"the broker did not finish the exchange within "
                                   f"{MAX_AUTH_ROUNDS} rounds")
        if packet.reason_code == SUCCESS and self._auth_phase == "reauth":
            try:
                self._authenticator.finish(packet.data)
            except Exception as exc:
                return self._auth_fail(f"the broker's final data was refused: {exc}", exc)
            waiter = self._auth_waiter
            self._auth_phase = None
            self._auth_waiter = None
            if waiter is not None:
                self._events.append(AuthDone(waiter, None))
            return _OK
        if packet.reason_code != CONTINUE_AUTHENTICATION:
            return self._auth_fail(f"the broker sent an AUTH packet with reason code "
                                   f"0x{packet.reason_code:02x} during the exchange")
        try:
            answer = self._authenticator.step(packet.data)
        except Exception as exc:
            return self._auth_fail(f"the broker's data was refused: {exc}", exc)
        return self._send_auth(CONTINUE_AUTHENTICATION, answer)

    def _send_auth(self, reason_code: int, data: bytes | None) -> MQTTErrorCode:
        packet = encode_auth(reason_code, self._authenticator.method,
                             None if data is None else bytes(data))
        return self._client._packet_queue(AUTH, packet, 0, 0)

    def _auth_connack(self, properties: Any) -> bool:
        """A successful CONNACK arrived: whether the exchange's end checks out (if not, the
        failure is reported and the connection is to be closed)."""
        if self._auth_phase != "connect":
            return True
        self._auth_phase = None
        data = getattr(properties, "AuthenticationData", None)
        try:
            self._authenticator.finish(None if data is None else bytes(data))
        except Exception as exc:
            self._auth_phase = "connect"
            self._auth_fail(f"the broker's final data was refused: {exc}", exc)
            return False
        return True

    def _auth_lost(self, reason_code: int | None) -> None:
        """The connection ended (or the client stops): a re-authentication cannot finish."""
        waiter = self._auth_waiter
        self._auth_phase = None
        self._auth_waiter = None
        if waiter is None:
            return
        error: BaseException
        if reason_code in AUTH_FAILURES:
            error = MQTTAuthError(
                f"the broker refused the re-authentication (reason code 0x{reason_code:02x})",
                method=self._authenticator.method, reason_code=reason_code)
        else:
            error = MQTTNotConnected("the connection ended during the re-authentication")
        self._events.append(AuthDone(waiter, error))

    def reauthenticate(self, waiter: Waiter) -> None:
        """Start an MQTT 5 re-authentication (AUTH 0x19); the outcome comes as AuthDone."""
        if not self._connected or self._s.authenticator is None:
            self._events.append(AuthDone(waiter, MQTTNotConnected()))
            return
        if self._auth_waiter is not None:
            self._auth_lost(None)
        try:
            data = self._authenticator.start()
        except Exception as exc:
            self._events.append(AuthDone(waiter, MQTTAuthError(
                f"the authenticator failed: {exc}", method=self._authenticator.method)))
            return
        self._auth_phase = "reauth"
        self._auth_rounds = 0
        self._auth_waiter = waiter
        self._send_auth(REAUTHENTICATE, data)

    def forget_reauthentication(self, waiter: Waiter) -> None:
        """trio stopped waiting for this re-authentication (a later AUTH packet for it closes
        the connection)."""
        if self._auth_waiter is waiter:
            self._auth_waiter = None
            self._auth_phase = None
