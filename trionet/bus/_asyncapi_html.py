"""A readable HTML page for an AsyncAPI document, and an ASGI router serving both.

The page is made on the server from the document alone: plain HTML with an inline style sheet,
no script, and nothing fetched from anywhere (the router's responses say so in a
``Content-Security-Policy``). Every text from the document (topic names, descriptions,
schemas) is HTML-escaped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from html import escape
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ..asgi import Request, Response, Router
    from ._app import DistributedApplication

__all__ = ["asyncapi_html", "asyncapi_router"]

#: No script, no frame, nothing loaded from anywhere: only the page's own inline style.
_HEADERS: Final = {
    "content-security-policy": (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}

_STYLE: Final = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:62rem;padding:1rem 1.5rem;
color:#1d232a;background:#fff;line-height:1.45}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #d8dee4;padding-bottom:.2rem;margin-top:2rem}
h3{margin:1.2rem 0 .3rem;font-family:ui-monospace,monospace;word-break:break-all}
table{border-collapse:collapse;width:100%;margin:.5rem 0}
th,td{border:1px solid #d8dee4;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f5f7}code,pre{font-family:ui-monospace,monospace;font-size:.9em}
pre{background:#f6f8fa;border:1px solid #d8dee4;padding:.6rem;overflow:auto;max-height:30rem}
.tag{display:inline-block;border-radius:.3rem;padding:0 .4rem;font-size:.85em;color:#fff}
.receive{background:#1a7f37}.send{background:#0969da}.muted{color:#57606a}
"""


def _text(value: object) -> str:
    return escape(str(value), quote=True)


def _ref_name(ref: object) -> str:
    """The last part of a ``{"$ref": "#/a/b/name"}`` object."""
    if isinstance(ref, Mapping):
        return str(ref.get("$ref", "")).rsplit("/", 1)[-1]
    return ""


def _anchor(kind: str, name: str) -> str:
    return _text(f"{kind}-{name}")


def _link(kind: str, name: str, label: str | None = None) -> str:
    return f'<a href="#{_anchor(kind, name)}"><code>{_text(label or name)}</code></a>'


#: A reference to a schema in escaped JSON (names of [A-Za-z0-9_.-] only: safe in HTML).
_SCHEMA_REF: Final = re.compile(r"&quot;#/components/schemas/([A-Za-z0-9_.-]+)&quot;")


def _pre(value: object) -> str:
    """*value* as indented JSON, escaped, its schema references made links."""
    text = _text(json.dumps(value, indent=2, ensure_ascii=False))
    return "<pre>" + _SCHEMA_REF.sub(
        r'&quot;<a href="#schema-\1">#/components/schemas/\1</a>&quot;', text) + "</pre>"


def _address(channel: Mapping[str, Any]) -> str:
    address = channel.get("address")
    return "(set at run time)" if address is None else str(address)


def _table(title: str, headings: list[str], rows: list[list[str]]) -> list[str]:
    """A section with a table; *rows* hold HTML already escaped."""
    if not rows:
        return []
    head = "".join(f"<th>{_text(heading)}</th>" for heading in headings)
    body = ["<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows]
    return [f"<h2>{_text(title)}</h2><table><tr>{head}</tr>", *body, "</table>"]


def _servers(document: Mapping[str, Any]) -> list[str]:
    rows: list[list[str]] = []
    for name, server in (document.get("servers") or {}).items():
        protocol = str(server.get("protocol", ""))
        if server.get("protocolVersion"):
            protocol += f" {server['protocolVersion']}"
        rows.append([
            f"<code>{_text(name)}</code>", _text(protocol),
            f"<code>{_text(server.get('host', ''))}{_text(server.get('pathname', ''))}</code>",
            _text(server.get("description", "")),
        ])
    return _table("Servers", ["name", "protocol", "host", "description"], rows)


def _operations(document: Mapping[str, Any]) -> list[str]:
    channels = document.get("channels") or {}
    rows: list[list[str]] = []
    for name, operation in (document.get("operations") or {}).items():
        action = str(operation.get("action", ""))
        channel = _ref_name(operation.get("channel"))
        messages = ", ".join(_link("message", _ref_name(m)) for m in operation.get("messages", ()))
        reply = operation.get("reply")
        if isinstance(reply, Mapping):
            replies = ", ".join(_link("message", _ref_name(m)) for m in reply.get("messages", ()))
            messages += f"<br><span class=muted>replies with</span> {replies}"
        summary = operation.get("summary")
        rows.append([
            f"<code>{_text(name)}</code>"
            + (f"<br><span class=muted>{_text(summary)}</span>" if summary else ""),
            f'<span class="tag {_text(action)}">{_text(action)}</span>',
            _link("channel", channel, _address(channels.get(channel, {}))),
            messages,
        ])
    return _table("Operations", ["operation", "action", "channel", "messages"], rows)


def _channels(document: Mapping[str, Any]) -> list[str]:
    parts = []
    for name, channel in (document.get("channels") or {}).items():
        parts.append(f'<section id="{_anchor("channel", name)}"><h3>'
                     f"{_text(_address(channel))}</h3>")
        if channel.get("description"):
            parts.append(f"<p>{_text(channel['description'])}</p>")
        parameters = channel.get("parameters") or {}
        if parameters:
            parts.append("<ul>" + "".join(
                f"<li><code>{{{_text(key)}}}</code>: {_text(value.get('description', ''))}</li>"
                for key, value in parameters.items()
            ) + "</ul>")
        messages = ", ".join(_link("message", _ref_name(m))
                             for m in (channel.get("messages") or {}).values())
        if messages:
            parts.append(f"<p>Messages: {messages}</p>")
        bindings = channel.get("bindings")
        if bindings:
            parts.append(f"<p class=muted>Bindings:</p>{_pre(bindings)}")
        parts.append("</section>")
    return ["<h2>Channels</h2>", *parts] if parts else []


def _components(document: Mapping[str, Any]) -> list[str]:
    components = document.get("components") or {}
    parts = []
    messages = components.get("messages") or {}
    if messages:
        parts.append("<h2>Messages</h2>")
    for name, message in messages.items():
        parts.append(
            f'<section id="{_anchor("message", name)}"><h3>{_text(name)}</h3>'
            f"<p>Content type: <code>{_text(message.get('contentType', ''))}</code>; "
            f"payload:</p>{_pre(message.get('payload', {}))}</section>"
        )
    schemas = components.get("schemas") or {}
    if schemas:
        parts.append("<h2>Schemas</h2>")
    for name, schema in schemas.items():
        parts.append(f'<section id="{_anchor("schema", name)}"><h3>{_text(name)}</h3>'
                     f"{_pre(schema)}</section>")
    return parts


def asyncapi_html(document: Mapping[str, Any], *, json_url: str | None = None) -> str:
    """A self-contained HTML page describing an AsyncAPI 3.0 *document*: its servers,
    operations, channels (with their parameters), messages and schemas.

    Nothing in it loads from the network (an inline style sheet, no script) and every text
    taken from the document is escaped.

    Args:
        document: what :meth:`DistributedApplication.asyncapi
            <trionet.bus.DistributedApplication.asyncapi>` returns.
        json_url: a link to the document as JSON, shown at the top.
    """
    info = document.get("info") or {}
    title = str(info.get("title", "AsyncAPI"))
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_text(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_text(title)}</h1>",
        f"<p class=muted>version {_text(info.get('version', ''))} · AsyncAPI "
        f"{_text(document.get('asyncapi', ''))}"
        + (f' · <a href="{_text(json_url)}">the document as JSON</a>' if json_url else "")
        + "</p>",
    ]
    if info.get("description"):
        head.append(f"<p>{_text(info['description'])}</p>")
    body = [*_servers(document), *_operations(document), *_channels(document),
            *_components(document)]
    return "\n".join([*head, *body, "</body></html>", ""])


def asyncapi_router(
    app: DistributedApplication,
    *,
    title: str | None = None,
    version: str = "0.1.0",
    description: str | None = None,
) -> Router:
    """A :class:`~trionet.asgi.Router` serving *app*'s AsyncAPI document: the HTML page of
    :func:`asyncapi_html` at ``/`` and the JSON at ``/asyncapi.json``. Mount it where it
    should be seen, e.g. ``web.mount("/asyncapi", asyncapi_router(bus))``.

    The document is made on each request, so applications registered later appear. The
    arguments are those of :meth:`DistributedApplication.asyncapi
    <trionet.bus.DistributedApplication.asyncapi>`.
    """
    from ..asgi import Response, Router

    def document() -> dict[str, Any]:
        return app.asyncapi(title=title, version=version, description=description)

    async def page(request: Request) -> Response:
        root = str(request.scope.get("root_path", ""))
        return Response.html(asyncapi_html(document(), json_url=root + "/asyncapi.json"),
                             headers=_HEADERS)

    async def document_json(request: Request) -> Response:
        return Response.json(document(), headers=_HEADERS)

    router = Router()
    endpoints: list[tuple[str, Callable[..., Any], str]] = [
        ("/", page, "asyncapi"), ("/asyncapi.json", document_json, "asyncapi_json"),
    ]
    for path, endpoint, name in endpoints:
        router.add_route(path, endpoint, ["GET"], name=name)
    return router
