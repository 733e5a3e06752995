"""What can go wrong: ConverterError at load time, NoValue and FieldError at run time, and config paths."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

# Keys that read unambiguously after a dot; anything else is written as ["key"] so the path stays parseable.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_$@-]+")


class ConverterError(ValueError):
    """A configuration error found at load time.

    ``path`` locates the faulty element in the document (``convertToAmplitudeFunc.user_id[1]``, "" for the
    document itself), ``operator`` is the operator concerned (as written) or None; the message names both
    and says what to write instead.
    """

    def __init__(self, path: str, operator: str | None, message: str) -> None:
        self.path = path
        self.operator = operator
        self.detail = message
        where = path or "(document)"
        super().__init__(f"{where}: {operator}: {message}" if operator is not None else f"{where}: {message}")

    def __reduce__(self) -> tuple[type[ConverterError], tuple[str, str | None, str]]:
        return type(self), (self.path, self.operator, self.detail)


@dataclass(frozen=True)
class FieldError:
    """One output field a row could not fill; the field is left out of that row's result."""

    field: str
    message: str


class NoValue(Exception):
    """Raised by compiled sources when the row holds no value for them; the enclosing output field fails.

    Amplitude calls this NoValueFoundAtSource / NoValueException. Carrying a message only (no traceback
    work) keeps the common missing-field case cheap.
    """


class ArgError(Exception):
    """An operator's builder rejects its argument number ``index`` (0-based, after the name) at load time."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.message = message


def child_path(path: str, step: str | int) -> str:
    """The path of element ``step`` (an object key or a list index) below ``path``."""
    if isinstance(step, int):
        return f"{path}[{step}]"
    if not _PLAIN_KEY.fullmatch(step):
        return f"{path}[{json.dumps(step, ensure_ascii=False)}]"
    return f"{path}.{step}" if path else step
