"""``poolwarden bench fuzz``: hostile frames through both wire parsers, every outcome counted.

Each frame is one of: a message the real page sends (or a command the server sends) with fields
replaced by hostile values (lone surrogates, 400-digit and non-finite numbers, integers past
2**53, nested objects, wrong types), the same as a binary result frame, a valid frame cut short
or with a byte flipped, a version 2 tensor frame (fixed binary header) with bytes overwritten or
cut short, or random bytes or text. Every frame goes through
``parse_page_message`` and ``parse_command``; each answer is ``parsed`` (a message),
``refused`` (:class:`~poolwarden.errors.ProtocolError`) or ``unhandled`` (any other exception: a
bug, which the bridge would turn into a traceback). The figure that matters is ``unhandled: 0``;
``frames_per_s`` says what a parse costs.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from poolwarden.errors import ProtocolError
from poolwarden.protocol import Limits, Tensor, encode_binary, parse_command, parse_page_message
from poolwarden.protocol_examples import COMMANDS, PAGE_MESSAGES, RESULT_HEADER

__all__ = ["run"]

_HOSTILE_SCALARS: tuple[Any, ...] = (
    "\ud800",
    "a\udfffb",
    "\x00",
    "",
    "\U0001f600",
    "x" * 300,
    10**400,
    -(10**400),
    2**53 + 1,
    -1,
    1e308,
    math.inf,
    -math.inf,
    math.nan,
    None,
    True,
    0,
    [],
    {},
)


def _hostile(rng: random.Random, depth: int = 0) -> Any:
    if depth < 2 and rng.random() < 0.2:
        if rng.random() < 0.5:
            return [_hostile(rng, depth + 1) for _ in range(rng.randint(0, 3))]
        return {
            rng.choice(("a", "\ud800", "type", "")): _hostile(rng, depth + 1)
            for _ in range(rng.randint(0, 3))
        }
    return rng.choice(_HOSTILE_SCALARS)


def _mutated(rng: random.Random, template: Mapping[str, Any]) -> dict[str, Any]:
    message = dict(template)
    for key in rng.sample(sorted(message), k=rng.randint(1, min(3, len(message)))):
        if key != "type" or rng.random() < 0.3:
            message[key] = _hostile(rng)
    if rng.random() < 0.3:
        message[rng.choice(("extra", "\udc80", ""))] = _hostile(rng)
    return message


def _damaged_v2(rng: random.Random) -> bytes:
    tensors = [Tensor.from_values("output", [[1.0, 2.0, 3.0]])] * rng.randint(0, 2)
    frame = bytearray(encode_binary(RESULT_HEADER, tensors, 2))
    for _ in range(rng.randint(1, 4)):
        frame[rng.randrange(4, len(frame))] = rng.randrange(256)
    return bytes(frame[: rng.randint(4, len(frame))] if rng.random() < 0.3 else frame)


def _frame(rng: random.Random) -> str | bytes:
    """One hostile frame (see the module docstring for the kinds)."""
    kind = rng.random()
    if kind < 0.35:
        return json.dumps(_mutated(rng, rng.choice(PAGE_MESSAGES)))
    if kind < 0.5:
        return json.dumps(_mutated(rng, rng.choice(COMMANDS)))
    if kind < 0.65:
        return encode_binary(_mutated(rng, RESULT_HEADER), ())
    if kind < 0.8:
        valid = json.dumps(rng.choice(PAGE_MESSAGES)).encode()
        cut = valid[: rng.randint(0, len(valid))]
        if cut and rng.random() < 0.5:
            at = rng.randrange(len(cut))
            cut = cut[:at] + bytes([cut[at] ^ (1 << rng.randrange(8))]) + cut[at + 1 :]
        return cut.decode("utf-8", "replace") if rng.random() < 0.5 else cut
    if kind < 0.85:
        return rng.randbytes(rng.randint(0, 64))
    if kind < 0.9:
        return _damaged_v2(rng)
    return "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(0, 32)))


def run(frames: int = 100_000, seed: int = 0) -> dict[str, Any]:
    """Fuzz both parsers with ``frames`` frames drawn from ``seed``; returns the counts."""
    rng = random.Random(seed)
    limits = Limits()
    parsers: dict[str, Callable[[str | bytes, Limits], object]] = {
        "parse_page_message": parse_page_message,
        "parse_command": parse_command,
    }
    outcomes = {name: Counter({"parsed": 0, "refused": 0, "unhandled": 0}) for name in parsers}
    examples: list[dict[str, str]] = []
    batch = [_frame(rng) for _ in range(frames)]
    started = time.perf_counter()
    for frame in batch:
        for name, parse in parsers.items():
            try:
                parse(frame, limits)
            except ProtocolError:
                outcomes[name]["refused"] += 1
            except Exception as error:  # what the bench exists to find: counted and shown
                outcomes[name]["unhandled"] += 1
                if len(examples) < 5:
                    examples.append({"parser": name, "error": repr(error), "frame": repr(frame)[:200]})
            else:
                outcomes[name]["parsed"] += 1
    elapsed = time.perf_counter() - started
    return {
        "frames": frames,
        "seed": seed,
        **{name: dict(counts) for name, counts in outcomes.items()},
        "unhandled": sum(counts["unhandled"] for counts in outcomes.values()),
        "frames_per_s": round(frames * len(parsers) / elapsed) if elapsed > 0 else None,
        "unhandled_examples": examples,
    }
