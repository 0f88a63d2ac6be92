"""Valid messages of every channel, and a mutator that breaks them in the ways a wire can.

A *channel* is who talks to whom: ``pool`` (pool → interchange), ``client`` (front-end →
interchange), ``command`` (command socket), ``to_pool`` (interchange → pool) and
``to_front`` (interchange → front-end). Frames are the message as the receiver's handler
sees it, the ROUTER's identity frame excluded.

:class:`Mutator` draws from a seeded :class:`random.Random`, so a run is reproducible from
its seed; every case it returns carries a short description of what was done to it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rankpool._version import __version__
from rankpool.protocol.batches import Task, encode_tasks
from rankpool.protocol.messages import (
    MESSAGES,
    PROTOCOL_VERSION,
    PYTHON_VERSION,
    Capacity,
    Command,
    Drain,
    Heartbeat,
    Lost,
    LostCause,
    RefusalCause,
    Refused,
    Register,
    Registered,
    Reply,
    Stop,
)
from rankpool.protocol.result_batches import Outcome, Result, encode_results
from rankpool.task.resources import parse_spec

CHANNELS = ("pool", "client", "command", "to_pool", "to_front")
KINDS = sorted(MESSAGES) + ["tasks", "results"]
FIELDS = sorted({f for m in MESSAGES.values() for f in m.__dataclass_fields__} | {"n", "f", "s"})

Frames = list[bytes]


@dataclass
class Case:
    """One message to deliver: its channel, sender identity (for ROUTER channels), frames."""

    channel: str
    identity: bytes
    frames: Frames
    how: str


# -- the corpus ------------------------------------------------------------------------------------
def task(task_id: int, *, width: int = 1, priority: int = 0, walltime: float | None = None,
         results: str = "root", buffers: int = 0, fn: bytes = b"fn-one") -> Task:
    spec = parse_spec({"num_ranks": width, "priority": priority, "walltime": walltime,
                       "results": results})
    return Task(task_id, spec, fn[:4].ljust(4, b"."), fn, b"args-%d" % task_id,
                [b"B" * 64 for _ in range(buffers)])


def result(task_id: int, *, full: bool = False, buffers: int = 0) -> Result:
    if not full:
        return Result(task_id, [Outcome(0, True, b"value-%d" % task_id)])
    return Result(task_id, [Outcome(0, False, b"error", [b"x" * 32] * buffers),
                            Outcome(1, True, b"value", [])])


def register(pool_id: str, block_id: str = "b0", node_ranks: tuple[int, ...] = (4,)) -> Frames:
    return Register(PROTOCOL_VERSION, __version__, PYTHON_VERSION, block_id, pool_id,
                    [f"h{i}" for i in range(len(node_ranks))], list(node_ranks),
                    sum(node_ranks), max(node_ranks)).encode()


def as_bytes(frames: list[Any]) -> Frames:
    return [bytes(f) for f in frames]


def corpus(in_flight: list[int], pool_id: str = "p0") -> dict[str, list[Frames]]:
    """Valid messages per channel; results name ``in_flight`` task ids (and a few others)."""
    ids = in_flight or [1]
    tasks = [task(100 + i) for i in range(3)]
    mixed = [task(200, width=2, priority=5), task(201, walltime=2.5, results="all", buffers=2),
             task(202, fn=b"fn-two"), task(203, width=3, buffers=1)]
    return {
        "pool": [
            register(pool_id), register(pool_id + "b", "b1", (2, 2)), Heartbeat().encode(),
            Stop("leaving").encode(), Capacity([2], [3], 3).encode(),
            as_bytes(encode_results([result(i) for i in ids[:3]])),
            as_bytes(encode_results([result(ids[0], full=True, buffers=2), result(ids[-1])])),
            as_bytes(encode_results([result(987654)])),
        ],
        "client": [as_bytes(encode_tasks(tasks)), as_bytes(encode_tasks(mixed)),
                   as_bytes(encode_tasks([task(300)])), Heartbeat().encode(),
                   Stop("front-end done").encode()],
        "command": [Command(name, arg).encode() for name, arg in (
            ("pools", ""), ("outstanding", ""), ("queued", ""), ("idle_blocks", ""),
            ("hold", "b0"), ("release", "b0"), ("drain", "b1"), ("hold", "nope"), ("stop", ""))],
        "to_pool": [as_bytes(encode_tasks(tasks)), as_bytes(encode_tasks(mixed)),
                    Heartbeat().encode(), Drain().encode(), Stop("bye").encode(),
                    Registered("", 2.0, 10.0).encode()],
        "to_front": [as_bytes(encode_results([result(i) for i in ids[:3]])),
                     as_bytes(encode_results([result(ids[0], full=True, buffers=1)])),
                     Lost("b0", ["h0"], "pool lost", ids[:2], LostCause.NO_HEARTBEAT).encode(),
                     Refused("b0", "p9", ["h0"], "mismatch", "Python version", "3.11",
                             "3.12", RefusalCause.VERSION_MISMATCH).encode(),
                     Heartbeat().encode(), Reply("pools", [], "").encode()],
    }


# -- mutation --------------------------------------------------------------------------------------
INTERESTING: list[Any] = [
    0, -1, 1, 2, 3, 7, 255, 256, 2**31 - 1, 2**31, 2**63, -2**63, 2**64, 10**30, 10**400,
    0.5, -0.0, 1e308, -1e308, float("nan"), float("inf"), float("-inf"), True, False, None,
    "", "x", "0", "stop", "tasks", "results", "\u0000", "\u2603", "\ud800",
    "ff" * 40, "zz", "a" * 2000, [], {}, [[]], [None], [0, 0, 0, 0, 0], [[0, True, 0, 0]],
    [[1, 1, 1, 0, 0]], [[-1, 0]], {"k": "heartbeat"}, list(range(50)),
]


class Mutator:
    """Breaks valid messages: frame-level damage, JSON-level edits, splices and noise."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.frame_ops: list[Callable[[Frames], str]] = [
            self.flip_bits, self.set_byte, self.truncate, self.extend, self.insert, self.drop,
            self.duplicate, self.add_frame, self.swap, self.empty]

    # -- whole cases --------------------------------------------------------------------------
    def case(self, valid: list[Frames], others: list[Frames]) -> tuple[Frames, str]:
        """A mutated copy of one of ``valid`` (``others`` feed splices), and how it was made."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.06:
            return self.noise(), "noise"
        if roll < 0.10:
            return self.random_json(), "random JSON header"
        frames = list(rng.choice(valid))
        steps = []
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
            pick = rng.random()
            if pick < 0.55:
                steps.append(self.json_edit(frames))
            elif pick < 0.62 and others and frames:
                donor = rng.choice(others)
                i = rng.randrange(len(frames))
                frames[i] = donor[min(i, len(donor) - 1)]
                steps.append(f"splice frame {i}")
            else:
                steps.append(rng.choice(self.frame_ops)(frames))
        if not frames:  # ZeroMQ has no message of no frames
            frames.append(b"")
        return frames, "; ".join(steps)

    def noise(self) -> Frames:
        rng = self.rng
        return [rng.randbytes(rng.choice((0, 1, 3, 16, 100, 700)))
                for _ in range(rng.randint(1, 4))]

    def random_json(self) -> Frames:
        rng = self.rng
        header: dict[str, Any] = {"k": rng.choice(KINDS + ["", "zzz", "k" * 300])}
        for name in rng.sample(FIELDS, rng.randint(0, 6)):
            header[name] = self.value(3)
        return [self.dumps(header), *[rng.randbytes(rng.randint(0, 40))
                                     for _ in range(rng.randint(0, 3))]]

    # -- frame-level ---------------------------------------------------------------------------
    def _frame(self, frames: Frames) -> int:
        if not frames:
            frames.append(b"")
        return self.rng.randrange(len(frames))

    def flip_bits(self, frames: Frames) -> str:
        i = self._frame(frames)
        data = bytearray(frames[i])
        for _ in range(self.rng.randint(1, 8)):
            if data:
                pos = self.rng.randrange(len(data))
                data[pos] ^= 1 << self.rng.randrange(8)
        frames[i] = bytes(data)
        return f"flip bits in frame {i}"

    def set_byte(self, frames: Frames) -> str:
        i = self._frame(frames)
        data = bytearray(frames[i])
        if data:
            data[self.rng.randrange(len(data))] = self.rng.choice(b'\x00\xff"[]{},:0-9eE.\\ ')
        frames[i] = bytes(data)
        return f"set a byte in frame {i}"

    def truncate(self, frames: Frames) -> str:
        i = self._frame(frames)
        frames[i] = frames[i][:self.rng.randint(0, max(0, len(frames[i]) - 1))]
        return f"truncate frame {i}"

    def extend(self, frames: Frames) -> str:
        i = self._frame(frames)
        frames[i] = frames[i] + self.rng.randbytes(self.rng.randint(1, 64))
        return f"extend frame {i}"

    def insert(self, frames: Frames) -> str:
        i = self._frame(frames)
        pos = self.rng.randint(0, len(frames[i]))
        frames[i] = frames[i][:pos] + self.rng.randbytes(self.rng.randint(1, 8)) + frames[i][pos:]
        return f"insert bytes in frame {i}"

    def drop(self, frames: Frames) -> str:
        i = self._frame(frames)
        del frames[i]
        return f"drop frame {i}"

    def duplicate(self, frames: Frames) -> str:
        i = self._frame(frames)
        frames.insert(i, frames[i])
        return f"duplicate frame {i}"

    def add_frame(self, frames: Frames) -> str:
        frames.insert(self.rng.randint(0, len(frames)), self.rng.randbytes(self.rng.randint(0, 80)))
        return "add a frame"

    def swap(self, frames: Frames) -> str:
        if len(frames) < 2:
            return self.add_frame(frames)
        i, j = self.rng.sample(range(len(frames)), 2)
        frames[i], frames[j] = frames[j], frames[i]
        return f"swap frames {i} and {j}"

    def empty(self, frames: Frames) -> str:
        i = self._frame(frames)
        frames[i] = b""
        return f"empty frame {i}"

    # -- JSON-level ------------------------------------------------------------------------------
    def json_edit(self, frames: Frames) -> str:
        """Edit the header's JSON: a value, a type, a key, the kind, a list's length."""
        if not frames:
            frames.append(b"{}")
        try:
            header = json.loads(frames[0])
        except (ValueError, RecursionError):
            return self.rng.choice(self.frame_ops)(frames)
        rng = self.rng
        slots = list(_slots(header))
        if not slots:
            frames[0] = self.dumps(self.value(2))
            return "replace the header"
        parent, key, old = rng.choice(slots)
        op = rng.random()
        if op < 0.45:
            new = self.value(2) if rng.random() < 0.5 else rng.choice(INTERESTING)
            parent[key] = new
            what = f"set {key!r} to {new!r:.40}"
        elif op < 0.6:
            parent[key] = _retype(old, rng)
            what = f"retype {key!r}"
        elif op < 0.7 and isinstance(parent, dict) and key != "k" \
                or op < 0.7 and isinstance(parent, list):
            del parent[key]
            what = f"delete {key!r}"
        elif op < 0.78 and isinstance(old, list):
            if old and rng.random() < 0.5:
                old.append(rng.choice(old))
            else:
                old.insert(rng.randint(0, len(old)), self.value(1))
            what = f"grow list {key!r}"
        elif op < 0.83:
            what = _rebalance(header, rng)
        elif op < 0.86 and isinstance(header, dict):
            header["k"] = rng.choice(KINDS)
            what = f"kind to {header['k']!r}"
        elif op < 0.9 and isinstance(header, dict):
            header[rng.choice(FIELDS + ["zz"])] = self.value(2)
            what = "add a key"
        elif op < 0.93:
            depth = rng.choice((10, 100, 900, 5000, 200_000))
            parent[key] = _DEEP
            frames[0] = self.dumps(header).replace(b'"' + _DEEP.encode() + b'"',
                                                   b"[" * depth + b"]" * depth, 1)
            return f"nest {key!r} {depth} deep"
        else:
            parent[key] = [old] * rng.randint(2, 50) if rng.random() < 0.5 else [old, old]
            what = f"repeat {key!r}"
        frames[0] = self.dumps(header)
        return what

    def value(self, depth: int) -> Any:
        rng = self.rng
        roll = rng.random()
        if depth <= 0 or roll < 0.5:
            return rng.choice(INTERESTING) if rng.random() < 0.6 else rng.choice(
                (rng.randint(-5, 2**40), rng.random() * 10, rng.randbytes(4).hex(),
                 bool(rng.getrandbits(1))))
        if roll < 0.8:
            return [self.value(depth - 1) for _ in range(rng.randint(0, 5))]
        return {rng.choice(FIELDS + ["", "?"]): self.value(depth - 1)
                for _ in range(rng.randint(0, 4))}

    @staticmethod
    def dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()


def _slots(value: Any, depth: int = 0) -> Any:
    """Every (container, key, value) in a JSON tree, to at most depth 6."""
    if depth > 6:
        return
    items = value.items() if isinstance(value, dict) else enumerate(value) \
        if isinstance(value, list) else ()
    for key, child in items:
        yield value, key, child
        yield from _slots(child, depth + 1)


def _rebalance(header: Any, rng: random.Random) -> str:
    """Move an amount from one integer of the header to another, so that sums still agree."""
    ints = [(parent, key) for parent, key, v in _slots(header) if type(v) is int]
    if len(ints) < 2:
        return "rebalance nothing"
    (p1, k1), (p2, k2) = rng.sample(ints, 2)
    amount = rng.choice((1, 2, 5, 64, p1[k1]))
    p1[k1] -= amount
    p2[k2] += amount
    return f"move {amount} from {k1!r} to {k2!r}"


def _retype(value: Any, rng: random.Random) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return rng.choice((str(value), float(value) if abs(value) < 2**1000 else 1e308, [value],
                           value > 0, -value, value * 2**40))
    if isinstance(value, float):
        return rng.choice((int(value) if value == value and abs(value) < 1e18 else 0, str(value)))
    if isinstance(value, str):
        return rng.choice((len(value), [value], None, value.encode(errors="surrogatepass").hex()))
    if isinstance(value, list):
        return rng.choice(({str(i): v for i, v in enumerate(value)}, tuple(value)[:1] and value[0],
                           len(value)))
    if isinstance(value, dict):
        return list(value.values())
    return rng.choice((0, "", []))


#: stands for a deeply nested list in a header until it is written out as text
_DEEP = "@@rankpool-fuzz-deep@@"
