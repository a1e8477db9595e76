"""Helpers of the tracing tests of every package (tests/conftest.py puts this folder on the
path): the finished spans of one kind, and span ids as plain ``(trace id, span id)`` pairs."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def spans(exporter: InMemorySpanExporter, kind: trace.SpanKind) -> list[ReadableSpan]:
    """The finished spans of *kind*, in the order they ended."""
    return [s for s in exporter.get_finished_spans() if s.kind is kind]


def ids(span: ReadableSpan | trace.Span) -> tuple[int, int]:
    """``(trace id, span id)`` of *span*."""
    context = span.get_span_context()
    assert context is not None
    return context.trace_id, context.span_id


def parent_ids(span: ReadableSpan) -> tuple[int, int] | None:
    """``(trace id, span id)`` of *span*'s parent, or None for a trace's root."""
    return None if span.parent is None else (span.parent.trace_id, span.parent.span_id)
