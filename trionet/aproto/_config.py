"""Server options: validation, and the ``[AsyncAPY]`` configuration file (INI or TOML).

The INI form is the original's: a ``[AsyncAPY]`` section of ``key = value`` lines, read with
:class:`configparser.ConfigParser` (or the parser you pass). Values are converted by key, so
``-5`` is an int (the original's ``isdigit()`` test left negative numbers as strings). A file
whose name ends in ``.toml`` is read with :mod:`tomllib`; the same keys go in an ``[AsyncAPY]``
table, with TOML's own types. Unknown keys are an error that names the key.

Keys: ``addr``, ``port``, ``buf``, ``logging_level`` (an int or a level name), ``console_format``,
``datefmt``, ``timeout``, ``header_size``, ``byteorder``, ``session_limit``, ``encoding`` (the
original's keys), plus ``keep_alive``, ``session_timeout``, ``max_packet_size``,
``shutdown_timeout``, ``max_pending_bytes``, ``certfile`` and ``keyfile`` (a certificate chain and
its key: the server then speaks TLS). ``timeout``, ``session_timeout`` and ``max_pending_bytes``
accept ``none`` to disable them.

The same keys can come from environment variables (:func:`read_env`): the key in capitals
after a prefix, ``ASYNCAPY_PORT=9000``, with the INI form's text values. A variable with the
prefix that is not a known key is an error, so a misspelt name does not pass unnoticed.
"""

from __future__ import annotations

import configparser
import logging
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from typing import Any, Final

from ..errors import ConfigurationError

__all__ = ["DEFAULT_ENV_PREFIX", "SECTION", "read_config", "read_env", "validate_option"]

#: The section (INI) or table (TOML) the options live in.
SECTION: Final = "AsyncAPY"
#: The prefix of the environment variables :func:`read_env` reads by default.
DEFAULT_ENV_PREFIX: Final = "ASYNCAPY_"
#: The longest environment value read (a path or a log format is far shorter).
_MAX_ENV_VALUE: Final = 4096

_NONE_WORDS: Final = frozenset({"none", "off", "null", ""})
_TRUE_WORDS: Final = frozenset({"1", "yes", "true", "on"})
_FALSE_WORDS: Final = frozenset({"0", "no", "false", "off"})


def _int(name: str, value: object, *, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip(), 10)
        except ValueError:
            raise ConfigurationError(f"{name} must be an integer, not {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an integer, not {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ConfigurationError(f"{name} must be {bounds}, not {value}")
    return value


def _positive_or_none(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _NONE_WORDS:
            return None
        try:
            value = float(text)
        except ValueError:
            raise ConfigurationError(
                f"{name} must be a number of seconds or 'none', not {value!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds or None, not {value!r}")
    if not value > 0 or math.isnan(value):
        raise ConfigurationError(f"{name} must be > 0 (or None to disable it), not {value}")
    return float(value)


def _positive(name: str, value: object) -> float:
    result = _positive_or_none(name, value)
    if result is None:
        raise ConfigurationError(f"{name} must be a positive number of seconds")
    return result


def _int_or_none(name: str, value: object, *, low: int) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
        return None
    return _int(name, value, low=low)


def _str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string, not {value!r}")
    return value


def _choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.strip().lower() not in choices:
        raise ConfigurationError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value.strip().lower()


def _bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE_WORDS:
            return True
        if text in _FALSE_WORDS:
            return False
    raise ConfigurationError(f"{name} must be a boolean (true/false), not {value!r}")


def _level(name: str, value: object) -> int:
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("+-").isdigit():
            return _int(name, text)
        level = logging.getLevelName(text.upper())
        if isinstance(level, int):
            return level
        raise ConfigurationError(f"{name} must be an int or a logging level name, not {value!r}")
    return _int(name, value)


def _path(name: str, value: object) -> str:
    text = _str(name, value)
    if not os.path.isfile(text):
        raise ConfigurationError(f"{name}: no such file {text!r}")
    return text


_VALIDATORS: Final[dict[str, Callable[[str, object], Any]]] = {
    "addr": _str,
    "port": lambda n, v: _int(n, v, low=0, high=65535),
    "buf": lambda n, v: _int(n, v, low=1),
    "logging_level": _level,
    "console_format": _str,
    "datefmt": _str,
    "timeout": _positive_or_none,
    "header_size": lambda n, v: _int(n, v, low=1, high=8),
    "byteorder": lambda n, v: _choice(n, v, ("big", "little")),
    "session_limit": lambda n, v: _int(n, v, low=0),
    "encoding": lambda n, v: _choice(n, v, ("json", "ziproto")),
    "keep_alive": _bool,
    "session_timeout": _positive_or_none,
    "max_packet_size": lambda n, v: _int(n, v, low=2),
    "max_pending_bytes": lambda n, v: _int_or_none(n, v, low=1),
    "shutdown_timeout": _positive,
    "certfile": _path,
    "keyfile": _path,
}

# Keys whose TOML values must not be strings (INI values are always strings).
_TYPED_KEYS: Final = frozenset(
    {"port", "buf", "header_size", "session_limit", "max_packet_size", "keep_alive",
     "shutdown_timeout"}
)

#: The keys a configuration file may set.
KNOWN_KEYS: Final = frozenset(_VALIDATORS)


def validate_option(name: str, value: object) -> Any:
    """Check and convert one option (a str from an INI file, or a typed value).

    Raises:
        ConfigurationError: unknown option, or a value of the wrong type or range.
    """
    try:
        validator = _VALIDATORS[name]
    except KeyError:
        known = ", ".join(sorted(_VALIDATORS))
        raise ConfigurationError(f"unknown option {name!r}; known options: {known}") from None
    return validator(name, value)


def read_config(
    path: str | os.PathLike[str], parser: configparser.RawConfigParser | None = None
) -> dict[str, Any]:
    """Read the ``[AsyncAPY]`` options from an INI file, or a TOML file (``.toml``).

    Args:
        path: the file.
        parser: a configparser object to use for INI files (the original's ``cfg_parser``);
            default a fresh ``ConfigParser(interpolation=None)``.

    Returns:
        The validated options, converted to their types.

    Raises:
        ConfigurationError: the file cannot be read or parsed, has no ``[AsyncAPY]`` section,
            or has an unknown key (named in the message) or a bad value.
    """
    filename = os.fspath(path)
    raw: dict[str, object]
    try:
        if filename.lower().endswith(".toml"):
            with open(filename, "rb") as fh:
                document = tomllib.load(fh)
            table = document.get(SECTION)
            if not isinstance(table, dict):
                raise ConfigurationError(f"{filename}: no [{SECTION}] table")
            raw = dict(table)
            for key in _TYPED_KEYS.intersection(raw):
                if isinstance(raw[key], str):
                    raise ConfigurationError(
                        f"{filename}: {key} must be a TOML number or boolean, not a string"
                    )
        else:
            cfg = parser if parser is not None else configparser.ConfigParser(interpolation=None)
            with open(filename, encoding="utf-8") as fh:
                cfg.read_file(fh)
            if not cfg.has_section(SECTION):
                raise ConfigurationError(f"{filename}: no [{SECTION}] section")
            # Keys from [DEFAULT] show up in every section: there, only known keys apply
            # (the others belong to other sections); in [AsyncAPY], every key must be known.
            defaults = cfg.defaults()
            raw = {
                key: cfg.get(SECTION, key, raw=True)
                for key in cfg.options(SECTION)
                if key not in defaults or key in _VALIDATORS
            }
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {filename!r}: {exc}") from exc
    except (configparser.Error, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot parse config file {filename!r}: {exc}") from exc
    options: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            options[key] = validate_option(key, value)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{filename}: {exc}") from None
    return options


def read_env(
    environ: Mapping[str, str] | None = None, prefix: str = DEFAULT_ENV_PREFIX
) -> dict[str, Any]:
    """Read options from environment variables: ``{prefix}{KEY}`` (``ASYNCAPY_PORT=9000``).

    Values are text, converted as in an INI file (``none`` disables a timeout, ``yes``/``no``
    for booleans, a level name for ``logging_level``).

    Args:
        environ: the variables (default :data:`os.environ`).
        prefix: the prefix (default ``"ASYNCAPY_"``); matched case-sensitively.

    Returns:
        The validated options found, converted to their types (empty if none is set).

    Raises:
        ConfigurationError: a variable with the prefix names no known key, or has a bad
            value (the message names the variable).
    """
    if not prefix:
        raise ConfigurationError("the environment prefix must not be empty")
    variables = os.environ if environ is None else environ
    options: dict[str, Any] = {}
    for name, value in variables.items():
        if not name.startswith(prefix):
            continue
        key = name[len(prefix):].lower()
        if key not in _VALIDATORS:
            known = ", ".join(prefix + k.upper() for k in sorted(_VALIDATORS))
            raise ConfigurationError(f"unknown environment variable {name}; known: {known}")
        if len(value) > _MAX_ENV_VALUE:
            raise ConfigurationError(f"{name}: the value is longer than {_MAX_ENV_VALUE}")
        try:
            options[key] = validate_option(key, value)
        except ConfigurationError as exc:
            raise ConfigurationError(f"environment variable {name}: {exc}") from None
    return options
