"""The public API is what ``__all__`` says, everywhere (modelled on trio's export tests).

For every public module of trionet (no component of its dotted name starts with ``_``):

* every name in ``__all__`` exists, is public and is listed once;
* classes and functions it exports report a public module in ``__module__`` (the package that
  exports them, or the public module they come from, such as :mod:`trionet.errors`), so that
  reprs, tracebacks, pickling and the documentation show the name users import;
* a package (an ``__init__.py`` that re-exports) shows no other public names than ``__all__``
  and its public submodules: no helper it imported leaks into its namespace;
* every exported name is documented in ``docs/``: named by an ``auto*`` or ``py:*`` directive,
  or covered by an ``automodule`` with ``:members:`` (which documents the classes and functions
  whose ``__module__`` is that module, as autodoc does).
"""

from __future__ import annotations
import __future__

import importlib
import inspect
import pkgutil
import re
import types
from collections import Counter
from pathlib import Path

import pytest

import trionet

DOCS = Path(__file__).parents[2] / "docs"


def _public_module_names() -> list[str]:
    names = ["trionet"]
    for info in pkgutil.walk_packages(trionet.__path__, "trionet."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


PUBLIC_MODULES = _public_module_names()


def _is_private(dotted: str) -> bool:
    return any(part.startswith("_") for part in dotted.split("."))


def test_the_known_public_modules_are_found() -> None:
    expected = {
        "trionet", "trionet.aproto", "trionet.asgi", "trionet.bus", "trionet.bus.testing",
        "trionet.channel", "trionet.codecs", "trionet.errors", "trionet.framing",
        "trionet.kafka", "trionet.mail", "trionet.mqtt", "trionet.observability",
        "trionet.rpc", "trionet.testing",
    }
    assert expected <= set(PUBLIC_MODULES)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_names_exist_are_public_and_unique(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    missing = [symbol for symbol in exported if not hasattr(module, symbol)]
    assert not missing, f"{name}.__all__ names what {name} does not have: {missing}"
    private = [s for s in exported if s.startswith("_") and not s.startswith("__")]
    assert not private, f"{name}.__all__ names private names: {private}"
    duplicates = [symbol for symbol, count in Counter(exported).items() if count > 1]
    assert not duplicates, f"{name}.__all__ lists names twice: {duplicates}"


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_exported_classes_and_functions_report_a_public_module(name: str) -> None:
    module = importlib.import_module(name)
    wrong = {}
    for symbol in module.__all__:
        obj = getattr(module, symbol)
        if isinstance(obj, type) or inspect.isfunction(obj):
            if _is_private(obj.__module__) or not obj.__module__.startswith("trionet"):
                wrong[symbol] = obj.__module__
            elif obj.__module__ != name:
                # Re-exported from another public module: it must really be that module's.
                home = importlib.import_module(obj.__module__)
                if getattr(home, symbol, None) is not obj:
                    wrong[symbol] = obj.__module__
    assert not wrong, f"{name} exports names reporting another module: {wrong}"


def _submodules(module: types.ModuleType) -> set[str]:
    return {
        attr for attr, value in vars(module).items()
        if isinstance(value, types.ModuleType) and value.__name__ == f"{module.__name__}.{attr}"
    }


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_no_private_module_leaks(name: str) -> None:
    module = importlib.import_module(name)
    # No public name is bound to a private module (``trionet.bus._socket`` as ``socket``).
    leaked_modules = {
        attr: value.__name__ for attr, value in vars(module).items()
        if not attr.startswith("_") and isinstance(value, types.ModuleType)
        and value.__name__.startswith("trionet") and _is_private(value.__name__)
    }
    assert not leaked_modules, f"{name} shows private modules: {leaked_modules}"
    if not hasattr(module, "__path__"):
        return  # a plain module's own imports are its business
    public_submodules = {attr for attr in _submodules(module) if not attr.startswith("_")}
    shown = {
        attr for attr, value in vars(module).items()
        if attr.isidentifier() and not attr.startswith("_")  # not pytest's "@py_builtins"
        and value is not getattr(__future__, attr, None)
    }
    extra = shown - set(module.__all__) - public_submodules
    assert not extra, f"{name} shows public names that are not in __all__: {sorted(extra)}"


# -- documentation ---------------------------------------------------------------------------

_DIRECTIVE = re.compile(r"^(\s*)\.\. (?:py:)?(\w+)::\s*(\S*)\s*$")
_OBJECT_KINDS = {"class", "function", "exception", "data", "attribute", "method", "decorator"}
_NAME = re.compile(r"[A-Za-z_][\w.]*")


def _documented() -> tuple[set[str], dict[str, set[str] | None]]:
    """The fully qualified names that docs/ documents, and the modules it documents with
    ``automodule`` and ``:members:`` (each with the members listed, or None for all)."""
    named: set[str] = set()
    with_members: dict[str, set[str] | None] = {}
    for path in sorted(DOCS.rglob("*.rst")):
        current = ""
        lines = path.read_text(encoding="utf-8").splitlines()
        for index, line in enumerate(lines):
            match = _DIRECTIVE.match(line)
            if match is None:
                continue
            indent, kind, target = match.groups()
            if kind in ("currentmodule", "module"):
                current = target
                continue
            if not (kind.startswith("auto") or kind in _OBJECT_KINDS):
                continue
            targets = [target]
            options: dict[str, list[str]] = {}
            option = None
            for following in lines[index + 1:]:
                stripped = following.strip()
                if not following.startswith(indent + " ") or not stripped:
                    break
                if stripped.startswith(":"):
                    option, _, value = stripped[1:].partition(":")
                    options[option] = _NAME.findall(value)
                elif option is not None:
                    options[option] += _NAME.findall(stripped)  # a continued option value
                else:
                    targets.append(stripped)  # a directive naming several objects
            if kind == "automodule":
                current = target
                if "members" in options:
                    listed = options["members"]
                    with_members[target] = {f"{target}.{each}" for each in listed} or None
                    named.update(with_members[target] or ())
                continue
            for each in targets:
                qualified = each if each.startswith("trionet") or not current else (
                    f"{current}.{each}")
                named.add(qualified)
    return named, with_members


def _has_doc_comment(module: types.ModuleType, symbol: str) -> bool:
    """Whether *symbol* is assigned in *module*'s own source after a ``#:`` comment (what
    autodoc documents for data)."""
    source = inspect.getsource(module)
    return re.search(rf"^#:.*\n{re.escape(symbol)}\b", source, re.MULTILINE) is not None


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_exported_name_is_documented(name: str) -> None:
    named, with_members = _documented()
    module = importlib.import_module(name)
    undocumented = []
    for symbol in module.__all__:
        obj = getattr(module, symbol)
        candidates = {f"{name}.{symbol}"}
        home = getattr(obj, "__module__", None)
        if isinstance(obj, type) or inspect.isfunction(obj):
            candidates.add(f"{home}.{symbol}")
            if home in with_members and with_members[home] is None:
                continue  # autodoc documents it with its module's members
        elif with_members.get(name, "listed") is None and _has_doc_comment(module, symbol):
            continue
        if not candidates & named:
            undocumented.append(symbol)
    assert not undocumented, f"{name} exports names the docs do not describe: {undocumented}"
