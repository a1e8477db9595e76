"""The ``[AsyncAPY]`` configuration file: INI (the original's) and TOML."""

from __future__ import annotations

import configparser
import logging
import ssl
from pathlib import Path

import pytest
import trio
import trustme
from aproto_helpers import RawConn

from trionet.aproto import HandlerClient, Packet, Server, read_config
from trionet.errors import ConfigurationError

ORIGINAL_INI = """\
[AsyncAPY]
addr = 127.0.0.1
port = 1500
encoding = json
header_size = 4
byteorder = big
buf = 1024
logging_level = 10
timeout = 15
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_the_originals_config_file(tmp_path: Path) -> None:
    server = Server(config=write(tmp_path, "config.ini", ORIGINAL_INI))
    assert (server.addr, server.port, server.header_size, server.byteorder) == (
        "127.0.0.1",
        1500,
        4,
        "big",
    )
    assert (server.buf, server.logging_level, server.timeout, server.encoding) == (
        1024,
        10,
        15.0,
        "json",
    )


def test_config_values_override_arguments(tmp_path: Path) -> None:
    path = write(tmp_path, "c.ini", "[AsyncAPY]\nheader_size = 2\n")
    server = Server(header_size=8, byteorder="little", config=path)
    assert server.header_size == 2
    assert server.byteorder == "little"


def test_negative_ints_are_ints(tmp_path: Path) -> None:
    options = read_config(write(tmp_path, "c.ini", "[AsyncAPY]\nlogging_level = -5\n"))
    assert options == {"logging_level": -5}
    with pytest.raises(ConfigurationError, match="session_limit must be >= 0, not -1"):
        read_config(write(tmp_path, "d.ini", "[AsyncAPY]\nsession_limit = -1\n"))


def test_typed_values_and_extensions(tmp_path: Path) -> None:
    text = (
        "[AsyncAPY]\nkeep_alive = no\nsession_timeout = 2.5\ntimeout = none\n"
        "max_packet_size = 4096\nlogging_level = WARNING\nsession_limit = 3\n"
        "shutdown_timeout = 1\n"
    )
    server = Server(config=write(tmp_path, "c.ini", text))
    assert server.keep_alive is False
    assert server.session_timeout == 2.5
    assert server.timeout is None
    assert server.max_packet_size == 4096
    assert server.logging_level == logging.WARNING
    assert server.session_limit == 3
    assert server.shutdown_timeout == 1.0


def test_toml(tmp_path: Path) -> None:
    text = (
        '[AsyncAPY]\naddr = "::1"\nport = 0\nheader_size = 8\nbyteorder = "little"\n'
        "timeout = 2.5\nkeep_alive = false\nsession_limit = 0\n"
    )
    options = read_config(write(tmp_path, "server.toml", text))
    assert options == {
        "addr": "::1",
        "port": 0,
        "header_size": 8,
        "byteorder": "little",
        "timeout": 2.5,
        "keep_alive": False,
        "session_limit": 0,
    }
    with pytest.raises(ConfigurationError, match="port must be a TOML number"):
        read_config(write(tmp_path, "bad.toml", '[AsyncAPY]\nport = "80"\n'))
    with pytest.raises(ConfigurationError, match="port must be an integer"):
        read_config(write(tmp_path, "bad1.toml", "[AsyncAPY]\nport = 80.5\n"))
    with pytest.raises(ConfigurationError, match="keep_alive"):
        read_config(write(tmp_path, "bad2.toml", "[AsyncAPY]\nkeep_alive = 1\n"))


@pytest.mark.parametrize("suffix", ["ini", "toml"])
def test_unknown_keys_are_named(tmp_path: Path, suffix: str) -> None:
    text = "[AsyncAPY]\nport = 1\ntimout = 5\n"
    with pytest.raises(ConfigurationError, match="unknown option 'timout'"):
        read_config(write(tmp_path, f"c.{suffix}", text))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[Other]\nport = 1\n", r"no \[AsyncAPY\] section"),
        ("[AsyncAPY]\nport = eighty\n", "port must be an integer"),
        ("[AsyncAPY]\nport = 99999\n", "port must be from 0 to 65535"),
        ("[AsyncAPY]\nheader_size = 0\n", "header_size"),
        ("[AsyncAPY]\nbyteorder = middle\n", "byteorder"),
        ("[AsyncAPY]\ntimeout = -1\n", "timeout must be > 0"),
        ("[AsyncAPY]\nencoding = xml\n", "encoding"),
        ("[AsyncAPY]\nlogging_level = LOUD\n", "logging_level"),
        ("[AsyncAPY]\ncertfile = /nonexistent.pem\n", "no such file"),
        ("not an ini file", "cannot parse"),
    ],
)
def test_bad_values(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Server(config=write(tmp_path, "c.ini", text))


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        read_config(tmp_path / "missing.ini")
    with pytest.raises(ConfigurationError, match="cannot parse"):
        read_config(write(tmp_path, "x.toml", "[AsyncAPY\n"))
    with pytest.raises(ConfigurationError, match="no \\[AsyncAPY\\] table"):
        read_config(write(tmp_path, "y.toml", "port = 1\n"))


def test_custom_parser_and_default_section(tmp_path: Path) -> None:
    parser = configparser.ConfigParser(default_section="common")
    text = "[common]\ntimeout = 7\nother_app_key = 1\n[AsyncAPY]\nport = 9000\n"
    options = read_config(write(tmp_path, "c.ini", text), parser)
    assert options == {"timeout": 7.0, "port": 9000}
    server = Server(config=str(tmp_path / "c.ini"), cfg_parser=configparser.ConfigParser())
    assert server.port == 9000


async def test_tls_from_certfile_and_keyfile(tmp_path: Path) -> None:
    from trionet.aproto import AsyncClient

    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert = tmp_path / "cert.pem"
    key = tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    for pem in leaf.cert_chain_pems[1:]:
        pem.write_to_path(str(cert), append=True)
    leaf.private_key_pem.write_to_path(str(key))
    text = f"[AsyncAPY]\nport = 0\ncertfile = {cert}\nkeyfile = {key}\nlogging_level = 100\n"
    server = Server(config=write(tmp_path, "tls.ini", text))
    assert isinstance(server.tls, ssl.SSLContext)

    @server.add_handler()
    async def echo(client: HandlerClient, packet: Packet) -> None:
        await client.send(packet)

    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        async with AsyncClient(tls=context) as client:
            await client.connect("127.0.0.1", port)
            assert await client.request({"tls": True}) == {"tls": True}
        plain = await RawConn.open(port)  # a plain-TCP client cannot talk to it
        await plain.send_fields({"x": 1})
        with pytest.raises(EOFError):
            await plain.reply()
        await plain.aclose()
        nursery.cancel_scope.cancel()
    with pytest.raises(ConfigurationError, match="keyfile is set but certfile is not"):
        Server(config=write(tmp_path, "k.ini", f"[AsyncAPY]\nkeyfile = {key}\n"))
