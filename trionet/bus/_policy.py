"""Per-application policies: acknowledgement, handler errors, restarts, and their backoff."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, TypeAlias

from ..errors import ConfigurationError
from ..supervision import Backoff, RetryPolicy

__all__ = ["AckPolicy", "Backoff", "ErrorPolicy", "RestartPolicy"]


class AckPolicy(enum.Enum):
    """When a consumer acknowledges a message to the broker.

    ``AFTER`` (the default, at-least-once): once the handler has finished with it (returned, or
    failed and the error policy dealt with it). A message whose handler was interrupted is
    delivered again by brokers that keep unacknowledged messages (Kafka, MQTT persistent
    sessions). ``BEFORE`` (at-most-once): as soon as the message is taken for handling.

    ``memory://`` keeps no unacknowledged messages, so the policy changes nothing there.
    """

    AFTER = "after"
    BEFORE = "before"


ErrorAction: TypeAlias = Literal["raise", "log", "dead_letter"]


@dataclass(frozen=True)
class ErrorPolicy:
    """What a consumer does when its handler raises.

    The handler is first retried *retries* times (waiting *backoff* between attempts); if it
    still fails:

    * ``"log"`` (the default): the exception is logged with the message's id, topic and
      correlation id, the message acknowledged, and the app goes on with the next message.
    * ``"dead_letter"``: the message is published to *dead_letter_topic* with the headers
      ``x-error`` (the exception) and ``x-original-topic``, acknowledged, and the app goes on.
    * ``"raise"`` (opt-in, spa_dat's behaviour): the exception ends the application, and with
      it the whole :class:`~trionet.bus.DistributedApplication` unless the app has a restart
      policy. The message is not acknowledged (under :attr:`AckPolicy.AFTER`), so Kafka and
      persistent MQTT sessions deliver it again.

    For a producer, only ``"log"`` (the default: a producer that raises is logged and ends,
    the other applications go on) and ``"raise"`` apply.

    ``on_error="log"`` or ``"raise"`` in the decorators is short for ``ErrorPolicy(action)``.
    """

    action: ErrorAction = "log"
    retries: int = 0
    backoff: Backoff = Backoff()
    dead_letter_topic: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ("raise", "log", "dead_letter"):
            raise ConfigurationError(
                f"unknown error action {self.action!r}; use 'raise', 'log' or 'dead_letter'"
            )
        if self.retries < 0:
            raise ConfigurationError("ErrorPolicy.retries must be >= 0")
        if (self.action == "dead_letter") != (self.dead_letter_topic is not None):
            raise ConfigurationError(
                "ErrorPolicy: give dead_letter_topic exactly when action is 'dead_letter'"
            )

    @classmethod
    def retry(
        cls, retries: int, *, backoff: Backoff | None = None, then: ErrorAction = "log",
        dead_letter_topic: str | None = None,
    ) -> ErrorPolicy:
        """Retry the handler *retries* times, then act as *then* says."""
        return cls(then, retries, backoff or Backoff(), dead_letter_topic)

    @classmethod
    def dead_letter(cls, topic: str, *, retries: int = 0,
                    backoff: Backoff | None = None) -> ErrorPolicy:
        """Send messages whose handler keeps failing to *topic*."""
        return cls("dead_letter", retries, backoff or Backoff(), topic)

    @classmethod
    def coerce(cls, value: ErrorPolicy | ErrorAction) -> ErrorPolicy:
        """Accept a policy or the name of an action (``"raise"``, ``"log"``)."""
        if isinstance(value, ErrorPolicy):
            return value
        if value == "dead_letter":
            raise ConfigurationError("use ErrorPolicy.dead_letter(topic) for a dead-letter topic")
        return cls(value)


@dataclass(frozen=True)
class RestartPolicy:
    """Restart an application that failed, instead of failing the whole bus.

    The app's socket is closed and its resources exited, then, after a backoff delay, the app
    starts again from scratch (new socket, resources entered again: pass factories, such as
    ``lambda: open_db()``, for resources that cannot be entered twice).

    Args:
        max_restarts: restarts allowed before the failure propagates (``None``: no limit).
        backoff: the delay before each restart.
        reset_after: a run that lasted this many seconds resets the restart count.
    """

    max_restarts: int | None = 3
    backoff: Backoff = Backoff(initial=0.1, maximum=10.0)
    reset_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_restarts is not None and self.max_restarts < 0:
            raise ConfigurationError("RestartPolicy.max_restarts must be >= 0 or None")

    @property
    def retry(self) -> RetryPolicy:
        """The same policy as a :class:`~trionet.supervision.RetryPolicy` (what the bus runs;
        ``restart=`` also takes one directly, for instance to share a circuit breaker)."""
        return RetryPolicy(self.backoff, max_attempts=self.max_restarts,
                           reset_after=self.reset_after)
