"""AsyncAPI 3.0 documents of DistributedApplication: every document validates against the
AsyncAPI 3.0.0 JSON schema shipped in tests/bus/asyncapi/ (offline), for the demo's bus and for
applications on memory://, mqtt:// and kafka:// with wildcards, typed payloads and publishers;
``trionet asyncapi`` prints them; asyncapi_router serves them (JSON and an escaped HTML page)."""

from __future__ import annotations

import dataclasses
import json
import sys
import textwrap
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pydantic
import pytest
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource

from trionet.asgi import ASGIApplication, Router, TestClient
from trionet.bus import (
    BusConfig,
    BusMessage,
    DistributedApplication,
    SocketProvider,
    asyncapi_html,
    asyncapi_router,
)
from trionet.cli import main as cli_main
from trionet.demo._stack import Stack
from trionet.testing import python_code_blocks

HERE = Path(__file__).resolve().parent
SCHEMA = HERE / "asyncapi" / "asyncapi-3.0.0.schema.json"
DOC = HERE.parents[1] / "docs" / "asyncapi.rst"
BLOCKS = python_code_blocks(DOC)


def _no_network(uri: str) -> Resource[Any]:
    raise NoSuchResource(ref=uri)  # every reference must resolve inside the shipped file


VALIDATOR = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text(encoding="utf-8")),
                                       registry=Registry(retrieve=_no_network))


def assert_valid(document: dict[str, Any]) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}"
              for e in VALIDATOR.iter_errors(document)]
    assert not errors, "\n".join(errors)
    json.dumps(document)  # JSON-compatible


# -- the schema is the real one, and it is checked ----------------------------------------------


def test_the_shipped_schema_is_asyncapi_3_0_0_with_its_license() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert schema["properties"]["asyncapi"]["const"] == "3.0.0"
    assert "Apache License" in (HERE / "asyncapi" / "LICENSE").read_text(encoding="utf-8")
    assert "AsyncAPI Initiative" in (HERE / "asyncapi" / "NOTICE").read_text(encoding="utf-8")


def test_the_validator_rejects_a_broken_document() -> None:
    app = DistributedApplication("mqtt://127.0.0.1:1883")

    @app.application("a/b")
    async def handler(message: Any) -> None: ...

    assert_valid(app.asyncapi())
    breakages = [
        ("operations", "handler", "action", "publish"),  # AsyncAPI 2's word
        ("operations", "handler", "bindings", "mqtt", "qos", 3),
        ("servers", "mqtt", "protocol", None),
        ("channels", "a_b", "address", 42),
        ("asyncapi", "2.6.0"),
    ]
    for *path, value in breakages:
        document = app.asyncapi()
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        if value is None:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
        assert not VALIDATOR.is_valid(document), path


# -- the demo application -------------------------------------------------------------------


def test_the_demo_application_document_validates() -> None:
    stack = Stack()
    document = stack.bus_app.asyncapi(title="trionet demo", version="1.0.0")
    assert_valid(document)
    assert document["info"] == {"title": "trionet demo", "version": "1.0.0"}
    assert document["servers"]["memory"] == {
        "host": "localhost", "pathname": "/default", "protocol": "memory",
        "description": document["servers"]["memory"]["description"],
    }
    channel = document["channels"]["trionet_demo_orders"]
    assert channel["address"] == "trionet/demo/orders"
    operation = document["operations"]["orders"]
    assert operation["action"] == "receive"
    assert operation["channel"] == {"$ref": "#/channels/trionet_demo_orders"}
    assert operation["messages"] == [{"$ref": "#/channels/trionet_demo_orders/messages/RawMessage"}]
    raw = document["components"]["messages"]["RawMessage"]
    assert raw["payload"]["format"] == "binary"
    assert raw["contentType"] == "application/octet-stream"
    assert raw["headers"] == {"$ref": "#/components/schemas/BusEnvelope"}


def test_an_application_without_a_broker_or_applications() -> None:
    document = DistributedApplication().asyncapi()
    assert_valid(document)
    assert document["servers"]["memory"]["pathname"] == "/default"
    assert document["channels"] == {} and document["operations"] == {}


# -- brokers: servers, credentials, channels -----------------------------------------------------


def test_mqtt_wildcards_become_parameters_and_credentials_never_appear() -> None:
    app = DistributedApplication(
        "mqtt://alice:hunter2@broker.example:1884?qos=2&allow_insecure_auth=true&version=3.1.1"
        "&client_id=svc&keepalive=30"
    )

    @app.application(["sensors/+/temp/+", "alerts/#", "#", "$share/workers/jobs/+"])
    async def sensors(message: Any) -> None:
        """Read the sensors.

        Every reading is stored."""

    document = app.asyncapi()
    assert_valid(document)
    text = json.dumps(document)
    assert "hunter2" not in text and "alice" not in text
    server = document["servers"]["mqtt"]
    assert server["host"] == "broker.example:1884"
    assert (server["protocol"], server["protocolVersion"]) == ("mqtt", "3.1.1")
    assert server["bindings"]["mqtt"]["keepAlive"] == 30
    assert server["security"] == [{"$ref": "#/components/securitySchemes/mqtt-credentials"}]
    assert document["components"]["securitySchemes"]["mqtt-credentials"]["type"] == "userPassword"

    channels = document["channels"]
    plus = channels["sensors_level2_temp_level4"]
    assert plus["address"] == "sensors/{level2}/temp/{level4}"
    assert set(plus["parameters"]) == {"level2", "level4"}
    assert plus["x-trionet-filter"] == "sensors/+/temp/+"
    assert "servers" not in plus  # one server: every channel is on it
    hash_ = channels["alerts_levels2"]
    assert hash_["address"] == "alerts/{levels2}"
    assert "'alerts'" in hash_["parameters"]["levels2"]["description"]
    assert channels["levels1"]["address"] == "{levels1}"
    shared = channels["jobs_level2"]
    assert shared["address"] == "jobs/{level2}"
    assert shared["x-trionet-filter"] == "$share/workers/jobs/+"
    assert "'workers'" in shared["description"]

    operations = document["operations"]
    assert [operations[f"sensors_{i}"]["action"] for i in range(1, 5)] == ["receive"] * 4
    assert operations["sensors_1"]["summary"] == "Read the sensors."
    assert operations["sensors_1"]["description"].endswith("Every reading is stored.")
    assert operations["sensors_1"]["bindings"]["mqtt"] == {"qos": 2, "bindingVersion": "0.2.0"}


def test_mqtts_is_secure_mqtt() -> None:
    app = DistributedApplication("mqtts://broker.example")

    @app.application("x")
    async def handler() -> None: ...

    document = app.asyncapi()
    assert_valid(document)
    assert document["servers"]["mqtt"]["protocol"] == "secure-mqtt"
    assert document["servers"]["mqtt"]["host"] == "broker.example:8883"
    assert "securitySchemes" not in document["components"]


def test_kafka_servers_topics_and_sasl_without_secrets() -> None:
    app = DistributedApplication(
        "kafka://k1.example:9092,[::1]:9093?group=g&consumer.security_protocol=SASL_SSL"
        "&consumer.sasl_mechanism=SCRAM-SHA-512&consumer.sasl_plain_username=kuser"
        "&consumer.sasl_plain_password=kpass"
    )

    @app.application(["sensors/kitchen", "sensors/+"])
    async def readings(message: Any) -> None: ...

    document = app.asyncapi()
    assert_valid(document)
    text = json.dumps(document)
    assert "kpass" not in text and "kuser" not in text
    servers = document["servers"]
    assert [(s["host"], s["protocol"]) for s in servers.values()] == [
        ("k1.example:9092", "kafka-secure"), ("[::1]:9093", "kafka-secure"),
    ]
    schemes = document["components"]["securitySchemes"]
    assert [scheme["type"] for scheme in schemes.values()] == ["scramSha512"]
    kitchen = document["channels"]["sensors_kitchen"]
    assert kitchen["bindings"]["kafka"]["topic"] == "sensors.kitchen"
    assert {"$ref": "#/servers/kafka-2"} in kitchen["servers"]
    wildcard = document["channels"]["sensors_level2"]
    assert "topic" not in wildcard["bindings"]["kafka"]  # a regular-expression subscription
    assert "bindings" not in document["operations"]["readings_1"]


def test_kafka_topics_the_bus_creates_have_their_partitions() -> None:
    app = DistributedApplication("kafka://127.0.0.1:9092?partitions=6&replication_factor=3")

    @app.application("jobs")
    async def jobs(message: Any) -> None: ...

    @app.application("jobs", socket_provider="kafka://127.0.0.1:9092?create_topics=false")
    async def existing(message: Any) -> None: ...

    document = app.asyncapi()
    assert_valid(document)
    assert document["channels"]["jobs"]["bindings"]["kafka"] == {
        "bindingVersion": "0.5.0", "partitions": 6, "replicas": 3,
    }
    # topics the bus does not create: their partitions are whatever the cluster has
    assert document["channels"]["jobs-2"]["bindings"]["kafka"] == {"bindingVersion": "0.5.0"}


def test_each_broker_has_its_channels() -> None:
    app = DistributedApplication("memory://main")

    @app.application("events")
    async def local(message: Any) -> None: ...

    @app.application("events", socket_provider="mqtt://127.0.0.1:1883")
    async def remote(message: Any) -> None: ...

    @app.application("events", socket_provider="memory://main")
    async def again(message: Any) -> None: ...

    document = app.asyncapi()
    assert_valid(document)
    assert set(document["servers"]) == {"memory", "mqtt"}
    channels = document["channels"]
    assert channels["events"]["servers"] == [{"$ref": "#/servers/memory"}]
    assert channels["events-2"]["servers"] == [{"$ref": "#/servers/mqtt"}]
    assert channels["events-2"]["address"] == "events"
    operations = document["operations"]
    assert operations["local"]["channel"] == operations["again"]["channel"]
    assert operations["remote"]["channel"] == {"$ref": "#/channels/events-2"}


def test_a_provider_of_another_kind_is_a_generic_server() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class CustomConfig(BusConfig):
        pass

    class CustomProvider(SocketProvider):
        def create_socket(self, topics: Any = None, *, name: str | None = None) -> Any:
            raise NotImplementedError

    app = DistributedApplication(CustomProvider(CustomConfig()))

    @app.application("custom/topic")
    async def handler(message: Any) -> None: ...

    document = app.asyncapi()
    assert_valid(document)
    assert document["servers"] == {"broker": {
        "host": "localhost", "protocol": "CustomConfig", "description": "a CustomConfig broker",
    }}


# -- typed payloads, replies and publishers ----------------------------------------------------


@dataclasses.dataclass
class Order:
    item: str
    qty: int
    position: tuple[float, float]


class Receipt(msgspec.Struct):
    order: Order
    total: float


class Notice(typing.TypedDict):
    text: str


class Address(pydantic.BaseModel):
    city: str


class Customer(pydantic.BaseModel):
    name: str
    addresses: list[Address] = []
    location: tuple[float, float] | None = None


class Opaque:
    """A type without a JSON schema."""


class Strange(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)
    thing: Opaque


def test_typed_payloads_replies_and_publishers() -> None:
    app = DistributedApplication("memory://typed")

    @app.publisher("receipts")
    @app.application("orders/new")
    async def take(order: Order) -> Receipt:
        """Take an order and answer with its receipt."""
        return Receipt(order, 1.0)

    @app.application("notices")
    async def notice(notice: Notice) -> None: ...

    @app.application("texts")
    async def text(body: str) -> bytes:  # no publisher: a request gets the reply
        return body.encode()

    @app.application("raw")
    async def raw(message: BusMessage) -> None: ...

    document = app.asyncapi()
    assert_valid(document)
    messages = document["components"]["messages"]
    schemas = document["components"]["schemas"]
    assert messages["Order"]["payload"] == {"$ref": "#/components/schemas/Order"}
    assert messages["Order"]["contentType"] == "application/json"
    assert "application/msgpack" in messages["Order"]["description"]
    position = schemas["Order"]["properties"]["position"]
    assert position["items"] == [{"type": "number"}, {"type": "number"}]  # draft 7 tuples
    assert "prefixItems" not in json.dumps(document)
    assert schemas["Receipt"]["properties"]["order"] == {"$ref": "#/components/schemas/Order"}
    assert schemas["Notice"]["required"] == ["text"]
    assert messages["TextMessage"]["contentType"] == "text/plain"

    operations = document["operations"]
    assert operations["take"]["summary"] == "Take an order and answer with its receipt."
    reply = operations["take"]["reply"]
    assert reply["address"]["location"] == "$message.header#/response_topic"
    assert reply["channel"] == {"$ref": "#/channels/orders_new_reply"}
    assert reply["messages"] == [{"$ref": "#/channels/orders_new_reply/messages/Receipt"}]
    assert document["channels"]["orders_new_reply"]["address"] is None
    published = operations["take_publish_receipts"]
    assert published["action"] == "send"
    assert published["channel"] == {"$ref": "#/channels/receipts"}
    assert published["messages"] == [{"$ref": "#/channels/receipts/messages/Receipt"}]
    assert "reply" not in operations["notice"]  # returns None: nothing goes back
    assert operations["text"]["reply"]["messages"] == [
        {"$ref": "#/channels/texts_reply/messages/RawMessage"}
    ]
    assert operations["raw"]["messages"] == [{"$ref": "#/channels/raw/messages/RawMessage"}]
    assert "reply" not in operations["raw"]


def test_pydantic_models_use_pydantic_schemas() -> None:
    app = DistributedApplication()

    @app.application("customers")
    async def customers(customer: Customer) -> None: ...

    document = app.asyncapi()
    assert_valid(document)
    schemas = document["components"]["schemas"]
    assert document["components"]["messages"]["Customer"]["payload"] == {
        "$ref": "#/components/schemas/Customer"
    }
    assert schemas["Customer"]["properties"]["addresses"]["items"] == {
        "$ref": "#/components/schemas/Address"
    }
    assert schemas["Address"]["required"] == ["city"]
    assert "$defs" not in json.dumps(document) and "prefixItems" not in json.dumps(document)

    @app.application("strange")
    async def strange(payload: Strange) -> None: ...

    document = app.asyncapi()
    assert_valid(document)
    assert "no JSON schema" in document["components"]["messages"]["Strange"]["payload"][
        "description"]


def test_results_without_a_schema_and_several_publishers() -> None:
    app = DistributedApplication()

    @app.publisher("ticks/a")
    @app.publisher("ticks/b")
    @app.application("orders")
    async def ticker(order: Order) -> Opaque:
        return Opaque()

    document = app.asyncapi()
    assert_valid(document)
    operations = document["operations"]
    assert [op["action"] for op in operations.values()] == ["receive", "send", "send"]
    assert {topic for name in ("ticks_a", "ticks_b")
            for topic in [operations[f"ticker_publish_{name}"]["channel"]["$ref"]]} == {
        "#/channels/ticks_a", "#/channels/ticks_b"}
    opaque = document["components"]["messages"]["Opaque"]["payload"]
    assert "no JSON schema" in opaque["description"]
    assert document["components"]["messages"]["Order"]["payload"]["$ref"].endswith("/Order")


def test_two_types_of_the_same_name_get_two_schemas() -> None:
    def make() -> type:
        @dataclasses.dataclass
        class Order:  # another Order, with other fields
            reference: str

        return Order

    def consumer_of(payload_type: type) -> Any:
        async def handler(order: Any) -> None: ...

        handler.__annotations__ = {"order": payload_type, "return": None}
        return handler

    app = DistributedApplication()
    app.application("a", name="first")(consumer_of(Order))
    app.application("b", name="second")(consumer_of(make()))
    document = app.asyncapi()
    assert_valid(document)
    messages = document["components"]["messages"]
    assert set(messages) == {"Order", "Order-2"}
    one, two = (messages[key]["payload"]["$ref"].rsplit("/", 1)[1] for key in messages)
    schemas = document["components"]["schemas"]
    assert "item" in schemas[one]["properties"] and "reference" in schemas[two]["properties"]


# -- the command line -------------------------------------------------------------------------


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"asyncapi_cli_app_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        from trionet.bus import DistributedApplication

        app = DistributedApplication("mqtt://user:pw@127.0.0.1:1883?allow_insecure_auth=true")

        @app.application("cli/+/events")
        async def events(message):
            \"\"\"Count events.\"\"\"
    """), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


def test_cli_prints_json(app_module: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["asyncapi", f"{app_module}:app", "--api-version", "2.0.0"]) == 0
    out = capsys.readouterr().out
    document = json.loads(out)
    assert_valid(document)
    assert document["info"] == {"title": f"{app_module}:app", "version": "2.0.0"}
    assert document["channels"]["cli_level2_events"]["address"] == "cli/{level2}/events"
    assert "pw" not in json.dumps(document["servers"])


def test_cli_prints_yaml_and_replaces_the_broker(
    app_module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    yaml = pytest.importorskip("yaml")
    status = cli_main(["asyncapi", f"{app_module}:app", "--yaml", "--title", "Events",
                       "--broker", "kafka://127.0.0.1:9092"])
    assert status == 0
    document = yaml.safe_load(capsys.readouterr().out)
    assert_valid(document)
    assert document["info"]["title"] == "Events"
    assert list(document["servers"]) == ["kafka"]


def test_cli_errors_are_one_line(app_module: str, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli_main(["asyncapi", f"{app_module}:nope"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == (
        f"trionet asyncapi: module {app_module!r} has no attribute 'nope'"
    )
    assert "Traceback" not in err
    assert cli_main(["asyncapi", f"{app_module}:app", "--broker", "amqp://x"]) == 2
    assert "unsupported broker URL scheme" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "yaml", None)  # PyYAML not installed
    assert cli_main(["asyncapi", f"{app_module}:app", "--yaml"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[0].startswith("trionet asyncapi: YAML output needs PyYAML")


# -- served over ASGI -------------------------------------------------------------------------


HOSTILE = 'x/<script>alert("t")</script>/&amp;'


async def test_asyncapi_router_serves_json_and_an_escaped_page() -> None:
    bus = DistributedApplication("memory://web")

    @bus.application([HOSTILE, "y/+"])
    async def hostile(message: Any) -> None:
        """<img src=x onerror=alert(1)>"""

    web = ASGIApplication(Router())
    web.mount("/docs/asyncapi", asyncapi_router(bus, title="<b>Shop</b>", version="3"))
    async with TestClient(web) as client:
        page = await client.get("/docs/asyncapi")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src" not in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        html = page.text
        assert "<script" not in html and "<img" not in html and "<b>" not in html
        assert "&lt;script&gt;" in html and "&lt;b&gt;Shop&lt;/b&gt;" in html
        assert "&amp;amp;" in html  # escaped once more, not decoded
        assert "http://" not in html and "https://" not in html and "//" not in html.replace(
            "<!DOCTYPE", "")
        assert '<a href="/docs/asyncapi/asyncapi.json">' in html
        assert "y/{level2}" in html

        served = await client.get("/docs/asyncapi/asyncapi.json")
        assert served.status_code == 200
        assert served.headers["content-type"] == "application/json"
        assert served.json() == bus.asyncapi(title="<b>Shop</b>", version="3")
        assert_valid(served.json())

        @bus.application("later")
        async def later(message: Any) -> None: ...

        again = await client.get("/docs/asyncapi/asyncapi.json")
        assert "later" in again.json()["operations"]
        assert (await client.head("/docs/asyncapi/")).status_code == 200
        assert (await client.post("/docs/asyncapi/asyncapi.json")).status_code == 405


def test_asyncapi_html_of_a_document_with_everything() -> None:
    app = DistributedApplication("mqtt://127.0.0.1:1883")

    @app.publisher("receipts")
    @app.application("orders/+")
    async def take(order: Order) -> Receipt:
        """Take orders."""
        return Receipt(order, 0.0)

    html = asyncapi_html(app.asyncapi(description="Orders & receipts"))
    assert html.startswith("<!DOCTYPE html>")
    for text in ("Orders &amp; receipts", "orders/{level2}", "(set at run time)",
                 'class="tag receive"', 'class="tag send"', "replies with",
                 'id="message-Receipt"', 'id="schema-Order"', "mqtt 5", "Take orders.",
                 '<a href="#schema-Order">#/components/schemas/Order</a>'):
        assert text in html, text
    assert "the document as JSON" not in html  # no link without json_url


# -- the documentation's examples -----------------------------------------------------------


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_doc_example_runs(index: int) -> None:
    namespace: dict[str, object] = {"__name__": f"asyncapi_doc_example_{index}"}
    # dont_inherit: the examples run without this module's `from __future__ import annotations`
    exec(compile(BLOCKS[index], f"{DOC.name}[{index}]", "exec", dont_inherit=True), namespace)
