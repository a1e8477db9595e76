"""Sphinx configuration for trionet's documentation (built with warnings as errors)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "trionet"
author = "trionet developers"
copyright = "2026, trionet developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# No network at build time: intersphinx inventories are not fetched, references to trio and the
# standard library stay plain text rather than failing the build.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

html_theme = "alabaster"
html_static_path: list[str] = []
exclude_patterns = ["_build", "examples/README.rst"]
suppress_warnings = ["ref.python"]
