"""The one template every rankpool launcher fills in.

A launcher turns the pool command into a single shell line that starts ONE MPI application
for the whole block::

    PROGRAM [SUBCOMMAND] SHAPE... [HOSTFILE] [OPTIONS...] [EXTRA] COMMAND

Only the data differ between launchers: a :class:`Syntax` names the program, spells the shape
(total ranks, ranks per node, nodes), the optional run-time hostfile, and the launcher-specific
options (each an :class:`Option`: its constructor argument, how it is checked, how it is
written). :class:`RankLauncher` holds the code: argument checks at construction, the shape
arithmetic, and the assembly of the line.

Rank layout: ``total ranks = nodes_per_block * ranks_per_node``. ``ranks_per_node`` counts every
MPI rank on a node; rank 0, the pool's manager, takes one slot on the first node, so a block has
``total - 1`` worker ranks and its first node one worker fewer than the others.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from parsl.launchers.base import Launcher

from .shape import BlockShape

log = logging.getLogger(__name__)

#: shell that runs a pool command which is not one plain simple command
SHELL = "/bin/sh"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class Kind(Enum):
    """How an option's value is checked, and written."""

    POSITIVE = "a positive integer"
    COUNT = "a non-negative integer"
    WORD = "a non-empty string without whitespace"
    FLAG = "True or False"


@dataclass(frozen=True)
class Option:
    """One launcher-specific option: constructor argument ``name``, written with ``template``.

    ``template`` holds ``{}`` where the value goes (nothing for a :attr:`Kind.FLAG`, which is
    written only when true). An option whose value is ``None`` (or ``False``) is left out.
    """

    name: str
    template: str
    kind: Kind


@dataclass(frozen=True)
class Syntax:
    """How one launcher program spells a launch; everything that differs between launchers.

    ``shape`` items are ``str.format`` templates over ``total``, ``per_node`` and ``nodes``.
    ``hostfile_flag``, when set, takes the file named by the launcher's ``hostfile_var``
    environment variable, tested at run time on the compute node (the job script runs there).
    """

    program: str
    shape: tuple[str, ...]
    options: tuple[Option, ...] = ()
    subcommand: str = ""
    hostfile_flag: str = ""
    label: str = ""
    #: words that keep the job running when one of its processes exits (docs/faults.md)
    survive: tuple[str, ...] = ()

    def option(self, name: str) -> Option | None:
        """The option called ``name``, or ``None`` when this program has no such option."""
        return next((o for o in self.options if o.name == name), None)


def check_positive(name: str, value: Any) -> int:
    """``value`` as a positive integer, or a ``ValueError``/``TypeError`` that names ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_option(option: Option, value: Any) -> Any:
    name, kind = option.name, option.kind
    if kind is Kind.FLAG:
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be {kind.value}, got {value!r}")
    elif kind is Kind.WORD:
        if not isinstance(value, str):
            raise TypeError(f"{name} must be {kind.value}, got {value!r}")
        if not value or any(c.isspace() for c in value):
            raise ValueError(f"{name} must be {kind.value}, got {value!r}")
    else:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be {kind.value}, got {value!r}")
        if value < (1 if kind is Kind.POSITIVE else 0):
            raise ValueError(f"{name} must be {kind.value}, got {value!r}")
    return value


def _normalize_extra(extra: str | Sequence[str]) -> str:
    """``extra`` as one line of shell text: a string stays as written, a sequence is quoted."""
    if isinstance(extra, str):
        text = extra.strip()
    elif isinstance(extra, Sequence) and all(isinstance(t, str) for t in extra):
        text = shlex.join(extra)
    else:
        raise TypeError(f"extra must be a string or a sequence of strings, got {extra!r}")
    if "\n" in text or "\r" in text:
        raise ValueError(f"extra must be one line of options, got {extra!r}")
    return text


def wrap_command(command: str) -> str:
    """The pool command as the launcher's trailing argument.

    A command that is one plain simple command in canonical ``shlex.join`` form (what rankpool
    builds) is appended as is; anything else (pipes, ``;``, redirections, variable assignments,
    expansions) runs under ``/bin/sh -c`` with the whole command quoted, so that the launcher
    starts every rank with the same, intact command line.
    """
    if not isinstance(command, str) or not command.strip():
        raise ValueError(f"command must be a non-empty shell command, got {command!r}")
    try:
        words = shlex.split(command)
    except ValueError:
        words = []
    if words and shlex.join(words) == command and "=" not in words[0]:
        return command
    return f"{SHELL} -c {shlex.quote(command)}"


class RankLauncher(Launcher):
    """A Parsl launcher that starts the pool as one MPI application of the whole block.

    Parsl providers call ``launcher(command, tasks_per_node, nodes_per_block, script_dir)``
    with the ``tasks_per_node`` the executor submitted the block with: rankpool's executors
    pass ``ranks_per_node``, so that the job holds the slots (see
    :mod:`rankpool.launchers.allocation`); Parsl's own executors pass 1. The block's shape
    comes from ``ranks_per_node``, set at construction or later by the executor (assigning the
    attribute checks it); ``tasks_per_node`` is ignored. With ``debug`` the job script echoes the
    launch line before running it, as Parsl's own launchers echo what they start.
    """

    #: the data that make a subclass a particular launcher (set per class, or per instance)
    syntax: Syntax

    hostfile_var: str | None = None

    def __init__(self, *, ranks_per_node: int | None, extra: str | Sequence[str], debug: bool,
                 executable: str | None, options: dict[str, Any],
                 syntax: Syntax | None = None) -> None:
        if not isinstance(debug, bool):
            raise TypeError(f"debug must be True or False, got {debug!r}")
        super().__init__(debug=debug)
        if syntax is not None:
            self.syntax = syntax
        self._ranks_per_node: int | None = None
        self.ranks_per_node = ranks_per_node
        self.extra = _normalize_extra(extra)
        if executable is not None and (not isinstance(executable, str) or not executable.strip()):
            raise ValueError(f"executable must be a program name or path, got {executable!r}")
        self.executable = executable
        for name, value in options.items():
            option = self.syntax.option(name)
            if value is not None and option is None:
                raise ValueError(f"{name} is not supported by {self.display_name}; "
                                 f"pass the program's own option through extra")
            if value is not None and option is not None:
                _check_option(option, value)
            setattr(self, name, value)

    # -- shape ------------------------------------------------------------------------------------
    @property
    def ranks_per_node(self) -> int | None:
        """MPI ranks per node, the manager included; ``None`` until someone sets it."""
        return self._ranks_per_node

    @ranks_per_node.setter
    def ranks_per_node(self, value: int | None) -> None:
        self._ranks_per_node = None if value is None else check_positive("ranks_per_node", value)

    def block_shape(self, nodes_per_block: int) -> BlockShape:
        """The ranks a block of ``nodes_per_block`` nodes holds; refuses a pool with no worker."""
        nodes = check_positive("nodes_per_block", nodes_per_block)
        rpn = self.ranks_per_node
        if rpn is None:
            raise ValueError(f"ranks_per_node is not set on {type(self).__name__}: pass "
                             f"{type(self).__name__}(ranks_per_node=N) or give the executor "
                             f"ranks_per_node")
        total = nodes * rpn
        if total < 2:
            raise ValueError(f"ranks_per_node={rpn} with nodes_per_block={nodes} makes a pool of "
                             f"{total} rank: rank 0 is the manager, so at least 2 are needed")
        largest = rpn if nodes > 1 else rpn - 1
        return BlockShape(nodes, rpn, total, total - 1, largest)

    # -- the command line -------------------------------------------------------------------------
    def launch_line(self, command: str, nodes_per_block: int) -> str:
        """The single shell line that starts ``command`` as one MPI application of the block."""
        shape = self.block_shape(nodes_per_block)
        syntax = self.syntax
        words = [shlex.quote(self.executable) if self.executable else syntax.program]
        if syntax.subcommand:
            words.append(syntax.subcommand)
        values = {"total": shape.total_ranks, "per_node": shape.ranks_per_node,
                  "nodes": shape.nodes}
        words += [item.format(**values) for item in syntax.shape]
        target = wrap_command(command)
        if target == command:  # Hydra kills ranks under a /bin/sh -c wrapper at their exit
            words += syntax.survive  # when it keeps the job alive (measured): not for those
        if syntax.hostfile_flag and self.hostfile_var:
            var = self.hostfile_var
            words.append(f'${{{var}:+{syntax.hostfile_flag} "${var}"}}')
        for option in syntax.options:
            value = getattr(self, option.name, None)
            if value is None or value is False:
                continue
            words.append(option.template if option.kind is Kind.FLAG
                         else option.template.format(shlex.quote(str(value))))
        if self.extra:
            words.append(self.extra)
        words.append(target)
        return " ".join(words)

    def __call__(self, command: str, tasks_per_node: int, nodes_per_block: int,
                 script_dir: str = "") -> str:
        """Wrap ``command`` for a provider's job script (Parsl's launcher interface)."""
        if tasks_per_node not in (1, self.ranks_per_node):
            log.warning("%s ignores tasks_per_node=%s: a block is one MPI application of "
                        "ranks_per_node=%s ranks per node", type(self).__name__, tasks_per_node,
                        self.ranks_per_node)
        line = self.launch_line(command, nodes_per_block)
        if self.debug:
            return f"echo {shlex.quote('rankpool launch: ' + line)}\n{line}"
        return line

    @property
    def display_name(self) -> str:
        """The class name, with the flavor when there is one: ``MpiexecLauncher (pals)``."""
        label = f" ({self.syntax.label})" if self.syntax.label else ""
        return f"{type(self).__name__}{label}"


def check_hostfile_var(value: str | None) -> str | None:
    """An environment variable name (or ``None``), checked so it can be expanded safely."""
    if value is not None and (not isinstance(value, str) or not _IDENTIFIER.match(value)):
        raise ValueError(f"hostfile_var must be an environment variable name or None, "
                         f"got {value!r}")
    return value
