"""Public names of a package loaded from their modules when first asked for (PEP 562).

A package's ``__getattr__`` calls :func:`load` with its table of names: importing the package
then costs nothing of what those modules import (MPI, Parsl), and a name, once loaded, sits
in the package's namespace like any other.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import Any


def load(package: str, where: Mapping[str, str], name: str) -> Any:
    """``name`` from its module in ``where`` (absolute, or relative to ``package``), kept in
    ``package``'s namespace; ``AttributeError`` for a name the table does not hold."""
    module = where.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, package), name)
    setattr(sys.modules[package], name, value)
    return value
