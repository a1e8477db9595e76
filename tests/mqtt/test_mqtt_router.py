"""The client's synchronous core without a broker or a socket: routing (mqtt/_router.py),
buffer accounting and acknowledgements (mqtt/_flow.py), pending replies (mqtt/_replies.py)."""

from __future__ import annotations

import pytest
import trio

from trionet.mqtt import MessageProperties, MQTTMessage, QoS
from trionet.mqtt._flow import FlowControl
from trionet.mqtt._replies import Replies
from trionet.mqtt._router import Router, subscription_identifier
from trionet.mqtt._subscription import Subscription


class Core:
    """A router wired to recording callbacks instead of an engine."""

    def __init__(self, *, max_buffered: int = 100, ack_processed: bool = False,
                 v5: bool = False) -> None:
        self.acks: list[tuple[int, int, int]] = []
        self.pauses: list[bool] = []
        self.replies: list[MQTTMessage] = []
        self.flow = FlowControl(max_buffered, pause=self.pauses.append,
                                send_acks=self.acks.extend)
        self.handlers = Subscription(self.flow, "<handlers>", QoS.EXACTLY_ONCE, 4)
        self.router = Router(self.flow, self.handlers, v5=v5, ack_processed=ack_processed,
                             on_reply=self.replies.append)
        self.mid = 0

    def box(self, topic_filter: str, size: int = 4) -> Subscription:
        mailbox = Subscription(self.flow, topic_filter, QoS.AT_LEAST_ONCE, size)
        self.router.route_for(topic_filter).mailboxes.append(mailbox)
        return mailbox

    def deliver(self, topic: str, qos: int = 1, *, ids: tuple[int, ...] = ()) -> MQTTMessage:
        """One batch with one message, as the event pump routes it."""
        self.mid += 1
        props = MessageProperties(subscription_identifiers=ids) if ids else None
        message = MQTTMessage(topic, b"x", QoS(qos), False, self.mid if qos else None, props)
        self.flow.begin_batch()
        self.router.route(message, (1, self.mid, qos) if qos else None)
        self.flow.end_batch()
        return message


def test_messages_reach_matching_buffers_and_are_acknowledged_after_the_batch() -> None:
    core = Core()
    sensors = core.box("sensors/+")
    shared = core.box("$share/workers/jobs/#")
    core.deliver("sensors/kitchen")
    core.deliver("jobs/1/2")
    core.deliver("nobody/listens", qos=0)
    core.deliver("nobody/else")
    assert sensors.receive_nowait().topic == "sensors/kitchen"
    assert shared.receive_nowait().topic == "jobs/1/2"
    assert core.acks == [(1, 1, 1), (1, 2, 1), (1, 4, 1)]  # unrouted QoS 1 is acked too
    assert core.router.received == 4 and core.router.unrouted == 2
    assert core.flow.held == 0


def test_a_full_buffer_holds_the_acknowledgement_until_there_is_room() -> None:
    core = Core()
    box = core.box("a", size=1)
    core.deliver("a")
    core.deliver("a")
    assert core.acks == [(1, 1, 1)]
    assert box.statistics().waiting == 1 and core.flow.held == 2
    box.receive_nowait()
    assert core.acks == [(1, 1, 1), (1, 2, 1)]  # moved into the buffer: acknowledged now
    box.receive_nowait()
    with pytest.raises(trio.WouldBlock):
        box.receive_nowait()
    assert core.flow.held == 0


def test_reading_pauses_when_the_buffers_are_full_and_resumes_at_half() -> None:
    core = Core(max_buffered=4)
    box = core.box("a", size=10)
    for _ in range(4):
        core.deliver("a", qos=0)
    assert core.pauses == [True] and core.flow.paused
    box.receive_nowait()
    assert core.pauses == [True]
    box.receive_nowait()
    assert core.pauses == [True, False] and not core.flow.paused


def test_ack_processed_waits_for_every_consumer() -> None:
    core = Core(ack_processed=True)
    first, second = core.box("a/+"), core.box("a/#")
    message = core.deliver("a/b")
    assert core.acks == []
    first.ack(first.receive_nowait())
    assert core.acks == []
    second.ack(second.receive_nowait())
    assert core.acks == [(1, 1, 1)]
    second.ack(message)  # once only
    assert core.acks == [(1, 1, 1)]


def test_subscription_identifiers_pick_routes_whose_filter_matches() -> None:
    core = Core(v5=True)
    box = core.box("a/+")
    other = core.box("b/#")
    sub_id = core.router.route_for("a/+").sub_id
    assert sub_id == subscription_identifier("a/+")
    core.deliver("a/1", ids=(sub_id,))
    # an identifier of ours whose filter does not match the topic (an earlier run's session)
    core.deliver("c/1", ids=(sub_id,))
    core.deliver("b/1", ids=(999,))  # unknown identifier: no route, even though b/# matches
    assert box.receive_nowait().topic == "a/1"
    assert other.statistics().buffered == 0
    assert core.router.unrouted == 2


def test_replies_handlers_closing_and_unused_routes() -> None:
    core = Core()
    replies = Replies("my/replies")
    core.router.on_reply = replies.deliver
    core.router.route_for("my/replies").replies = True
    correlation, box = replies.expect()
    props = MessageProperties(correlation_data=correlation)
    core.router.route(MQTTMessage("my/replies", b"r", QoS.AT_MOST_ONCE, False, None, props),
                      None)
    assert box.done and core.router.unrouted == 0
    core.deliver("my/replies", qos=0)  # no correlation data: late
    assert replies.late == 1

    core.router.has_handlers = True
    route = core.router.route_for("h/+")
    route.handler_refs = 1
    core.deliver("h/1")
    core.deliver("queued/from/an/earlier/session")  # no route: still for the handlers
    assert [core.handlers.receive_nowait().topic for _ in range(2)] == [
        "h/1", "queued/from/an/earlier/session"]

    assert not core.router.drop_if_unused(route)
    route.handler_refs = 0
    assert core.router.drop_if_unused(route)
    assert "h/+" not in core.router.routes

    core.router.closing = True
    before = list(core.acks)
    core.deliver("h/1")
    assert core.acks == before  # not acknowledged: a persistent session gets it again
    core.router.end_all()
    with pytest.raises(trio.EndOfChannel):
        core.handlers.receive_nowait()
