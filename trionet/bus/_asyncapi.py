"""The AsyncAPI 3.0 document of a :class:`~trionet.bus.DistributedApplication` (no I/O).

:func:`asyncapi_document` (what :meth:`DistributedApplication.asyncapi
<trionet.bus.DistributedApplication.asyncapi>` returns) reads what the application registered
and writes, as plain JSON-compatible data:

* ``servers``: one per broker the applications use (the default one and each application's own),
  from its configuration: protocol, host and port (``pathname`` for ``memory://``), never a user
  name or password (a server that needs them gets a ``userPassword`` or SASL security scheme);
* ``channels``: one per topic (or topic filter) and broker. MQTT wildcards become channel
  parameters: ``sensors/+/temp`` is the address ``sensors/{level2}/temp``, ``sensors/#`` is
  ``sensors/{levels2}``; the filter itself is kept in ``x-trionet-filter``;
* ``operations``: ``receive`` for each consumer and topic, ``send`` for each topic a handler's
  result is published to, and a ``reply`` when the handler's result goes back to the requester;
* ``components``: the message payload schemas, from the handlers' type annotations (msgspec for
  dataclasses, ``msgspec.Struct`` and ``TypedDict``, pydantic's own for pydantic models; raw
  payloads are binary strings), and the bus envelope's fields as message headers.

The payload types come from :class:`~trionet.bus.ApplicationSpec` (``payload_type``,
``result_type``, ``publishes``, what the typed handlers declare); a consumer without a typed
payload receives raw bytes, and one whose return annotation is a type (not ``None``) replies
with it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from ..errors import ConfigurationError
from ._config import BusConfig, KafkaConfig, MemoryConfig, MqttConfig
from ._message import BusMessage
from ._typed import return_annotation

if TYPE_CHECKING:
    from ._app import ApplicationSpec, DistributedApplication

__all__ = ["ASYNCAPI_VERSION", "asyncapi_document", "asyncapi_yaml"]

#: The AsyncAPI version of the documents written here.
ASYNCAPI_VERSION: Final = "3.0.0"

_SCHEMAS: Final = "#/components/schemas/"
_ENVELOPE: Final = "BusEnvelope"
_RAW_TYPES: Final = (bytes, bytearray, memoryview, BusMessage)
_KEY_CHARACTERS: Final = re.compile(r"[^A-Za-z0-9_.-]+")
_SASL_SCHEMES: Final = {
    "PLAIN": "plain",
    "SCRAM-SHA-256": "scramSha256",
    "SCRAM-SHA-512": "scramSha512",
    "GSSAPI": "gssapi",
}


def _key(text: str, fallback: str = "x") -> str:
    """*text* as a component key (``[A-Za-z0-9_.-]+``)."""
    return _KEY_CHARACTERS.sub("_", text).strip("_") or fallback


def _unique(key: str, taken: Mapping[str, object] | set[str]) -> str:
    candidate, counter = key, 2
    while candidate in taken:
        candidate, counter = f"{key}-{counter}", counter + 1
    return candidate


def _type_name(tp: Any) -> str:
    name = getattr(tp, "__name__", None)
    if isinstance(name, str) and not getattr(tp, "__args__", None):
        return name
    return _key(repr(tp).replace("typing.", ""), "Payload")


def _is_raw(tp: Any) -> bool:
    return tp is None or (isinstance(tp, type) and issubclass(tp, _RAW_TYPES))


def _is_pydantic(tp: Any) -> bool:
    return isinstance(tp, type) and callable(getattr(tp, "model_json_schema", None))


def _draft7(schema: Any) -> Any:
    """*schema* in JSON Schema draft 7 (AsyncAPI's schema dialect): ``prefixItems`` (2020-12,
    msgspec and pydantic write it for tuples) becomes the draft-7 ``items`` list."""
    if isinstance(schema, list):
        return [_draft7(each) for each in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: _draft7(value) for key, value in schema.items()}
    if "prefixItems" in converted:
        rest = converted.pop("items", None)
        converted["items"] = converted.pop("prefixItems")
        if rest is not None:
            converted["additionalItems"] = rest
    return converted


# -- payload schemas -----------------------------------------------------------------------------


_JSON_OR_MSGPACK: Final = (
    "Encoded as JSON, or as MessagePack when the message's content_type is "
    "application/msgpack (receivers read both)."
)


class _Schemas:
    """The messages and payload schemas of every type the document mentions.

    msgspec describes all its types in one call (:meth:`finish`), so that two types of the
    same name (from two modules) get two schemas.
    """

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}
        self.messages: dict[str, Any] = {}
        self._keys: dict[Any, str] = {}
        self._pending: list[tuple[Any, dict[str, Any]]] = []

    def message(self, tp: Any) -> str:
        """The key in ``components.messages`` of the message carrying a *tp* payload."""
        marker = "raw" if _is_raw(tp) else tp
        known = self._keys.get(marker)
        if known is not None:
            return known
        payload: dict[str, Any] = {}
        if marker == "raw":
            name, content_type = "RawMessage", "application/octet-stream"
            payload.update(type="string", format="binary",
                           description="any bytes (the handler reads message.payload)")
        elif tp is str:
            name, content_type = "TextMessage", "text/plain"
            payload.update(type="string")
        else:
            name, content_type = _type_name(tp), "application/json"
            if _is_pydantic(tp):
                payload.update(self._pydantic(tp))
            else:
                self._pending.append((tp, payload))
        key = _unique(_key(name, "Payload"), self.messages)
        self.messages[key] = {
            "name": key,
            "title": name,
            "contentType": content_type,
            **({"description": _JSON_OR_MSGPACK} if content_type == "application/json" else {}),
            "payload": payload,
            "headers": {"$ref": _SCHEMAS + _ENVELOPE},
            "correlationId": {
                "description": "pairs a reply with its request",
                "location": "$message.header#/correlation_id",
            },
        }
        self._keys[marker] = key
        return key

    def finish(self) -> None:
        """Fill in the payload schemas that msgspec describes."""
        if not self._pending:
            return
        try:
            self._msgspec(self._pending)
        except (TypeError, ValueError, ImportError):
            for each in self._pending:  # one at a time, to find the type(s) without a schema
                try:
                    self._msgspec([each])
                except (TypeError, ValueError, ImportError) as exc:
                    each[1].update(description=f"a {_type_name(each[0])} (no JSON schema: "
                                               f"{type(exc).__name__}: {exc})")
        self._pending.clear()

    def _msgspec(self, pending: list[tuple[Any, dict[str, Any]]]) -> None:
        import msgspec

        schemas, components = msgspec.json.schema_components(
            [tp for tp, _ in pending], ref_template=_SCHEMAS + "{name}"
        )
        self._merge(components)
        for (_, payload), schema in zip(pending, schemas, strict=True):
            payload.update(_draft7(schema))

    def _pydantic(self, tp: Any) -> dict[str, Any]:
        try:
            schema = dict(tp.model_json_schema(ref_template=_SCHEMAS + "{model}"))
        except Exception as exc:  # pydantic's own errors (a field type it cannot describe)
            return {"description": f"a {_type_name(tp)} (no JSON schema: "
                                   f"{type(exc).__name__}: {exc})"}
        self._merge(schema.pop("$defs", {}))
        name = _key(str(schema.get("title") or tp.__name__), "Payload")
        self._merge({name: schema})
        return {"$ref": _SCHEMAS + name}

    def _merge(self, components: Mapping[str, Any]) -> None:
        # msgspec and pydantic write component names of [A-Za-z0-9_.-] already
        for name, schema in components.items():
            self.components.setdefault(name, _draft7(schema))


_ENVELOPE_SCHEMA: Final = {
    "type": "object",
    "description": (
        "The trionet bus envelope's fields besides the payload (the envelope is a msgpack map, "
        "or JSON with the broker option codec=json; payload is its 'payload' field)."
    ),
    "properties": {
        "topic": {"type": "string"},
        "content_type": {"type": "string", "description": "the payload's MIME type"},
        "client_name": {"type": "string", "description": "who sent it"},
        "response_topic": {"type": "string",
                           "description": "where the reply to a request goes"},
        "timestamp": {"type": "integer", "description": "seconds since the epoch"},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "correlation_id": {"type": "string", "description": "pairs a reply with its request"},
        "message_id": {"type": "string", "description": "identifies the message in logs"},
    },
}


# -- servers -------------------------------------------------------------------------------------


def _host(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _kafka_option(config: KafkaConfig, name: str) -> str:
    for options in (config.consumer_config, config.producer_config):
        value = options.get(name)
        if value:
            return str(value)
    return ""


def _servers(config: BusConfig) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The server objects for one broker configuration, and its security scheme (if any).

    Only the scheme, hosts, ports, protocol version and a few connection options are read:
    never a user name, a password or another configuration value.
    """
    if isinstance(config, MemoryConfig):
        return [{
            "host": "localhost",
            "pathname": "/" + config.name,
            "protocol": "memory",
            "description": (
                f"trionet's in-process broker {config.name!r}: only applications in the same "
                "process reach it"
            ),
        }], None
    if isinstance(config, MqttConfig):
        server: dict[str, Any] = {
            "host": _host(config.host, config.effective_port),
            "protocol": "secure-mqtt" if config.tls else "mqtt",
            "protocolVersion": config.version,
            "description": "an MQTT broker" + (" (TLS)" if config.tls else ""),
            "bindings": {"mqtt": {
                "cleanSession": config.clean_start,
                "keepAlive": config.keepalive,
                "bindingVersion": "0.2.0",
            }},
        }
        scheme = None
        if config.username is not None:
            scheme = {"type": "userPassword",
                      "description": "MQTT user name and password (from the configuration)"}
        return [server], scheme
    if isinstance(config, KafkaConfig):
        security = _kafka_option(config, "security_protocol").upper()
        mechanism = _kafka_option(config, "sasl_mechanism").upper()
        secure = security in ("SSL", "SASL_SSL") or bool(config.tls)
        servers = []
        for address in config.servers:
            servers.append({
                "host": address,
                "protocol": "kafka-secure" if secure else "kafka",
                "description": "a Kafka bootstrap server" + (" (TLS)" if secure else ""),
            })
        scheme = None
        if security.startswith("SASL") and mechanism in _SASL_SCHEMES:
            scheme = {"type": _SASL_SCHEMES[mechanism],
                      "description": f"Kafka SASL {mechanism} (from the configuration)"}
        return servers, scheme
    return [{  # another provider's configuration: all that is known is its scheme
        "host": "localhost",
        "protocol": config.scheme or type(config).__name__,
        "description": f"a {type(config).__name__} broker",
    }], None


# -- channels ------------------------------------------------------------------------------------


def _address(topic_filter: str) -> tuple[str, dict[str, Any], str | None]:
    """The channel address of a topic filter, its parameters, and a shared group if any."""
    group = None
    if topic_filter.startswith("$share/"):
        _, group, topic_filter = topic_filter.split("/", 2)
    levels = topic_filter.split("/")
    parameters: dict[str, Any] = {}
    for index, level in enumerate(levels):
        if level == "+":
            name = f"level{index + 1}"
            parameters[name] = {
                "description": f"topic level {index + 1}: any one level (MQTT wildcard '+')",
            }
            levels[index] = "{" + name + "}"
        elif level == "#":
            name = f"levels{index + 1}"
            parameters[name] = {
                "description": (
                    f"topic levels {index + 1} and below: any number of '/'-separated levels "
                    "(MQTT wildcard '#'; the filter also matches the parent topic "
                    f"{'/'.join(levels[:index])!r})" if index else
                    "any topic (MQTT wildcard '#')"
                ),
            }
            levels[index] = "{" + name + "}"
    return "/".join(levels), parameters, group


@dataclasses.dataclass
class _Channel:
    key: str
    body: dict[str, Any]


def _summary(callback: Any) -> tuple[str | None, str | None]:
    doc = inspect.getdoc(callback)
    if not doc:
        return None, None
    return doc.split("\n\n", 1)[0].replace("\n", " ").strip(), doc


def _result_type(spec: ApplicationSpec) -> Any:
    """What a consumer's return value is (``None``: it returns nothing). The bus publishes
    it to the publisher topics and, for a request, as the reply (``result_type`` is recorded
    only for consumers with publishers; the annotation says it for the others)."""
    if spec.result_type is not None:
        return spec.result_type
    return return_annotation(spec.callback) if spec.kind == "consumer" else None


def _identity(config: BusConfig) -> str:
    """What tells two brokers apart: the URL (password hidden), or the object."""
    try:
        return config.to_url()
    except NotImplementedError:  # another provider's configuration
        return f"{type(config).__qualname__}@{id(config):x}"


class _Builder:
    """Assembles one document; see :func:`asyncapi_document`."""

    def __init__(self, app: DistributedApplication) -> None:
        self.app = app
        self.schemas = _Schemas()
        self.servers: dict[str, Any] = {}
        self.security: dict[str, Any] = {}
        self.channels: dict[str, Any] = {}
        self.operations: dict[str, Any] = {}
        self._server_keys: dict[str, list[str]] = {}
        self._channel_keys: dict[tuple[str, str], _Channel] = {}
        self._replies: dict[str, _Channel] = {}

    # servers

    def _config(self, spec: ApplicationSpec) -> BusConfig:
        provider = spec.socket_provider or self.app.default_socket_provider
        if provider is None:
            return MemoryConfig()
        return provider.config

    def server_keys(self, config: BusConfig) -> list[str]:
        url = _identity(config)
        known = self._server_keys.get(url)
        if known is not None:
            return known
        servers, scheme = _servers(config)
        base = _key(config.scheme, "broker")
        keys = [_unique(base, self.servers)]
        self.servers[keys[0]] = servers[0]
        for server in servers[1:]:
            keys.append(_unique(base, self.servers))
            self.servers[keys[-1]] = server
        if scheme is not None:  # one per broker, named after its first server
            scheme_key = _unique(f"{keys[0]}-credentials", self.security)
            self.security[scheme_key] = scheme
            for server in servers:
                server["security"] = [{"$ref": f"#/components/securitySchemes/{scheme_key}"}]
        self._server_keys[url] = keys
        return keys

    # channels

    def channel(self, topic: str, config: BusConfig) -> _Channel:
        url = _identity(config)
        known = self._channel_keys.get((topic, url))
        if known is not None:
            return known
        address, parameters, group = _address(topic)
        body: dict[str, Any] = {"address": address, "messages": {}}
        wildcard = bool(parameters)
        if wildcard or group is not None:
            body["x-trionet-filter"] = topic
        if wildcard:
            body["parameters"] = parameters
            body["description"] = f"Every topic the filter {topic!r} matches."
        if group is not None:
            body["description"] = (body.get("description", "") + " " if wildcard else "") + (
                f"A shared subscription: the group {group!r} shares the messages "
                "(each goes to one subscriber of the group)."
            )
        if isinstance(config, KafkaConfig):
            binding: dict[str, Any] = {"bindingVersion": "0.5.0"}
            if not wildcard and "/" in address:  # the Kafka topic, when it is another name
                binding["topic"] = address.replace("/", ".")
            for field, name in (("partitions", "partitions"), ("replicas", "replication_factor")):
                value = getattr(config, name, None)  # what the topics the bus creates get
                if config.create_topics and isinstance(value, int) and value >= 1:
                    binding[field] = value
            body["bindings"] = {"kafka": binding}
        body["servers"] = [{"$ref": f"#/servers/{key}"} for key in self.server_keys(config)]
        key = _unique(_key(address.replace("{", "").replace("}", ""), "channel"), self.channels)
        self.channels[key] = body
        channel = self._channel_keys[(topic, url)] = _Channel(key, body)
        return channel

    def reply_channel(self, channel: _Channel) -> _Channel:
        known = self._replies.get(channel.key)
        if known is None:
            key = _unique(channel.key + "_reply", self.channels)
            body = self.channels[key] = {
                "address": None,
                "description": (
                    "The requester's reply topic (the request's response_topic; trionet "
                    "requesters use one under '_trionet/reply')."
                ),
                "messages": {},
                "servers": channel.body["servers"],
            }
            known = self._replies[channel.key] = _Channel(key, body)
        return known

    @staticmethod
    def message_ref(channel: _Channel, message: str) -> dict[str, str]:
        channel.body["messages"][message] = {"$ref": f"#/components/messages/{message}"}
        return {"$ref": f"#/channels/{channel.key}/messages/{message}"}

    # operations

    def _operation(self, name: str, spec: ApplicationSpec, action: str, channel: _Channel,
                   message: str, config: BusConfig) -> dict[str, Any]:
        operation: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel.key}"},
            "messages": [self.message_ref(channel, message)],
            "x-trionet-application": spec.name,
        }
        summary, description = _summary(spec.callback)
        if summary:
            operation["summary"] = summary
        if description and description != summary:
            operation["description"] = description
        if isinstance(config, MqttConfig):
            operation["bindings"] = {"mqtt": {"qos": config.qos, "bindingVersion": "0.2.0"}}
        self.operations[_unique(_key(name, "operation"), self.operations)] = operation
        return operation

    def add(self, spec: ApplicationSpec) -> None:
        config = self._config(spec)
        self.server_keys(config)
        result_type = _result_type(spec)
        for index, topic in enumerate(spec.topics):
            channel = self.channel(topic, config)
            name = spec.name if len(spec.topics) == 1 else f"{spec.name}_{index + 1}"
            operation = self._operation(name, spec, "receive", channel,
                                        self.schemas.message(spec.payload_type), config)
            if result_type is not None:
                reply = self.reply_channel(channel)
                operation["reply"] = {
                    "address": {
                        "location": "$message.header#/response_topic",
                        "description": "the request's response_topic",
                    },
                    "channel": {"$ref": f"#/channels/{reply.key}"},
                    "messages": [self.message_ref(reply, self.schemas.message(result_type))],
                }
        for topic in spec.publishes:
            channel = self.channel(topic, config)
            self._operation(f"{spec.name}_publish_{channel.key}", spec, "send", channel,
                            self.schemas.message(result_type), config)

    def document(self, info: dict[str, Any]) -> dict[str, Any]:
        default = self.app.default_socket_provider
        if default is not None:
            self.server_keys(default.config)  # listed even when every application has its own
        elif not self.app.applications:
            self.server_keys(MemoryConfig())
        for spec in self.app.applications:
            self.add(spec)
        self.schemas.finish()
        if len(self.servers) == 1:  # every channel is on the one server: say it once
            for channel in self.channels.values():
                channel.pop("servers", None)
        components: dict[str, Any] = {
            "schemas": {**self.schemas.components, _ENVELOPE: _ENVELOPE_SCHEMA},
            "messages": self.schemas.messages,
        }
        if self.security:
            components["securitySchemes"] = self.security
        return {
            "asyncapi": ASYNCAPI_VERSION,
            "info": info,
            "servers": self.servers,
            "channels": self.channels,
            "operations": self.operations,
            "components": components,
        }


def asyncapi_document(
    app: DistributedApplication,
    *,
    title: str | None = None,
    version: str = "0.1.0",
    description: str | None = None,
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of *app* as JSON-compatible data (see the module's docstring).

    Args:
        app: the application.
        title: ``info.title`` (default: ``"trionet bus application"``).
        version: ``info.version``, the version of the application's API.
        description: ``info.description`` (CommonMark).
    """
    info: dict[str, Any] = {"title": title or "trionet bus application", "version": version}
    if description:
        info["description"] = description
    return _Builder(app).document(info)


def asyncapi_yaml(document: Mapping[str, Any]) -> str:
    """*document* as YAML (block style, keys in the document's order).

    Raises:
        ConfigurationError: if PyYAML is not installed.
    """
    try:
        yaml: Any = importlib.import_module("yaml")  # PyYAML: optional, and without stubs
    except ImportError:
        raise ConfigurationError(
            "YAML output needs PyYAML (pip install pyyaml); without --yaml the document is "
            "printed as JSON"
        ) from None
    text: str = yaml.safe_dump(dict(document), sort_keys=False, allow_unicode=True,
                               default_flow_style=False)
    return text
