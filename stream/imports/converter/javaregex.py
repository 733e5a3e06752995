"""Java regular expressions and replacement strings translated to Python ``re``; RegexError when they cannot be.

Amplitude evaluates ``filterPattern`` and ``replace_with`` with java.util.regex
(https://docs.oracle.com/javase/8/docs/api/java/util/regex/Pattern.html). The translation keeps Java's meaning:

* ``\\w \\d \\s \\b`` and case-insensitive matching are ASCII-only in Java by default: patterns compile with re.ASCII.
* ``.`` does not match any Java line terminator (``\\n \\r \\u0085 \\u2028 \\u2029``) unless ``(?s)`` is on.
* ``(?<name>...)`` and ``\\k<name>`` become ``(?P<name>...)`` and ``(?P=name)``; ``\\Q...\\E`` quotes; ``\\z`` is
  Python's ``\\Z`` and Java's ``\\Z`` allows a final line terminator; ``\\h \\v \\R \\e \\cX \\x{h..h} \\0ooo`` are
  spelled out; POSIX classes ``\\p{Lower}`` ... ``\\p{Space}`` (ASCII in Java) become explicit classes.
* Inline flags ``(?i) (?s) (?m)`` may appear anywhere, as in Java: from that point to the end of the group.
* Possessive quantifiers and atomic groups are kept (Python 3.11 has them).

What Python cannot express is refused with a message: Unicode properties (``\\p{L}``), class unions and
intersections (``[a[b]]``, ``&&``), ``\\G``, ``\\X``, ``\\b{g}`` and the flags ``(?x) (?u) (?U) (?d)``.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field


class RegexError(ValueError):
    """A Java regular expression or replacement that is invalid or has no Python equivalent."""


_PUNCT = "".join("\\" + c for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_POSIX = {
    "Lower": "a-z", "Upper": "A-Z", "ASCII": "\\x00-\\x7f", "Alpha": "a-zA-Z", "Digit": "0-9",
    "Alnum": "a-zA-Z0-9", "Punct": _PUNCT, "Graph": "a-zA-Z0-9" + _PUNCT, "Print": "a-zA-Z0-9\\x20" + _PUNCT,
    "Blank": " \\t", "Cntrl": "\\x00-\\x1f\\x7f", "XDigit": "0-9a-fA-F", "Space": " \\t\\n\\x0b\\f\\r",
}
_HSPACE = "\\t \\xa0\\u1680\\u180e\\u2000-\\u200a\\u202f\\u205f\\u3000"
_VSPACE = "\\n\\x0b\\f\\r\\x85\\u2028\\u2029"
_TERMINATORS = "\\n\\r\\x85\\u2028\\u2029"
_SUPPORTED_POSIX = ", ".join(f"\\p{{{name}}}" for name in _POSIX)
_GROUP_NAME = re.compile(r"<([A-Za-z][A-Za-z0-9]*)>")
_INLINE_FLAGS = re.compile(r"([A-Za-z]*)(?:-([A-Za-z]*))?([:)])")


@dataclass
class _Level:
    """One open group: whether ``.`` matches terminators here, and the scoped-flag groups opened inside it."""

    dotall: bool
    scopes: list[str] = field(default_factory=list)


def compile_java_regex(pattern: str) -> re.Pattern[str]:
    """Compile a Java regular expression to an equivalent Python pattern, or raise RegexError."""
    translated = translate_java_regex(pattern)
    with warnings.catch_warnings():
        # Python warns about "[[" or "--" it may read differently one day; the translation already escaped them.
        warnings.simplefilter("ignore", FutureWarning)
        try:
            return re.compile(translated, re.ASCII)
        except (re.error, OverflowError, RecursionError) as exc:
            reason = getattr(exc, "msg", None) or str(exc)
            raise RegexError(f"invalid regular expression {pattern!r}: {reason}") from None


def translate_java_regex(pattern: str) -> str:
    """The Python ``re`` spelling of a Java regular expression (to compile with re.ASCII)."""
    out: list[str] = []
    levels = [_Level(dotall=False)]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            text, i = _escape(pattern, i, in_class=False)
            out.append(text)
        elif ch == "[":
            text, i = _char_class(pattern, i)
            out.append(text)
        elif ch == "(":
            i = _open_group(pattern, i, out, levels)
        elif ch == ")":
            if len(levels) == 1:
                raise RegexError(f"invalid regular expression {pattern!r}: unmatched ')' at position {i}")
            level = levels.pop()
            out.append(")" * len(level.scopes) + ")")
            i += 1
        elif ch == "|":
            # an inline flag covers the rest of its alternative only: close its scope and reopen it after "|"
            scopes = levels[-1].scopes
            out.append(")" * len(scopes) + "|" + "".join(scopes))
            i += 1
        elif ch == ".":
            out.append("." if levels[-1].dotall else f"[^{_TERMINATORS}]")
            i += 1
        else:
            out.append(ch)
            i += 1
    if len(levels) > 1:
        raise RegexError(f"invalid regular expression {pattern!r}: missing ')'")
    out.append(")" * len(levels[0].scopes))
    return "".join(out)


def _open_group(pattern: str, i: int, out: list[str], levels: list[_Level]) -> int:
    """Translate the group opening at ``i``; returns the position after it."""
    current = levels[-1]
    if not pattern.startswith("(?", i):
        out.append("(")
        levels.append(_Level(current.dotall))
        return i + 1
    rest = pattern[i + 2:]
    if rest.startswith("<") and not rest.startswith(("<=", "<!")):
        m = _GROUP_NAME.match(rest)
        if m is None:
            raise RegexError(f"invalid regular expression {pattern!r}: bad group name at position {i}; "
                             "write (?<name>...) with a letter then letters or digits")
        out.append(f"(?P<{m.group(1)}>")
        levels.append(_Level(current.dotall))
        return i + 2 + m.end()
    for opener in ("<=", "<!", "=", "!", ">", ":"):
        if rest.startswith(opener):
            out.append("(?" + opener)
            levels.append(_Level(current.dotall))
            return i + 2 + len(opener)
    m = _INLINE_FLAGS.match(rest)
    if m is None:
        raise RegexError(f"invalid regular expression {pattern!r}: unknown group '(?{rest[:1]}' at position {i}; "
                         "Java accepts (?:, (?=, (?!, (?<=, (?<!, (?>, (?<name> and the flags (?i) (?s) (?m)")
    on, off, end = m.group(1), m.group(2) or "", m.group(3)
    for flag in on + off:
        if flag not in "ism":
            raise RegexError(f"regular expression {pattern!r}: flag (?{flag}) is not supported; "
                             "only (?i), (?s) and (?m) are")
    dotall = "s" in on or (current.dotall and "s" not in off)
    opener = f"(?{on}-{off}:" if off else (f"(?{on}:" if on else "(?:")
    if end == ":":
        out.append(opener)
        levels.append(_Level(dotall))
    else:  # (?i) mid-pattern: Python only takes global flags at the start, so scope the rest of this group
        if on or off:
            out.append(opener)
            current.scopes.append(opener)
        current.dotall = dotall
    return i + 2 + m.end()


def _char_class(pattern: str, i: int) -> tuple[str, int]:
    """Translate the character class opening at ``i``; returns it and the position after its ``]``."""
    out = ["["]
    i += 1
    n = len(pattern)
    if i < n and pattern[i] == "^":
        out.append("^")
        i += 1
    first = True
    while True:
        if i >= n:
            raise RegexError(f"invalid regular expression {pattern!r}: a character class '[' is not closed")
        ch = pattern[i]
        if ch == "]" and not first:
            out.append("]")
            return "".join(out), i + 1
        if ch == "[":
            raise RegexError(f"regular expression {pattern!r}: nested classes like [a[bc]] are not supported; "
                             "list all the characters in one class")
        if pattern.startswith("&&", i):
            raise RegexError(f"regular expression {pattern!r}: class intersection && is not supported; "
                             "list the characters the intersection allows")
        if ch == "\\":
            text, i = _escape(pattern, i, in_class=True)
            out.append(text)
        else:
            # "]" first is a literal in both languages; & ~ | are escaped so Python never reads a set operation
            out.append("\\" + ch if ch in "]&~|" else ch)
            i += 1
        first = False


def _escape(pattern: str, i: int, in_class: bool) -> tuple[str, int]:
    """Translate the escape sequence at ``i``; returns its Python spelling and the position after it."""
    n = len(pattern)
    if i + 1 >= n:
        raise RegexError(f"invalid regular expression {pattern!r}: it ends with a lone backslash; "
                         "write \\\\ for a backslash")
    c = pattern[i + 1]
    if c == "Q":
        end = pattern.find("\\E", i + 2)
        literal = pattern[i + 2:] if end < 0 else pattern[i + 2:end]
        return "".join(re.escape(ch) for ch in literal), (n if end < 0 else end + 2)
    if c == "E":  # a \E without \Q: Java ignores it
        return "", i + 2
    if c in "pP":
        return _property(pattern, i, c == "P", in_class)
    if c in "hHvV":
        content = _HSPACE if c in "hH" else _VSPACE
        if c.isupper():
            if in_class:
                raise RegexError(f"regular expression {pattern!r}: \\{c} inside [...] is not supported")
            return f"[^{content}]", i + 2
        return (content if in_class else f"[{content}]"), i + 2
    if c == "R":
        if in_class:
            raise RegexError(f"regular expression {pattern!r}: \\R inside [...] is not allowed")
        return f"(?:\\r\\n|[{_VSPACE}])", i + 2
    if c == "e":
        return "\\x1b", i + 2
    if c == "c":
        if i + 2 >= n:
            raise RegexError(f"invalid regular expression {pattern!r}: \\c needs a control letter")
        return _code_point(pattern, ord(pattern[i + 2]) ^ 64), i + 3
    if c == "x" and pattern.startswith("{", i + 2):
        end = pattern.find("}", i + 3)
        digits = pattern[i + 3:end] if end > 0 else ""
        if not digits or any(d not in "0123456789abcdefABCDEF" for d in digits):
            raise RegexError(f"invalid regular expression {pattern!r}: \\x{{...}} needs hexadecimal digits")
        return _code_point(pattern, int(digits, 16)), end + 1
    if c == "0":
        j = i + 2
        while j < n and j < i + 5 and pattern[j] in "01234567":
            j += 1
        digits = pattern[i + 2:j]
        if len(digits) == 3 and digits[0] > "3":  # Java reads \0mnn only up to \0377
            digits, j = digits[:2], j - 1
        if not digits:
            raise RegexError(f"invalid regular expression {pattern!r}: \\0 must be followed by octal digits")
        return _code_point(pattern, int(digits, 8)), j
    if c == "z" and not in_class:
        return "\\Z", i + 2
    if c == "Z" and not in_class:
        return f"(?=(?:\\r\\n|[{_TERMINATORS}])?\\Z)", i + 2
    if c == "k" and not in_class:
        m = _GROUP_NAME.match(pattern, i + 2)
        if m is None:
            raise RegexError(f"invalid regular expression {pattern!r}: write \\k<name> to refer to a named group")
        return f"(?P={m.group(1)})", m.end()
    if c in "GX" or (c == "b" and pattern.startswith("{", i + 2)):
        raise RegexError(f"regular expression {pattern!r}: \\{c} has no Python equivalent; rewrite without it")
    return "\\" + c, i + 2


def _property(pattern: str, i: int, negated: bool, in_class: bool) -> tuple[str, int]:
    """Translate ``\\p{Name}`` / ``\\pL`` (or ``\\P``) at ``i``."""
    n = len(pattern)
    if pattern.startswith("{", i + 2):
        end = pattern.find("}", i + 3)
        if end < 0:
            raise RegexError(f"invalid regular expression {pattern!r}: \\p{{ is not closed")
        name, after = pattern[i + 3:end], end + 1
    elif i + 2 < n:
        name, after = pattern[i + 2], i + 3
    else:
        raise RegexError(f"invalid regular expression {pattern!r}: \\p needs a property name")
    content = _POSIX.get(name)
    if content is None:
        raise RegexError(f"regular expression {pattern!r}: \\p{{{name}}} is not supported (Python has no Unicode "
                         f"properties); write the characters out, e.g. [A-Za-z], or use {_SUPPORTED_POSIX}")
    if in_class:
        if negated:
            raise RegexError(f"regular expression {pattern!r}: \\P{{{name}}} inside [...] is not supported; "
                             "write [^...] with the characters instead")
        return content, after
    return (f"[^{content}]" if negated else f"[{content}]"), after


def _code_point(pattern: str, code: int) -> str:
    if code > 0x10FFFF:
        raise RegexError(f"invalid regular expression {pattern!r}: code point {code:#x} beyond Unicode")
    return f"\\U{code:08x}"


def compile_java_replacement(replacement: str, regex: re.Pattern[str]) -> str:
    """A Java replacement (``$1``, ``${name}``, ``\\`` escapes the next character) as a Python ``re.sub`` template.

    Group references are checked against ``regex`` here, so a bad one fails at load, not on the first row.
    """
    out: list[str] = []
    i, n = 0, len(replacement)
    while i < n:
        ch = replacement[i]
        if ch == "\\":
            if i + 1 >= n:
                raise RegexError(f"replacement {replacement!r} ends with a lone backslash; write \\\\ for one")
            out.append(_template_literal(replacement[i + 1]))
            i += 2
        elif ch == "$":
            reference, i = _group_reference(replacement, i, regex)
            out.append(f"\\g<{reference}>")
        else:
            out.append(_template_literal(ch))
            i += 1
    return "".join(out)


def _template_literal(ch: str) -> str:
    return "\\\\" if ch == "\\" else ch


def _group_reference(replacement: str, i: int, regex: re.Pattern[str]) -> tuple[str, int]:
    """The group ``$`` at ``i`` refers to, read as Java does: ``${name}``, or digits while such a group exists."""
    n = len(replacement)
    if replacement.startswith("{", i + 1):
        end = replacement.find("}", i + 2)
        name = replacement[i + 2:end] if end > 0 else ""
        if name not in regex.groupindex:
            raise RegexError(f"replacement {replacement!r}: the pattern has no group named {name!r}; "
                             "write \\$ for a dollar sign")
        return name, end + 1
    if i + 1 >= n or not replacement[i + 1].isdigit() or not replacement[i + 1].isascii():
        raise RegexError(f"replacement {replacement!r}: '$' must be followed by a group number or {{name}}; "
                         "write \\$ for a dollar sign")
    number = int(replacement[i + 1])
    if number > regex.groups:
        raise RegexError(f"replacement {replacement!r}: the pattern has no group {number} "
                         f"(it has {regex.groups}); write \\$ for a dollar sign")
    j = i + 2
    # Java keeps reading digits while the longer number is still a group of the pattern
    while j < n and replacement[j] in "0123456789" and number * 10 + int(replacement[j]) <= regex.groups:
        number = number * 10 + int(replacement[j])
        j += 1
    return str(number), j
