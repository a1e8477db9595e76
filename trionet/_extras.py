"""Optional dependencies: the extra that installs each, and the error that names it.

Importing a subpackage whose optional dependency is missing raises a
:class:`ModuleNotFoundError` that says which extra to install (``pip install
'trionet[mqtt]'``), with the missing module as its ``name``; the command line prints that
message as its one-line report.
"""

from __future__ import annotations

__all__ = ["EXTRAS", "missing_extra"]

#: Optional dependencies (top-level module name) and the extra that installs each.
EXTRAS = {
    "hypercorn": "asgi",
    "trio_websocket": "asgi",
    "paho": "mqtt",
    "kafka": "kafka",
    "ziproto": "ziproto",
}


def missing_extra(feature: str, distribution: str, error: ImportError) -> ModuleNotFoundError:
    """The error to raise (``from error``) when ``feature`` cannot import its dependency.

    Args:
        feature: what needs it, e.g. ``"trionet.mqtt"``.
        distribution: the package on the index, e.g. ``"paho-mqtt"``.
        error: the failed import.
    """
    missing = error.name or ""
    top = missing.partition(".")[0]
    extra = EXTRAS.get(top, "all")
    if isinstance(error, ModuleNotFoundError) and top in EXTRAS:
        reason = f"{top!r} is not installed"
    else:  # installed but broken, or the wrong version
        reason = f"it cannot be imported ({error})"
    return ModuleNotFoundError(
        f"{feature} needs {distribution}: {reason}; "
        f"install it with: pip install 'trionet[{extra}]'",
        name=missing or None,
    )
