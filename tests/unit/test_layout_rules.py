"""The package's layout rules, read from its source with ``ast`` (nothing of it is imported).

* **The interchange and the pool never import a front-end.** No module under
  ``rankpool/interchange/`` or ``rankpool/mpi_pool/`` imports ``rankpool.frontends``: not by
  absolute or relative import, and not through the rankpool modules it imports in turn (an
  import inside a function, or under ``TYPE_CHECKING``, counts as well: the first loads the
  front-end into that process when it runs, the second ties the layer to it all the same).
  Importing ``rankpool.x.y`` runs the ``__init__`` of ``rankpool`` and ``rankpool.x`` too, so
  those count as imported. One more test imports every such module in a fresh interpreter and
  looks at ``sys.modules``, which also catches imports made by name at run time.
* **No module uses another module's private names.** A private name (``_x``; ``__x__`` is
  not private) belongs to the module that defines it: ``from rankpool.m import _x``,
  ``from . import _x`` and ``m._x`` on an imported rankpool module are all refused. A private
  *module* (``_m.py``, or a package ``_p/``) belongs to its package: modules of that package
  and of its subpackages may import it (``rankpool._version`` serves the whole package), no
  other module may. A name that two modules share is public in the module that defines it.

* **Every ``# type: ignore[code]`` says why**, in a comment after it on the same line or on
  the line above: mypy checks ``src/`` (``pyproject.toml``), and a silenced error whose reason
  nobody wrote down cannot be judged later.

* **Only the Parsl front-end loads Parsl.** ``Executor``, ``CommExecutor``, the interchange and
  the pool, imported in a fresh interpreter, load no ``parsl`` module (looked at in
  ``sys.modules``, as above).

Each rule is first checked on a small package written to a temporary directory, with one bad
line, so the checker is shown to catch what it is meant to catch.
"""

from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
import textwrap
import tokenize
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
#: the processes that must not load a front-end, and the front-ends' package
BACK_ENDS = ("rankpool.interchange", "rankpool.mpi_pool")
FRONT_ENDS = "rankpool.frontends"


@dataclass(frozen=True)
class Module:
    name: str  # dotted: rankpool.shm.run; a package's __init__ is the package's name
    path: Path
    where: str  # the path under the source root, for messages
    is_package: bool


@dataclass(frozen=True)
class Use:
    """One module's use of another module or of a name in it."""

    user: Module
    line: int
    module: str  # the module used (dotted, absolute)
    name: str | None = None  # the name taken from it (not a module), if any


def modules(src: Path, package: str = "rankpool") -> dict[str, Module]:
    found = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        found[name] = Module(name, path, path.relative_to(src).as_posix(), is_package)
    return found


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def absolute(module: Module, node: ast.ImportFrom) -> str:
    """The module ``from ... import`` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    base = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def uses(module: Module, known: dict[str, Module], package: str = "rankpool") -> Iterator[Use]:
    """Every rankpool module and name ``module`` imports, and every private attribute it reads
    from an imported rankpool module (``m._x``)."""
    tree = ast.parse(module.path.read_text(), str(module.path))
    bound: dict[str, str] = {}  # local name -> the rankpool module it stands for

    def ours(dotted: str) -> bool:
        return dotted == package or dotted.startswith(package + ".")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if ours(alias.name):
                    yield Use(module, node.lineno, alias.name)
                    local = alias.asname or alias.name.split(".")[0]
                    bound[local] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            source = absolute(module, node)
            if not ours(source):
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in known:  # a submodule
                    yield Use(module, node.lineno, sub)
                    bound[alias.asname or alias.name] = sub
                else:
                    yield Use(module, node.lineno, source, alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain = dotted_chain(node.value)
            if chain and chain[0] in bound:
                target = ".".join([bound[chain[0]], *chain[1:]])
                if target in known and target != module.name:
                    sub = f"{target}.{node.attr}"
                    yield Use(module, node.lineno, sub) if sub in known \
                        else Use(module, node.lineno, target, node.attr)


def dotted_chain(node: ast.expr) -> list[str]:
    """``a.b.c`` as ``["a", "b", "c"]``; ``[]`` for anything but names and attributes."""
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return []
    return [node.id, *reversed(names)]


def loaded(dotted: str, known: dict[str, Module]) -> list[str]:
    """The rankpool modules importing ``dotted`` runs: its packages' ``__init__`` and itself."""
    parts = dotted.split(".")
    return [m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in known]


def privacy_violations(known: dict[str, Module]) -> list[str]:
    found = []
    for module in known.values():
        for use in uses(module, known):
            where = f"{module.where}:{use.line}"
            if use.module == module.name:
                continue  # its own names
            if use.name is not None and is_private(use.name):
                found.append(f"{where}: {module.name} uses {use.module}.{use.name}, a private "
                             f"name of another module")
            parts = use.module.split(".")
            for i, part in enumerate(parts):
                owner = ".".join(parts[:i])  # the package a private module belongs to
                if is_private(part) and not (module.name == owner
                                             or module.name.startswith(owner + ".")):
                    found.append(f"{where}: {module.name} imports {use.module}, private to "
                                 f"{owner}")
    return found


def front_end_imports(known: dict[str, Module]) -> list[str]:
    """For each back-end module that reaches a front-end module, the chain of imports."""
    graph: dict[str, list[tuple[str, int]]] = {}
    for module in known.values():
        graph[module.name] = [(m, use.line) for use in uses(module, known)
                              for m in loaded(use.module, known)]
    found = []
    for start in sorted(known):
        if not start.startswith(tuple(f"{b}." for b in BACK_ENDS) + BACK_ENDS):
            continue
        came_from: dict[str, tuple[str, int] | None] = {start: None}
        todo = deque([start])
        while todo:
            current = todo.popleft()
            if current == FRONT_ENDS or current.startswith(FRONT_ENDS + "."):
                chain, step = [current], came_from[current]
                while step is not None:
                    chain.append(f"{step[0]}:{step[1]}")
                    step = came_from[step[0]]
                found.append(" -> ".join(reversed(chain)))
                break
            for target, line in graph.get(current, []):
                if target not in came_from:
                    came_from[target] = (current, line)
                    todo.append(target)
    return found


def unexplained_ignores(known: dict[str, Module]) -> list[str]:
    """``# type: ignore`` comments with no reason beside them or on the line above."""
    found = []
    for module in known.values():
        text = module.path.read_text()
        lines = text.split("\n")
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type != tokenize.COMMENT or not token.string.startswith("# type: ignore"):
                continue
            row = token.start[0]
            after = token.string.partition("]")[2].strip() if "[" in token.string else ""
            above = lines[row - 2].strip() if row > 1 else ""
            if not token.string.startswith("# type: ignore["):
                found.append(f"{module.where}:{row}: a bare type: ignore (name the error code)")
            elif not after.startswith("#") and not above.startswith("#"):
                found.append(f"{module.where}:{row}: {token.string} says not why")
    return found


# -- the checker, on a package written for it ------------------------------------------------------

def write_package(root: Path, files: dict[str, str]) -> dict[str, Module]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return modules(root)


SOUND = {
    "rankpool/__init__.py": "from ._version import __version__\n",
    "rankpool/_version.py": "__version__ = '0'\n",
    "rankpool/shared.py": "PUBLIC = 1\n_PRIVATE = 2\n",
    "rankpool/frontends/__init__.py": "",
    "rankpool/frontends/client.py": "from ..shared import PUBLIC\n",
    "rankpool/interchange/__init__.py": "",
    "rankpool/interchange/loop.py": """\
        from rankpool import shared
        from .. import _version
        from ..shared import PUBLIC
        _OWN = 3
        print(shared.PUBLIC, _OWN)
        """,
    "rankpool/mpi_pool/__init__.py": "",
    "rankpool/mpi_pool/_inner.py": "X = 1\n",
    "rankpool/mpi_pool/rank.py": "from ._inner import X\n",
}


def test_the_checker_passes_a_sound_package(tmp_path: Path) -> None:
    known = write_package(tmp_path, {
        **SOUND,
        "rankpool/typed.py": """\
            X: int = "a"  # type: ignore[assignment]  # the reason
            # the reason, on the line above
            Y: int = "b"  # type: ignore[assignment]
            """,
    })
    assert privacy_violations(known) == []
    assert front_end_imports(known) == []
    assert unexplained_ignores(known) == []


def test_the_checker_finds_type_ignores_without_a_reason(tmp_path: Path) -> None:
    known = write_package(tmp_path, {
        **SOUND,
        "rankpool/typed.py": """\
            X: int = "a"  # type: ignore[assignment]
            Y: int = "b"  # type: ignore
            """,
    })
    assert unexplained_ignores(known) == [
        "rankpool/typed.py:1: # type: ignore[assignment] says not why",
        "rankpool/typed.py:2: a bare type: ignore (name the error code)",
    ]


def test_the_checker_finds_a_front_end_import_through_another_module(tmp_path: Path) -> None:
    known = write_package(tmp_path, {
        **SOUND,
        "rankpool/shared.py": "PUBLIC = 1\n",
        "rankpool/helper.py": "def late():\n    from .frontends import client\n",
        "rankpool/mpi_pool/rank.py": "from .. import helper\n",
        "rankpool/interchange/loop.py": "import rankpool.frontends.client as c\n",
    })
    assert front_end_imports(known) == [
        "rankpool.interchange.loop:1 -> rankpool.frontends",
        "rankpool.mpi_pool.rank:1 -> rankpool.helper:2 -> rankpool.frontends",
    ]


def test_the_checker_finds_private_names_and_modules_used_elsewhere(tmp_path: Path) -> None:
    known = write_package(tmp_path, {
        **SOUND,
        "rankpool/interchange/loop.py": """\
            from rankpool.shared import _PRIVATE
            from rankpool import shared
            from ..mpi_pool._inner import X
            print(shared._PRIVATE)
            """,
    })
    assert sorted(privacy_violations(known)) == [
        "rankpool/interchange/loop.py:1: rankpool.interchange.loop uses "
        "rankpool.shared._PRIVATE, a private name of another module",
        "rankpool/interchange/loop.py:3: rankpool.interchange.loop imports "
        "rankpool.mpi_pool._inner, private to rankpool.mpi_pool",
        "rankpool/interchange/loop.py:4: rankpool.interchange.loop uses "
        "rankpool.shared._PRIVATE, a private name of another module",
    ]


# -- the rules, on rankpool ------------------------------------------------------------------------

def test_the_source_is_where_the_rules_look() -> None:
    known = modules(SRC)
    assert len(known) > 50
    for part in (*BACK_ENDS, FRONT_ENDS):
        assert sum(name.startswith(part + ".") for name in known) >= 3, part


def test_the_interchange_and_the_pool_import_no_front_end() -> None:
    assert front_end_imports(modules(SRC)) == []


def test_no_module_uses_another_modules_private_names() -> None:
    assert privacy_violations(modules(SRC)) == []


def test_the_interchange_and_the_pool_load_no_front_end_when_imported() -> None:
    """Every back-end module imported in a fresh interpreter (MPI left uninitialised): no
    ``rankpool.frontends`` module is loaded, whether imported by statement or by name."""
    names = sorted(n for n in modules(SRC) if n.startswith(BACK_ENDS))
    program = ("import importlib, json, sys\n"
               "import mpi4py\n"
               "mpi4py.rc.initialize = False\n"
               f"for name in {names!r}:\n"
               "    importlib.import_module(name)\n"
               "print(json.dumps(sorted(m for m in sys.modules\n"
               f"                       if m.startswith({FRONT_ENDS!r}))))\n")
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == []


def test_the_front_ends_without_parsl_load_no_parsl() -> None:
    """``Executor`` and ``CommExecutor``, and the interchange and the pool, run without Parsl:
    importing them in a fresh interpreter loads no ``parsl`` module (Parsl's import takes a
    second and more, in every script that uses them). ``ExtremeScaleExecutor`` and a Parsl
    provider given to ``Executor`` load it."""
    program = ("import json, sys\n"
               "import mpi4py\n"
               "mpi4py.rc.initialize = False\n"
               "from rankpool import CommExecutor, Executor\n"
               "import rankpool.interchange.process, rankpool.mpi_pool.program\n"
               "import rankpool.launchers.shape, rankpool.launchers.local\n"
               "import rankpool.launchers.provider_blocks, rankpool.cli\n"
               "before = sorted(m for m in sys.modules if m.split('.')[0] == 'parsl')\n"
               "from rankpool import ExtremeScaleExecutor\n"
               "print(json.dumps([before, 'parsl' in sys.modules]))\n")
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == [[], True]


def test_every_type_ignore_says_why() -> None:
    assert unexplained_ignores(modules(SRC)) == []
