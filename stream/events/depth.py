"""How deeply a JSON value nests, checked before anything recursive decodes or encodes it.

Amplitude accepts event and user properties nested at most 40 levels deep (FORMATS.md §2.2). Past about a
thousand levels the JSON decoders recurse out of stack (msgspec raises RecursionError) and past 254 orjson
refuses to encode, so an unchecked event nested 3,000 levels deep once answered a 500. Every input is checked
here first, in bytes (no decoding), and a too-deep one is rejected with its reason like any other invalid value.
(The fast path of ``normalize`` decodes into types nested at most ``FAST_NESTING`` levels instead: msgspec
refuses a deeper event before recursing further, and the reference path, which checks here, answers.)
"""

from __future__ import annotations

import re
from typing import Any

MAX_DEPTH = 40
"""Deepest nesting of objects and arrays inside an event (the event object itself is level 1)."""

_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def depth_over(raw: bytes, limit: int = MAX_DEPTH + 1) -> int | None:
    """The nesting depth of the JSON text ``raw`` when it is over ``limit`` levels (counting the outermost
    value), else None. Strings are skipped, so brackets inside them do not count. Linear in the input."""
    if raw.count(b"{") + raw.count(b"[") <= limit:
        return None                       # cannot be deeper than its brackets: the common case, two scans in C
    depth = deepest = 0
    for m in _TOKEN.finditer(raw):
        c = m.group()[0]
        if c == 0x7B or c == 0x5B:        # { [
            depth += 1
            if depth > deepest:
                deepest = depth
        elif c == 0x7D or c == 0x5D:      # } ]
            depth -= 1
    return deepest if deepest > limit else None


def value_depth_over(obj: Any, limit: int = MAX_DEPTH + 1) -> int | None:
    """The same for a decoded value (dicts and lists), without recursing past ``limit`` + 1 levels."""
    level, deepest = [(obj, 1)], 0
    while level:
        value, d = level.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        level.extend((c, d + 1) for c in children if isinstance(c, (dict, list)))
    return None
