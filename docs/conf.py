"""Sphinx configuration for rankpool's documentation (Markdown pages through myst-parser).

CI builds it with warnings as errors:

    .venv/bin/python -m sphinx -W -b html docs docs/_build/html -q

The API reference imports rankpool for real (autodoc). The package's top level is lazy, and
importing ``rankpool.frontends.comm_executor`` initialises MPI as a singleton process, which
needs no ``mpiexec``; nothing is mocked.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "src")))

from rankpool import __version__

project = "rankpool"
author = "the rankpool authors"
copyright = "the rankpool authors, BSD-3-Clause"
release = version = __version__

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3              # links such as parsl.md#monitoring

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"show-inheritance": True}

html_theme = "alabaster"
html_title = f"rankpool {release}"
html_static_path: list[str] = []

# The docstrings are written to be read in the source first: some show an example as a plain
# indented block after a paragraph, without reST's ``::``. Mark such blocks as literal, so
# they render as code instead of failing the build as stray indentation.
autodoc_inherit_docstrings = False    # concurrent.futures' own docstrings are not reST-clean


def _literal_blocks(app: object, what: str, name: str, obj: object, options: object,
                    lines: list[str]) -> None:
    """Insert ``::`` before an indented block (4+ columns deeper) that follows a paragraph."""
    def indent(line: str) -> int:
        return len(line) - len(line.lstrip())

    i = 0
    while i + 2 < len(lines):
        para, blank, block = lines[i], lines[i + 1], lines[i + 2]
        if (para.strip() and not blank.strip() and block.strip()
                and indent(block) >= indent(para) + 4
                and not para.rstrip().endswith("::") and not para.lstrip().startswith("..")):
            lines[i + 2:i + 2] = [" " * indent(para) + "::", ""]
            i += 2
        i += 1


def setup(app: object) -> None:
    app.connect("autodoc-process-docstring", _literal_blocks)  # type: ignore[attr-defined]
