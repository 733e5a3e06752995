"""User and group property updates: Amplitude's identify operations, as pure functions on a property dict.

``apply_identify(props, ops)`` applies an ``$identify`` event's ``user_properties``
(or a ``$groupidentify`` event's ``group_properties``) to the properties as they
were, and returns the new properties; ``props`` is never modified. The
operations run in the order Amplitude's SDKs send them
(``OrderedIdentifyOperations`` of @amplitude/analytics-core): ``$clearAll``,
``$unset``, ``$set``, ``$setOnce``, ``$add``, ``$append``, ``$prepend``,
``$remove`` -- whatever their order in the JSON object. Keys of an identify that
are not operations are set, as ``$set`` (the shorthand Amplitude's HTTP API
accepts); on any other event, ``user_properties`` is a plain ``$set``
(``apply_set``): operations there are not applied (FORMATS.md §2.2: operations
only on ``$identify``) and their keys are ignored.

Semantics (Amplitude's Identify API docs; edge cases chosen here are marked *):

- ``$set`` {k: v}: k = v.  ``$setOnce`` {k: v}: k = v unless k is already set.
- ``$add`` {k: n}: k = k + n, a missing k counting as 0; n must be a number
  (a string, even a numeric one, is an error*); a k holding a non-number is
  left as it is*.
- ``$append`` / ``$prepend`` {k: v}: k becomes a list with v (each item of v
  when v is a list) added at the end / front; a missing k is []; a scalar k is
  first made [k]*.
- ``$unset`` {k: any}: k removed.  ``$clearAll`` {any}: every property removed.
- ``$remove`` {k: v}: every occurrence of v (each item of v when v is a list)
  removed from the list k; a scalar k equal to v is removed*.

Errors (the event is dead-lettered with the reason, never half applied):
``invalid_identify`` -- an operation whose value is not an object, an unknown
``$`` operation, ``$add`` of a non-number; ``too_many_properties`` -- one
operation (or one plain update) naming more than ``MAX_PROPERTIES``
properties; ``invalid_value`` -- a string value longer than ``MAX_STRING``
characters (Amplitude's limit on every string value).
"""

from __future__ import annotations

from typing import Any

from stream.events.fields import MAX_STRING

MAX_PROPERTIES = 1000
"""Most properties one operation (or one event's plain user_properties) may name."""

ORDER = ("$clearAll", "$unset", "$set", "$setOnce", "$add", "$append", "$prepend", "$remove")
OPERATIONS = frozenset(ORDER)


class IdentifyError(Exception):
    """An update that cannot be applied: ``reason`` is a dead-letter reason code, ``field`` the path."""

    def __init__(self, reason: str, field: str, detail: str):
        super().__init__(detail)
        self.reason, self.field, self.detail = reason, field, detail


def _type_name(v: Any) -> str:
    return {str: "string", bool: "boolean", int: "integer", float: "number", dict: "object", list: "array",
            type(None): "null"}.get(type(v), type(v).__name__)


def _check_values(values: dict[str, Any], where: str) -> None:
    if len(values) > MAX_PROPERTIES:
        raise IdentifyError("too_many_properties", where,
                            f"{where} names {len(values)} properties; the limit is {MAX_PROPERTIES}")
    for k, v in values.items():
        _check_value(v, f"{where}.{k}", 0)


def _check_value(v: Any, where: str, depth: int) -> None:
    t = type(v)
    if t is str:
        if len(v) > MAX_STRING:
            raise IdentifyError("invalid_value", where,
                                f"{where} is {len(v)} characters long; the limit is {MAX_STRING}")
    elif t is list or t is dict:
        if depth >= 40:   # Amplitude: depth <= 40
            raise IdentifyError("invalid_value", where, f"{where} is nested more than 40 levels deep")
        for x in (v if t is list else v.values()):
            _check_value(x, where, depth + 1)


def _as_items(v: Any) -> list[Any]:
    return v if type(v) is list else [v]


def _is_number(v: Any) -> bool:
    return type(v) is int or type(v) is float


MAX_BRACKETS = 41
"""``within_limits``' bound on the opening brackets of a JSON value: one more than the 40 levels of nesting allowed."""


def within_limits(raw: bytes) -> bool:
    """True when the JSON ``raw`` cannot break a limit, so its values need no walk: a string of more than
    MAX_STRING characters takes more than MAX_STRING bytes, more than MAX_PROPERTIES properties take five
    bytes each, and nesting deeper than 40 levels takes more than 41 brackets (counted inside strings too, so a
    JSON that passes here may be walked for nothing, never the other way round)."""
    return len(raw) <= MAX_STRING and raw.count(b"{") + raw.count(b"[") <= MAX_BRACKETS


def check_set(values: Any, where: str = "user_properties", raw: bytes | None = None) -> dict[str, Any]:
    """A plain update (a non-identify event's user_properties), checked; raises IdentifyError. ``raw``: the JSON
    it was decoded from, when the caller has it (``within_limits`` spares the walk of the values)."""
    if type(values) is not dict:
        raise IdentifyError("invalid_identify", where, f"{where} must be an object, got {_type_name(values)}")
    if raw is None or not within_limits(raw):
        _check_values(values, where)
    return values


def set_values(props: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``props`` with every key of a checked plain update that is not an operation set."""
    if OPERATIONS.isdisjoint(values):
        return {**props, **values}
    out = dict(props)
    for k, v in values.items():
        if k not in OPERATIONS:
            out[k] = v
    return out


def check_identify(ops: Any, where: str = "user_properties") -> dict[str, Any]:
    """The operations of one identify, checked; raises IdentifyError (nothing is applied then)."""
    if type(ops) is not dict:
        raise IdentifyError("invalid_identify", where, f"{where} must be an object, got {_type_name(ops)}")
    plain = {}
    for k, v in ops.items():
        if not k.startswith("$"):
            plain[k] = v
            continue
        if k not in OPERATIONS:
            raise IdentifyError("invalid_identify", f"{where}.{k}", f"{where}: {k!r} is not an identify operation "
                                f"(one of {', '.join(ORDER)})")
        if k == "$clearAll":
            continue
        if type(v) is not dict:
            raise IdentifyError("invalid_identify", f"{where}.{k}",
                                f"{where}.{k} must be an object of properties, got {_type_name(v)}")
        _check_values(v, f"{where}.{k}")
        if k == "$add":
            for name, n in v.items():
                if not _is_number(n):
                    raise IdentifyError("invalid_identify", f"{where}.$add.{name}",
                                        f"{where}.$add.{name} must be a number, got {_type_name(n)}")
    if plain:
        _check_values(plain, where)
    return ops


def identify(props: dict[str, Any], ops: dict[str, Any]) -> dict[str, Any]:
    """``props`` updated by the checked operations of one identify (see the module docstring)."""
    plain = {k: v for k, v in ops.items() if not k.startswith("$")}
    out = {} if "$clearAll" in ops else dict(props)
    for op in ORDER[1:]:
        given = ops.get(op)
        if op == "$set":
            out.update(given or ())
            out.update(plain)
        elif given is None:
            continue
        elif op == "$unset":
            for name in given:
                out.pop(name, None)
        elif op == "$setOnce":
            for name, x in given.items():
                if name not in out:
                    out[name] = x
        elif op == "$add":
            for name, n in given.items():
                cur = out.get(name, 0)
                if _is_number(cur):
                    out[name] = cur + n
        elif op == "$append" or op == "$prepend":
            for name, x in given.items():
                cur = out.get(name)
                cur = [] if cur is None else list(_as_items(cur))
                out[name] = cur + _as_items(x) if op == "$append" else _as_items(x) + cur
        elif op == "$remove":
            for name, x in given.items():
                if name not in out:
                    continue
                gone = _as_items(x)
                cur = out[name]
                if type(cur) is list:
                    out[name] = [y for y in cur if y not in gone]
                elif cur in gone:
                    del out[name]
    return out


def apply_identify(props: dict[str, Any], ops: Any, where: str = "user_properties") -> dict[str, Any]:
    """Check, then apply, the operations of one identify."""
    return identify(props, check_identify(ops, where))
