"""Serialization of functions, data and errors.

Functions are pickled with dill (by reference when importable, by value otherwise) once per
function and named by a digest afterwards; the loading side keeps a bounded cache by digest,
so a stream of tasks for one function pays dill's cost once. Data (arguments and results) is
pickled with protocol 5: large buffers such as NumPy arrays go *out of band* as separate
frames, which ZeroMQ and MPI move without copying them into the pickle. Between processes of
one host, buffers of at least ``shm.THRESHOLD`` bytes may instead travel through the
shared-memory plane of :mod:`rankpool.shm.arena`: the frame then carries a short descriptor, which
:func:`loads_data` resolves into the buffer (borrowed in place where this process is its only
reader, else a copy), so callers see the same values either way.

A function's value is fixed the first time it is serialized: globals it captures by value
are those of that moment.
"""

from __future__ import annotations

import hashlib
import pickle
import socket
import threading
import traceback
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import BuiltinFunctionType, ModuleType
from typing import Any

import dill

from ..errors import RemoteTaskError, RemoteTraceback, SerializationError, TaskExit
from ..protocol.wire import Buffer
from ..shm.reader import resolve as resolve_shared

#: buffers at least this large travel out of band; smaller ones stay inside the pickle
OOB_THRESHOLD = 64 * 1024



class _LRU(OrderedDict[Any, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        if len(self) > self.size:
            self.popitem(last=False)


class FunctionPickler:
    """Submit side: serialize each function once and remember its digest.

    The cache never keeps a callable alive: an entry is keyed by the ids of the objects that
    make the callable (a bound method's object and function, or the callable itself) and
    holds only weak references to them; an entry whose objects died is dropped. A callable
    that cannot be referenced weakly is serialized every time, except a plain builtin
    function, which its module keeps alive anyway.
    """

    def __init__(self, size: int = 1024) -> None:
        self._cache = _LRU(size)
        self._dead: list[tuple[int, ...]] = []  # keys whose objects died (weakref callbacks)
        #: the last plain callable served (a weak reference) and its entry: floods of one
        #: function skip the key, the lookup and the LRU bookkeeping
        self._last: tuple[Any, tuple[bytes, bytes]] | None = None

    def dumps(self, fn: Callable[..., Any]) -> tuple[bytes, bytes]:
        """Return ``(digest, payload)`` for ``fn``."""
        last = self._last
        if last is not None and last[0]() is fn:
            return last[1]
        entry = self._dumps(fn)
        if len(_parts(fn)) == 1:
            try:
                self._last = (weakref.ref(fn), entry)
            except TypeError:  # not weakly referenceable
                self._last = None
        return entry

    def _dumps(self, fn: Callable[..., Any]) -> tuple[bytes, bytes]:
        while self._dead:
            self._cache.pop(self._dead.pop(), None)
        parts = _parts(fn)
        key = tuple(map(id, parts))
        hit = self._cache.get(key)
        if hit is not None and all(ref() is part for ref, part in zip(hit[0], parts)):
            self._cache.move_to_end(key)
            entry: tuple[bytes, bytes] = hit[1]
            return entry
        try:
            payload = dill.dumps(fn, protocol=5, recurse=True)
        except Exception as exc:
            raise SerializationError(f"function {getattr(fn, '__qualname__', fn)!r}", exc,
                                     culprit(_function_parts(fn))) from None
        entry = (hashlib.blake2b(payload, digest_size=16).digest(), payload)
        refs = self._refs(key, parts)
        if refs is not None:
            self._cache.put(key, (refs, entry))
        return entry

    def _refs(self, key: tuple[int, ...], parts: tuple[Any, ...]) -> tuple[Any, ...] | None:
        dead = self._dead

        def forget(_: Any) -> None:
            dead.append(key)
        try:
            return tuple(weakref.ref(p, forget) for p in parts)
        except TypeError:  # not weakly referenceable
            fn = parts[0]
            if isinstance(fn, BuiltinFunctionType) and isinstance(
                    getattr(fn, "__self__", None), (ModuleType, type(None))):
                return (lambda: fn,)  # lives as long as its module
            return None


def _parts(fn: Callable[..., Any]) -> tuple[Any, ...]:
    """The objects a callable is made of: a bound method's object and function (a new bound
    method object is made at every attribute access), else the callable itself."""
    owner, func = getattr(fn, "__self__", None), getattr(fn, "__func__", None)
    if owner is not None and func is not None:
        return (owner, func)
    return (fn,)


class FunctionLoader:
    """Run side: load each function once per digest, and keep it as ``prepare`` makes it
    (the function itself by default; a worker keeps what it learnt of it beside it)."""

    def __init__(self, size: int = 256,
                 prepare: Callable[[Callable[..., Any]], Any] | None = None) -> None:
        self._cache = _LRU(size)
        self._prepare = prepare

    def loads(self, digest: bytes, payload: Buffer) -> Any:
        entry = self._cache.get(digest)
        if entry is None:
            entry = pickle.loads(payload)
            if self._prepare is not None:
                entry = self._prepare(entry)
            self._cache.put(digest, entry)
        else:
            self._cache.move_to_end(digest)
        return entry


class _BigBuffers(threading.local):
    """Where the pickler's buffer callback puts out-of-band buffers (one list per thread)."""

    def __init__(self) -> None:
        self.found: list[Buffer] = []


_big = _BigBuffers()


def _keep_big(buf: pickle.PickleBuffer) -> bool:
    raw = buf.raw()
    if raw.nbytes < OOB_THRESHOLD:
        return True  # in band
    _big.found.append(raw)
    return False


def dumps_data(obj: Any, what: str = "data") -> tuple[bytes, Sequence[Buffer]]:
    """Pickle ``obj`` with protocol 5; return the pickle and its out-of-band buffers."""
    try:
        data = pickle.dumps(obj, protocol=5, buffer_callback=_keep_big)
    except Exception:
        _big.found = []
        try:
            data = dill.dumps(obj, protocol=5, recurse=True, buffer_callback=_keep_big)
        except Exception as exc:
            _big.found = []
            parts = _argument_parts(obj) if what == ARGUMENTS else [("", obj)]
            raise SerializationError(what, exc, culprit(parts)) from None
    found = _big.found
    if found:
        _big.found = []
        return data, found
    return data, ()


#: what :func:`dumps_data` calls a task's ``(args, kwargs)``
ARGUMENTS = "the task's arguments"
#: how deep :func:`culprit` looks into containers and objects
_LOOK_DEPTH = 4


def culprit(parts: list[tuple[str, Any]], depth: int = _LOOK_DEPTH) -> str:
    """Where, among named ``parts``, the object that does not pickle is, and what it is
    (``keyword argument 'rows'[2]: a generator``); "" when no part alone fails.

    Looks into tuples, lists, dicts, sets and objects' attributes, ``depth`` levels down:
    only called after a failure, to put the answer in the error's first line.
    """
    for name, value in parts:
        if _pickles(value):
            continue
        inner = _children(value) if depth > 0 else []
        found = culprit([(name + sub, child) for sub, child in inner], depth - 1) if inner else ""
        kind = type(value)
        named = kind.__qualname__ if kind.__module__ == "builtins" \
            else f"{kind.__module__}.{kind.__qualname__}"
        return found or f"{name or 'the value'}: a {named}"
    return ""


def _pickles(value: Any) -> bool:
    try:
        dill.dumps(value, protocol=5, recurse=True)
        return True
    except Exception:
        return False


def _children(value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, (tuple, list)):
        return [(f"[{i}]", v) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return [(f"[{k!r}]", v) for k, v in value.items()]
    if isinstance(value, (set, frozenset)):
        return [(f"{{{v!r}}}", v) for v in value]
    attrs = getattr(value, "__dict__", None)
    return [(f".{k}", v) for k, v in attrs.items()] if isinstance(attrs, dict) else []


def _argument_parts(obj: Any) -> list[tuple[str, Any]]:
    """A task's ``(args, kwargs)`` as named parts."""
    try:
        args, kwargs = obj
        return [(f"argument {i}", v) for i, v in enumerate(args)] + \
            [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
    except (TypeError, ValueError, AttributeError):
        return [("", obj)]


def _function_parts(fn: Any) -> list[tuple[str, Any]]:
    """What a function captures by value: the globals it names, its closure, its defaults."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return []
    scope = getattr(fn, "__globals__", {})
    parts = [(f"global {n!r}", scope[n]) for n in code.co_names if n in scope]
    cells = getattr(fn, "__closure__", None) or ()
    for name, cell in zip(code.co_freevars, cells):
        try:
            parts.append((f"closure variable {name!r}", cell.cell_contents))
        except ValueError:  # an empty cell
            continue
    parts += [(f"default {i}", v) for i, v in enumerate(getattr(fn, "__defaults__", None) or ())]
    return parts


#: a ``None`` value, pickled: what most tasks run for their side effects return (a rank sends
#: it and the front-end reads it without pickling either way)
NONE = pickle.dumps(None, protocol=5)
#: the arguments of a call without any, pickled: the front-end sends this one object for every
#: such task, and a rank running a flood of them needs no unpickling for it
NO_ARGUMENTS = pickle.dumps(((), {}), protocol=5)


def loads_data(data: Buffer, buffers: Sequence[Buffer] = (), only_reader: bool = False) -> Any:
    """Unpickle ``data`` with its out-of-band buffers; shared-memory descriptors among them
    are replaced by the buffers they name (:class:`~rankpool.errors.SharedMemoryError` when one
    cannot be read): borrowed in place for results and, with ``only_reader``, for arguments
    that no other process reads; copied otherwise."""
    if buffers:
        buffers = resolve_shared(buffers, only_reader)
    return pickle.loads(data, buffers=buffers)


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What one rank reports when its part of a task raised."""

    type_name: str
    message: str
    traceback: str
    rank: int
    size: int
    host: str
    exc_pickle: bytes | None


_HOST = socket.gethostname()


def dumps_error(exc: BaseException, rank: int = 0, size: int = 1) -> bytes:
    """Serialize an exception raised by user code, keeping its traceback as text.

    Never raises: a rank reports every failure through this, and an error escaping it would
    abort the whole pool (user exceptions whose ``__str__`` raises included).
    """
    try:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException as bad:  # a traceback that cannot be formatted still says what failed
        tb = (f"{exception_text(exc)}\n"
              f"(the traceback could not be formatted: {exception_text(bad)})\n")
    exc_pickle: bytes | None
    try:
        exc_pickle = pickle.dumps(exc, protocol=5)
        pickle.loads(exc_pickle)  # an exception that pickles but cannot be rebuilt is text only
    except BaseException:
        try:
            exc_pickle = dill.dumps(exc, protocol=5)
            pickle.loads(exc_pickle)
        except BaseException:
            exc_pickle = None
    info = ErrorInfo(f"{type(exc).__module__}.{type(exc).__qualname__}", exception_text(exc), tb,
                     rank, size, _HOST, exc_pickle)
    return pickle.dumps(info, protocol=5)


def exception_text(exc: BaseException) -> str:
    """``str(exc)``, or what ``traceback`` prints when that raises."""
    try:
        return str(exc)
    except BaseException:
        return f"<exception str() failed for {type(exc).__qualname__}>"


def loads_error(data: Buffer) -> BaseException:
    """Rebuild a remote exception with its traceback as ``__cause__``.

    The original type is kept where it unpickles here; otherwise a :class:`RemoteTaskError`
    carries the type name and text.
    """
    info: ErrorInfo = pickle.loads(data)
    exc: BaseException | None = None
    if info.exc_pickle is not None:
        try:
            exc = pickle.loads(info.exc_pickle)
        except Exception:
            exc = None
    if not isinstance(exc, BaseException):
        exc = RemoteTaskError(info.type_name, info.message, info.rank, info.size, info.host)
    header = f"rank {info.rank} of {info.size} on {info.host}"
    exc.__cause__ = RemoteTraceback(f'\n"""\n{header}\n{info.traceback}"""')
    if not isinstance(exc, Exception):  # SystemExit & co. must not end the submitting program
        exc = task_exit(exc, info.type_name, info.message)
    return exc


def task_exit(exc: BaseException, type_name: str, message: str) -> TaskExit:
    """The :class:`~rankpool.errors.TaskExit` that stands for ``exc``: the remote traceback as
    its ``__cause__`` (as for every remote error), ``exc`` itself as its ``__context__``."""
    code = None
    if isinstance(exc, SystemExit):  # from its args: a rebuilt one may not have run __init__
        code = exc.args[0] if len(exc.args) == 1 else (exc.args or None)
    if isinstance(exc, SystemExit) and message == str(code):
        message = ""  # SystemExit(3) says "3": the code says it already
    wrapped = TaskExit(type_name.removeprefix("builtins."), code, message)
    wrapped.__cause__ = exc.__cause__
    wrapped.__context__ = exc
    return wrapped


def error_summary(data: Buffer) -> str:
    """``type: message`` of a serialized task error, for logs (the exception is not rebuilt)."""
    try:
        info = pickle.loads(data)
        return f"{info.type_name}: {info.message}"
    except Exception:
        return "an error that cannot be read"


def add_note(exc: BaseException, note: str) -> None:
    """``BaseException.add_note`` where Python has it (3.11+), the same attribute otherwise."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # Python 3.10
        notes = getattr(exc, "__notes__", None)
        if notes is None:
            notes = []
            # BaseException.__notes__ is Python 3.11's; on 3.10 it is set by hand
            exc.__notes__ = notes  # type: ignore[attr-defined]
        notes.append(note)
