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
    "sphinx_copybutton",
]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# No network at build time: intersphinx inventories are not fetched, references to trio and the
# standard library stay plain text rather than failing the build.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

# furo uses the window's width (the examples are up to 100 columns wide) and has a light and a
# dark scheme; sphinx-copybutton puts a copy button on every code block. Both come with the
# ``docs`` extra: ``pip install -e '.[docs]'``.
html_theme = "furo"
html_title = "trionet"
html_static_path = ["_static"]
html_css_files = ["trionet.css"]  # a text column wide enough for 100-column examples
# The copy button leaves out shell prompts and the output after them in console examples.
copybutton_prompt_text = r"\$ |>>> |\.\.\. "
copybutton_prompt_is_regexp = True
copybutton_only_copy_prompt_lines = True
exclude_patterns = ["_build", "examples/README.rst"]
suppress_warnings = ["ref.python"]
