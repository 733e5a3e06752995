"""Cohort definitions, checked once and compiled into conditions on export rows and a rule on their daily counts.

A definition is a mapping, as YAML settings or a JSON admin body give it::

    id: power_buyers            # ^[A-Za-z0-9_-]{1,64}$, opaque
    project: 424242
    name: Power buyers
    rule:
      and:
        - performed: purchase
          where: [{property: event_properties.plan, op: "=", value: pro}]
          count: {op: at_least, n: 3}
          within_days: 7
        - {user_property: country, op: "!=", value: FR}

or ``static: true`` and no ``rule`` (the members are a list of user ids uploaded separately, ``parse_members``).
A rule is ``performed`` (behavioral), ``user_property``, ``and``, ``or`` or ``not``. Any mistake, unknown keys
included, is a ``CohortError`` naming its path (``cohorts[2].rule.and[1].count.op``) and what to write instead.

Days are UTC day numbers (days since 1970-01-01). ``within_days: D`` counts the days ``today - D + 1`` through
``today``, both included (D = 1 is today alone, D = 7 today and the six days before); ``between: [first, last]``
counts ``first`` through ``last``, both included. ``count`` defaults to ``{op: at_least, n: 1}``; ``at_most 0``
means "did not perform". Comparisons are described on ``Comparison``.

Each behavioral leaf compiles to a ``Condition``: its id within the cohort (``c0``, ``c1``... in the order the rule
is written), ``matches(row)`` on an export row, its window, and ``key``, a digest of what it counts (project, event,
filters, window) that its counters are stored under: editing a condition's count keeps its counters, editing what it
counts starts new ones, and cohorts with the same condition share them.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson

from stream.errors import ConfigError
from stream.events.fields import EXPORT_FIELDS
from stream.events.timefmt import DAY_MS

EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
MAX_WINDOW_DAYS = 3660
"""Ten years: a window bounds the counters one condition keeps per user."""
MAX_DEPTH = 32
"""How deep and/or/not rules may nest."""

OPS = ("=", "!=", "contains", "<", ">", "is_set", "is_not_set")
COUNT_OPS = ("at_least", "at_most", "exactly")
RULE_KINDS = ("performed", "user_property", "and", "or", "not")
PROPERTY_COLUMNS = ("event_properties", "user_properties")
"""Columns whose entries a filter names as ``<column>.<name>``; the name keeps any further dots."""

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")
_NO_DAYS: Mapping[int, int] = {}


class CohortError(ConfigError):
    """A cohort definition that cannot be used: ``path`` locates the mistake, the message says what to write."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.detail = message
        super().__init__(f"{path}: {message}")

    def __reduce__(self) -> tuple[type[CohortError], tuple[str, str]]:
        return type(self), (self.path, self.detail)


def day_of_ms(ms: int) -> int:
    """The UTC day number of an epoch-milliseconds instant (what callers pass as ``today``)."""
    return ms // DAY_MS


def parse_day(text: str) -> int | None:
    """The day number of a string starting ``YYYY-MM-DD`` (an export timestamp or a date), or None."""
    if not isinstance(text, str) or len(text) < 10 or text[4] != "-" or text[7] != "-":
        return None
    try:
        return date(int(text[0:4]), int(text[5:7]), int(text[8:10])).toordinal() - EPOCH_ORDINAL
    except ValueError:
        return None


def _number(value: Any) -> int | float | None:
    """``value`` as a number: ints, finite floats and strings that spell one (``"3"``, ``"-2.5e3"``); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        if _INT.fullmatch(value):
            return int(value)
        if _FLOAT.fullmatch(value):
            number = float(value)
            return number if math.isfinite(number) else None
    return None


def _equals(actual: Any, expected: Any) -> bool:
    if (isinstance(actual, (int, float)) or isinstance(expected, (int, float))) and not (
            isinstance(actual, bool) or isinstance(expected, bool)):
        x, y = _number(actual), _number(expected)
        return x is not None and y is not None and x == y
    # "true" is not true, 1 is not true: no conversions beyond numbers
    return type(actual) is type(expected) and actual == expected


@dataclass(frozen=True)
class Comparison:
    """One test of a property value; ``None`` stands for absent and for null alike (a null is not set).

    * ``is_set``: present and not null; ``is_not_set``: absent or null.
    * ``=``: numbers compare numerically, and a string that spells a number (``"3"``, ``"2.50"``) counts as that
      number when the other side is a number; strings compare exactly (case included); booleans equal only booleans.
      A list property is ``=`` when any element is.
    * ``!=``: exactly ``not =``, so an absent property is ``!=`` any value.
    * ``contains``: a substring of a string property (string values only), or an element ``=`` the value of a list
      property.
    * ``<``, ``>``: the value is a number; the property is compared when it is a number or a numeric string, and
      fails otherwise (absent, text, lists).
    """

    op: str
    value: Any = None

    def __call__(self, actual: Any) -> bool:
        op, value = self.op, self.value
        if op == "=":
            return _equals_any(actual, value)
        if op == "!=":
            return not _equals_any(actual, value)
        if op == "is_set":
            return actual is not None
        if op == "is_not_set":
            return actual is None
        if op == "contains":
            if isinstance(actual, str):
                return isinstance(value, str) and value in actual
            return isinstance(actual, list) and any(_equals(item, value) for item in actual)
        number = _number(actual)
        if number is None:
            return False
        return number < value if op == "<" else number > value


def _equals_any(actual: Any, value: Any) -> bool:
    if isinstance(actual, list):
        return any(_equals(item, value) for item in actual)
    return _equals(actual, value)


@dataclass(frozen=True)
class PropertyFilter:
    """A test of one field of an export row: ``column`` None for a top-level field such as ``platform``.

    ``user_properties.<name>`` reads the properties the row carries (as of that event), not the user's current ones.
    """

    column: str | None
    name: str
    test: Comparison

    def matches(self, row: Mapping[str, Any]) -> bool:
        if self.column is None:
            return self.test(row.get(self.name))
        holder = row.get(self.column)
        return self.test(holder.get(self.name) if isinstance(holder, Mapping) else None)


@dataclass(frozen=True, eq=False)
class Condition:
    """A behavioral leaf: which rows it counts (``matches``), over which days (``window``) and how many it needs."""

    id: str
    key: str
    project: int
    event_type: str
    filters: tuple[PropertyFilter, ...]
    count_op: str
    n: int
    within_days: int | None = None
    between: tuple[int, int] | None = None

    def matches(self, row: Mapping[str, Any]) -> bool:
        """Whether ``row`` is this condition's event: its project (``app``), event_type and every filter."""
        return (row.get("event_type") == self.event_type and row.get("app") == self.project
                and all(f.matches(row) for f in self.filters))

    def window(self, today: int) -> tuple[int, int]:
        """The days counted on ``today``, both included (empty when the first is after the last)."""
        if self.within_days is not None:
            return today - self.within_days + 1, today
        first, last = self.between  # type: ignore[misc]
        return first, min(last, today)

    def keeps(self, day: int, today: int) -> bool:
        """Whether a counter of ``day`` can still count on ``today`` or later."""
        if self.within_days is not None:
            return day > today - self.within_days
        first, last = self.between  # type: ignore[misc]
        return first <= day <= last

    def total(self, days: Mapping[int, int], today: int) -> int:
        first, last = self.window(today)
        return sum(n for day, n in days.items() if first <= day <= last)

    def satisfied(self, total: int) -> bool:
        if self.count_op == "at_least":
            return total >= self.n
        if self.count_op == "at_most":
            return total <= self.n
        return total == self.n

    def holds(self, totals: Mapping[str, int], user_properties: Mapping[str, Any]) -> bool:
        return self.satisfied(totals[self.id])


@dataclass(frozen=True)
class UserPropertyRule:
    """A test of the user's current user_properties."""

    name: str
    test: Comparison

    def holds(self, totals: Mapping[str, int], user_properties: Mapping[str, Any]) -> bool:
        return self.test(user_properties.get(self.name))


@dataclass(frozen=True)
class AllOf:
    rules: tuple[Rule, ...]

    def holds(self, totals: Mapping[str, int], user_properties: Mapping[str, Any]) -> bool:
        return all(r.holds(totals, user_properties) for r in self.rules)


@dataclass(frozen=True)
class AnyOf:
    rules: tuple[Rule, ...]

    def holds(self, totals: Mapping[str, int], user_properties: Mapping[str, Any]) -> bool:
        return any(r.holds(totals, user_properties) for r in self.rules)


@dataclass(frozen=True)
class Negation:
    rule: Rule

    def holds(self, totals: Mapping[str, int], user_properties: Mapping[str, Any]) -> bool:
        return not self.rule.holds(totals, user_properties)


Rule = Condition | UserPropertyRule | AllOf | AnyOf | Negation


@dataclass(frozen=True, eq=False)
class Cohort:
    """A compiled cohort: its conditions, the user properties its rule reads, and ``evaluate``."""

    id: str
    project: int
    name: str
    static: bool
    rule: Rule | None
    conditions: tuple[Condition, ...]
    user_properties: frozenset[str]

    def evaluate(self, counts: Mapping[str, Mapping[int, int]], user_properties: Mapping[str, Any],
                 today: int) -> bool:
        """Whether a user with these daily counters (condition id -> day -> count; missing is zero) and current
        properties is a member on ``today``."""
        if self.rule is None:
            raise ValueError(f"cohort {self.id} is static: its members are its uploaded list, not a rule")
        totals = {c.id: c.total(counts.get(c.id, _NO_DAYS), today) for c in self.conditions}
        return self.rule.holds(totals, user_properties)


def expires_on(counts: Mapping[str, Mapping[int, int]], user_properties: Mapping[str, Any], cohort: Cohort,
               today: int) -> int | None:
    """The first day after ``today`` on which ``cohort.evaluate`` gives another result with no new event, or None.

    Without events only rolling windows move: a counter of day ``d`` leaves a ``within_days: D`` window on day
    ``d + D`` (and one of a day after today, an event stamped ahead of the clock, enters on ``d``). ``between``
    windows are fixed dates, so their totals change only on a day after today holding a counter. Those days are the
    candidates; each is evaluated in order and the first whose result differs is returned, so the answer is exact
    for any rule: for ``at_least`` it is the day a member exits, for ``not`` or ``at_most`` the day the last counted
    event leaves the window and the user enters. The properties cannot change without an event, so they are fixed.
    """
    if cohort.rule is None:
        return None
    candidates: set[int] = set()
    for c in cohort.conditions:
        for day, n in counts.get(c.id, _NO_DAYS).items():
            if n == 0:
                continue
            if day > today:
                candidates.add(day)
            if c.within_days is not None and day + c.within_days > today:
                candidates.add(day + c.within_days)
    now = cohort.evaluate(counts, user_properties, today)
    for day in sorted(candidates):
        if cohort.evaluate(counts, user_properties, day) != now:
            return day
    return None


def longest_window_days(cohorts: Iterable[Cohort]) -> int:
    """The longest ``within_days`` window: on ``today``, a counter older than ``today - longest + 1`` counts for
    no rolling window (``between`` windows keep their own dates, ``Condition.keeps``). 0 without rolling windows."""
    return max((c.within_days for cohort in cohorts for c in cohort.conditions if c.within_days is not None),
               default=0)


@dataclass(frozen=True, eq=False)
class CohortSet:
    """Every cohort in force, indexed for the per-event path.

    ``conditions``: one per distinct key; ``by_event``: (project, event_type) -> its distinct conditions;
    ``properties``: per project, the user properties a user's state keeps (those its cohorts read, plus the
    columns the sync files export).
    """

    cohorts: tuple[Cohort, ...]
    conditions: Mapping[str, Condition]
    by_event: Mapping[tuple[int, str], tuple[Condition, ...]]
    properties: Mapping[int, frozenset[str]]

    def cohort(self, cohort_id: str) -> Cohort | None:
        return next((c for c in self.cohorts if c.id == cohort_id), None)

    def candidates(self, row: Mapping[str, Any]) -> tuple[Condition, ...]:
        """The conditions that may match ``row``: those of its project and event type."""
        return self.by_event.get((row.get("app"), row.get("event_type")), ())  # type: ignore[arg-type]

    def properties_of(self, project: int | None) -> frozenset[str]:
        return self.properties.get(project, frozenset()) if project is not None else frozenset()

    @property
    def all_properties(self) -> frozenset[str]:
        return frozenset().union(*self.properties.values())


def compile_cohorts(cohorts: Iterable[Cohort], keep_properties: Iterable[str] = ()) -> CohortSet:
    """Index ``cohorts``; ``keep_properties`` (the sync files' property columns) are kept in every state too.

    Ids must be unique across projects: membership and sync files name a cohort by its id alone.
    """
    cohorts = tuple(cohorts)
    seen: dict[str, int] = {}
    for i, cohort in enumerate(cohorts):
        if cohort.id in seen:
            raise CohortError(f"cohorts[{i}].id", f"duplicate id {cohort.id!r} (also cohorts[{seen[cohort.id]}].id); "
                                                  "give each cohort its own id")
        seen[cohort.id] = i
    conditions: dict[str, Condition] = {}
    by_event: dict[tuple[int, str], list[Condition]] = {}
    properties: dict[int, set[str]] = {}
    kept = frozenset(keep_properties)
    for cohort in cohorts:
        properties.setdefault(cohort.project, set(kept)).update(cohort.user_properties)
        for c in cohort.conditions:
            if c.key not in conditions:
                conditions[c.key] = c
                by_event.setdefault((c.project, c.event_type), []).append(c)
    return CohortSet(cohorts, conditions, {k: tuple(v) for k, v in by_event.items()},
                     {p: frozenset(names) for p, names in properties.items()})


def parse_cohorts(definitions: Any, path: str = "cohorts", keep_properties: Iterable[str] = ()) -> CohortSet:
    """Check and compile a list of definitions (the ``cohorts`` settings key)."""
    if not isinstance(definitions, Sequence) or isinstance(definitions, (str, bytes)):
        raise CohortError(path, f"expected a list of cohorts, got {_kind(definitions)}; write [{{id: ..., ...}}]")
    return compile_cohorts((parse_cohort(d, f"{path}[{i}]") for i, d in enumerate(definitions)), keep_properties)


def parse_members(value: Any, path: str = "members") -> frozenset[str]:
    """A static cohort's uploaded members: a list of user ids."""
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise CohortError(path, f"expected a list of user ids, got {_kind(value)}; write [\"user-1\", \"user-2\"]")
    for i, user_id in enumerate(value):
        if not isinstance(user_id, str) or not user_id:
            raise CohortError(f"{path}[{i}]", f"expected a user id (a non-empty string), got {_kind(user_id)}")
    return frozenset(value)


def parse_cohort(definition: Any, path: str = "cohort") -> Cohort:
    """Check and compile one definition; ``path`` prefixes the paths in errors."""
    d = _mapping(definition, path, "{id: ..., project: ..., name: ..., rule: {...}}")
    _known(d, path, ("id", "project", "name", "rule", "static"), "a cohort")
    cohort_id = _required(d, path, "id", "an id such as abc12de")
    if not isinstance(cohort_id, str) or not _ID.fullmatch(cohort_id):
        raise CohortError(f"{path}.id", f"{cohort_id!r} is not an id: write 1 to 64 letters, digits, _ or -")
    project = _required(d, path, "project", "the project id, e.g. 424242")
    if isinstance(project, bool) or not isinstance(project, int) or project <= 0:
        raise CohortError(f"{path}.project", f"expected a positive integer project id, got {project!r}")
    name = _required(d, path, "name", "a name")
    if not isinstance(name, str) or not name.strip():
        raise CohortError(f"{path}.name", "expected a non-empty string")
    static = d.get("static", False)
    if not isinstance(static, bool):
        raise CohortError(f"{path}.static", f"expected true or false, got {_kind(static)}")
    if static:
        if "rule" in d:
            raise CohortError(f"{path}.rule", "a static cohort has no rule: remove rule, or remove static: true")
        return Cohort(cohort_id, project, name, True, None, (), frozenset())
    if "rule" not in d:
        raise CohortError(path, "missing rule: write rule: {performed: ..., within_days: ...}, or static: true")
    builder = _Builder(project)
    rule = builder.rule(d["rule"], f"{path}.rule", 1)
    return Cohort(cohort_id, project, name, False, rule, tuple(builder.conditions), frozenset(builder.properties))


class _Builder:
    """Walks one cohort's rule, numbering its behavioral leaves and collecting the user properties it reads."""

    def __init__(self, project: int) -> None:
        self.project = project
        self.conditions: list[Condition] = []
        self.properties: set[str] = set()

    def rule(self, obj: Any, path: str, depth: int) -> Rule:
        if depth > MAX_DEPTH:
            raise CohortError(path, f"rules nest at most {MAX_DEPTH} deep; flatten and/or lists")
        r = _mapping(obj, path, "{performed: ...}, {user_property: ...}, {and: [...]}, {or: [...]} or {not: {...}}")
        kinds = [k for k in RULE_KINDS if k in r]
        if not kinds:
            found = ", ".join(map(str, r)) or "nothing"
            raise CohortError(path, f"found {found}; a rule starts with one of {', '.join(RULE_KINDS)}")
        if len(kinds) > 1:
            raise CohortError(path, f"{kinds[0]} and {kinds[1]} in one rule; write each in its own rule inside "
                                    "{and: [...]}")
        kind = kinds[0]
        if kind in ("and", "or"):
            _known(r, path, (kind,), f"an {kind} rule")
            items = r[kind]
            if not isinstance(items, Sequence) or isinstance(items, (str, bytes)) or not items:
                raise CohortError(f"{path}.{kind}", f"expected a non-empty list of rules, got {_kind(items)}")
            rules = tuple(self.rule(item, f"{path}.{kind}[{i}]", depth + 1) for i, item in enumerate(items))
            return AllOf(rules) if kind == "and" else AnyOf(rules)
        if kind == "not":
            _known(r, path, ("not",), "a not rule")
            return Negation(self.rule(r["not"], f"{path}.not", depth + 1))
        if kind == "user_property":
            _known(r, path, ("user_property", "op", "value"), "a user_property rule")
            name = r["user_property"]
            if not isinstance(name, str) or not name:
                raise CohortError(f"{path}.user_property", "expected a user property name, e.g. plan")
            self.properties.add(name)
            return UserPropertyRule(name, _comparison(r, path))
        return self.performed(r, path)

    def performed(self, r: Mapping[str, Any], path: str) -> Condition:
        _known(r, path, ("performed", "where", "count", "within_days", "between"), "a performed rule")
        event_type = r["performed"]
        if not isinstance(event_type, str) or not event_type:
            raise CohortError(f"{path}.performed", "expected an event type, e.g. purchase")
        where = r.get("where", [])
        if not isinstance(where, Sequence) or isinstance(where, (str, bytes)):
            raise CohortError(f"{path}.where", f"expected a list of filters, got {_kind(where)}")
        filters = tuple(_filter(f, f"{path}.where[{i}]") for i, f in enumerate(where))
        count_op, n = _count(r["count"], f"{path}.count") if "count" in r else ("at_least", 1)
        within, between = _window(r, path)
        # filters are and-ed: sorted, so reordering them keeps the key
        what = [self.project, event_type, sorted(orjson.dumps([f.column, f.name, f.test.op, f.test.value]).decode()
                                                 for f in filters), within, between]
        digest = hashlib.blake2b(orjson.dumps(what), digest_size=6).digest()
        key = base64.urlsafe_b64encode(digest).decode()
        condition = Condition(f"c{len(self.conditions)}", key, self.project, event_type, filters, count_op, n,
                              within, between)
        self.conditions.append(condition)
        return condition


def _filter(obj: Any, path: str) -> PropertyFilter:
    f = _mapping(obj, path, '{property: event_properties.plan, op: "=", value: pro}')
    _known(f, path, ("property", "op", "value"), "a filter")
    prop = _required(f, path, "property", "event_properties.<name>, user_properties.<name> or a column")
    if not isinstance(prop, str) or not prop:
        raise CohortError(f"{path}.property", f"expected a property name, got {_kind(prop)}")
    head, dot, rest = prop.partition(".")
    if dot and head in PROPERTY_COLUMNS and rest:
        return PropertyFilter(head, rest, _comparison(f, path))
    if not dot and prop in EXPORT_FIELDS:
        return PropertyFilter(None, prop, _comparison(f, path))
    raise CohortError(f"{path}.property", f"{prop!r} is not a row field: write event_properties.<name>, "
                                          "user_properties.<name> or an export column such as platform or country")


def _comparison(obj: Mapping[str, Any], path: str) -> Comparison:
    op = _required(obj, path, "op", "one of " + ", ".join(OPS))
    if op not in OPS:
        raise CohortError(f"{path}.op", f"unknown op {op!r}; write one of {', '.join(OPS)}")
    if op in ("is_set", "is_not_set"):
        if "value" in obj:
            raise CohortError(f"{path}.value", f"{op} takes no value: remove value")
        return Comparison(op)
    value = _required(obj, path, "value", f"the value to compare with {op}")
    if op in ("<", ">"):
        if _number(value) is None or not isinstance(value, (int, float)):
            raise CohortError(f"{path}.value", f"{op} compares numbers: write a number such as 10, got {value!r}")
    elif value is None:
        raise CohortError(f"{path}.value", "null is not a value: to test for a missing property write "
                                           "op: is_not_set (or is_set)")
    elif not isinstance(value, (str, int, float)) or (isinstance(value, float) and not math.isfinite(value)):
        raise CohortError(f"{path}.value", f"{op} compares with a string, number or boolean, got {_kind(value)}")
    return Comparison(op, value)


def _count(obj: Any, path: str) -> tuple[str, int]:
    c = _mapping(obj, path, "{op: at_least, n: 3}")
    _known(c, path, ("op", "n"), "a count")
    op = _required(c, path, "op", "at_least, at_most or exactly")
    if op not in COUNT_OPS:
        raise CohortError(f"{path}.op", f"unknown count op {op!r}; write at_least, at_most or exactly")
    n = _required(c, path, "n", "how many times, e.g. 3")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise CohortError(f"{path}.n", f"expected a whole number of times, 0 or more, got {n!r}")
    return op, n


def _window(r: Mapping[str, Any], path: str) -> tuple[int | None, tuple[int, int] | None]:
    if "within_days" in r and "between" in r:
        raise CohortError(path, "write either within_days or between, not both")
    if "within_days" in r:
        days = r["within_days"]
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_WINDOW_DAYS:
            raise CohortError(f"{path}.within_days", f"expected a number of days from 1 to {MAX_WINDOW_DAYS} "
                                                     f"(7: today and the 6 days before), got {days!r}")
        return days, None
    if "between" not in r:
        raise CohortError(path, "missing window: add within_days: 30 (today and the 29 days before) or "
                                "between: [\"2024-03-01\", \"2024-03-31\"] (UTC days, both included)")
    span = r["between"]
    if not isinstance(span, Sequence) or isinstance(span, (str, bytes)) or len(span) != 2:
        raise CohortError(f"{path}.between", "expected two UTC days, first and last: [\"2024-03-01\", \"2024-03-31\"]")
    days_ = []
    for i, text in enumerate(span):
        day = parse_day(text) if isinstance(text, str) and _DAY.fullmatch(text) else None
        if day is None:
            raise CohortError(f"{path}.between[{i}]", f"expected a day as YYYY-MM-DD, e.g. 2024-03-01, got {text!r}")
        days_.append(day)
    first, last = days_
    if first > last:
        raise CohortError(f"{path}.between", "the first day is after the last: write [earlier, later]")
    if last - first + 1 > MAX_WINDOW_DAYS:
        raise CohortError(f"{path}.between", f"spans {last - first + 1} days; at most {MAX_WINDOW_DAYS}")
    return None, (first, last)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, Sequence):
        return "a list"
    return type(value).__name__


def _mapping(obj: Any, path: str, shape: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise CohortError(path, f"expected a mapping, got {_kind(obj)}; write {shape}")
    return obj


def _known(obj: Mapping[str, Any], path: str, allowed: tuple[str, ...], what: str) -> None:
    for key in obj:
        if key not in allowed:
            raise CohortError(f"{path}.{key}", f"unknown key; {what} takes {', '.join(allowed)}")


def _required(obj: Mapping[str, Any], path: str, key: str, hint: str) -> Any:
    if key not in obj:
        raise CohortError(path, f"missing {key}: write {key}: {hint}")
    return obj[key]
