"""trionet.tracing for mail, against the real Postfix and Dovecot: a CLIENT span per SMTP send
and per IMAP command; nothing about the trace goes into the mail."""

from __future__ import annotations

import trio
from mail_helpers import imap_session, new_tag, simple_message, smtp_session, wait_for_uids
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from trionet import tracing
from trionet.mail import IMAPCommandError
from trionet.testing import MailServers


async def test_smtp_send_and_imap_commands_are_client_spans(
    span_exporter: InMemorySpanExporter, mail_servers: MailServers,
) -> None:
    info = mail_servers.info
    tag = new_tag()
    message = simple_message(info, tag)
    with trio.fail_after(30):
        async with smtp_session(info) as smtp:
            with tracing.tracer().start_as_current_span("caller") as caller:
                await smtp.send_message(message)
        async with imap_session(info) as imap:
            (uid,) = await wait_for_uids(imap, f'HEADER Subject "{tag}"')
            (received,) = await imap.fetch([uid])
            try:
                await imap.select_mailbox(f"no-such-{tag}")
            except IMAPCommandError:
                pass
            else:
                raise AssertionError("no IMAPCommandError")
    assert not [name for name in received.headers if name.lower() in ("traceparent",
                                                                      "tracestate")]
    spans = [s for s in span_exporter.get_finished_spans() if s.name != "caller"]
    assert {s.kind for s in spans} == {trace.SpanKind.CLIENT}
    names = [s.name for s in spans]
    assert names[:2] == ["SMTP AUTHENTICATE", "SMTP MAIL"]
    assert names[2:] == ["IMAP AUTHENTICATE", "IMAP SELECT", *["IMAP UID SEARCH"] * (
        len(names) - 6), "IMAP UID FETCH", "IMAP SELECT"]
    send = spans[1]
    assert send.parent is not None and send.parent.span_id == caller.get_span_context().span_id
    assert send.attributes is not None
    assert send.attributes["network.protocol.name"] == "smtp"
    assert send.attributes["server.address"] == info.host
    assert send.attributes["server.port"] == info.smtp_port
    assert send.attributes["trionet.mail.message_count"] == 1
    assert send.attributes["trionet.mail.recipients_refused"] == 0
    failed = spans[-1]
    assert failed.name == "IMAP SELECT"
    assert failed.status.status_code is trace.StatusCode.ERROR
    assert failed.attributes is not None
    assert failed.attributes["error.type"] == "IMAPCommandError"
