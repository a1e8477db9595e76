"""An ASGI micro-framework on trio, served by Hypercorn's trio worker.

The seed's names (``ASGIApplication``, ``Request``, ``Response``, ``Router``,
``ASGIMiddleware``) keep their shape; see ``docs/asgi.rst`` for a tour. Hypercorn and
trio-websocket are imported only when :func:`serve` or :func:`connect_websocket` is called.
"""

from __future__ import annotations

from .._util import fix_public_modules as _fix_public_modules
from ..errors import ASGIError as ASGIError
from ._app import (
    ApplicationStatistics as ApplicationStatistics,
    ASGIApplication as ASGIApplication,
)
from ._auth import (
    AuthCredentials as AuthCredentials,
    AuthenticationBackend as AuthenticationBackend,
    AuthenticationError as AuthenticationError,
    AuthenticationMiddleware as AuthenticationMiddleware,
    BaseUser as BaseUser,
    SimpleUser as SimpleUser,
    UnauthenticatedUser as UnauthenticatedUser,
    requires as requires,
)
from ._background import (
    BackgroundTask as BackgroundTask,
    BackgroundTasks as BackgroundTasks,
)
from ._datastructures import (
    URL as URL,
    Address as Address,
    FormData as FormData,
    Headers as Headers,
    MutableHeaders as MutableHeaders,
    QueryParams as QueryParams,
    State as State,
    UploadFile as UploadFile,
)
from ._errors import (
    ClientDisconnect as ClientDisconnect,
    HTTPException as HTTPException,
    ValidationError as ValidationError,
    WebSocketDisconnect as WebSocketDisconnect,
    WebSocketRejected as WebSocketRejected,
)
from ._health import (
    CheckResult as CheckResult,
    Health as Health,
    HealthCheck as HealthCheck,
    HealthReport as HealthReport,
    HealthStatus as HealthStatus,
)
from ._hosts import (
    Host as Host,
    HTTPSRedirectMiddleware as HTTPSRedirectMiddleware,
)
from ._middleware import (
    ASGIMiddleware as ASGIMiddleware,
    CORSMiddleware as CORSMiddleware,
    GZipMiddleware as GZipMiddleware,
    LoggingMiddleware as LoggingMiddleware,
    RequestIdMiddleware as RequestIdMiddleware,
    TimeoutMiddleware as TimeoutMiddleware,
    TrustedHostMiddleware as TrustedHostMiddleware,
    current_request_id as current_request_id,
)
from ._requests import (
    DEFAULT_MAX_BODY_SIZE as DEFAULT_MAX_BODY_SIZE,
    HTTPConnection as HTTPConnection,
    Request as Request,
)
from ._responses import (
    FileResponse as FileResponse,
    Response as Response,
    StreamingResponse as StreamingResponse,
)
from ._routing import (
    Converter as Converter,
    Mount as Mount,
    Route as Route,
    Router as Router,
    WebSocketRoute as WebSocketRoute,
)
from ._serve import (
    DEFAULT_MAX_HEADER_COUNT as DEFAULT_MAX_HEADER_COUNT,
    DEFAULT_MAX_HEADER_SIZE as DEFAULT_MAX_HEADER_SIZE,
    BoundAddress as BoundAddress,
    largest_websocket_limit as largest_websocket_limit,
    serve as serve,
)
from ._sessions import SessionMiddleware as SessionMiddleware
from ._sse import (
    DEFAULT_PING_INTERVAL as DEFAULT_PING_INTERVAL,
    MAX_LAST_EVENT_ID as MAX_LAST_EVENT_ID,
    EventSourceResponse as EventSourceResponse,
    ServerSentEvent as ServerSentEvent,
    last_event_id as last_event_id,
)
from ._static import StaticFiles as StaticFiles
from ._testclient import TestClient as TestClient, TestResponse as TestResponse
from ._types import (
    ASGIApp as ASGIApp,
    Message as Message,
    Receive as Receive,
    Scope as Scope,
    Send as Send,
)
from ._websockets import (
    DEFAULT_MAX_MESSAGE_SIZE as DEFAULT_MAX_MESSAGE_SIZE,
    WebSocket as WebSocket,
    WebSocketClient as WebSocketClient,
    connect_websocket as connect_websocket,
)

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_HEADER_COUNT",
    "DEFAULT_MAX_HEADER_SIZE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_PING_INTERVAL",
    "MAX_LAST_EVENT_ID",
    "URL",
    "ASGIApp",
    "ASGIApplication",
    "ASGIError",
    "ASGIMiddleware",
    "Address",
    "ApplicationStatistics",
    "AuthCredentials",
    "AuthenticationBackend",
    "AuthenticationError",
    "AuthenticationMiddleware",
    "BackgroundTask",
    "BackgroundTasks",
    "BaseUser",
    "BoundAddress",
    "CORSMiddleware",
    "CheckResult",
    "ClientDisconnect",
    "Converter",
    "EventSourceResponse",
    "FileResponse",
    "FormData",
    "GZipMiddleware",
    "HTTPConnection",
    "HTTPException",
    "HTTPSRedirectMiddleware",
    "Headers",
    "Health",
    "HealthCheck",
    "HealthReport",
    "HealthStatus",
    "Host",
    "LoggingMiddleware",
    "Message",
    "Mount",
    "MutableHeaders",
    "QueryParams",
    "Receive",
    "Request",
    "RequestIdMiddleware",
    "Response",
    "Route",
    "Router",
    "Scope",
    "Send",
    "ServerSentEvent",
    "SessionMiddleware",
    "SimpleUser",
    "State",
    "StaticFiles",
    "StreamingResponse",
    "TestClient",
    "TestResponse",
    "TimeoutMiddleware",
    "TrustedHostMiddleware",
    "UnauthenticatedUser",
    "UploadFile",
    "ValidationError",
    "WebSocket",
    "WebSocketClient",
    "WebSocketDisconnect",
    "WebSocketRejected",
    "WebSocketRoute",
    "connect_websocket",
    "current_request_id",
    "largest_websocket_limit",
    "last_event_id",
    "requires",
    "serve",
]

_fix_public_modules(globals())
