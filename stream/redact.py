"""Secrets never stored or logged: credentials are cut out of what stream keeps (dead letters) and writes to logs.

Two kinds of secret reach stream: credential fields inside JSON bodies (Segment's ``writeKey``, Amplitude's
``api_key``), which a rejected input would otherwise carry into the dead-letter topic, and configured secrets
(write keys, API keys, the admin token, the Kafka SASL password), which an error message or a log line could
echo. ``redact_json`` removes the first kind from raw bytes, whatever their shape: bytes that parse as JSON are
redacted on the parsed value (so a field name written with escapes, ``"write\\u004bey"``, is the field it names)
and encoded again; other bytes (a body cut short, not JSON at all) are redacted by a pattern that also knows the
names written with ``\\uXXXX`` escapes. ``SecretFilter`` replaces the second kind in every log record of the
process.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

import msgspec

REDACTED = "[redacted]"
CREDENTIAL_FIELDS = ("writeKey", "api_key")
"""JSON fields that hold a credential: Segment's write key, Amplitude's project API key."""


def _name_pattern(name: str) -> bytes:
    """A field name as JSON may spell it: each character as itself or as a ``\\uXXXX`` escape (hex digits in
    either case)."""
    out = []
    for ch in name:
        digits = b"".join(b"[" + d.lower() + d.upper() + b"]" if d.isalpha() else d
                          for d in (bytes([c]) for c in f"{ord(ch):04x}".encode()))
        out.append(b"(?:" + re.escape(ch.encode()) + rb"|\\u" + digits + b")")
    return b"".join(out)


_FIELD = re.compile(rb'("(?:' + b"|".join(_name_pattern(f) for f in CREDENTIAL_FIELDS) +
                    rb')"\s*:\s*)("(?:[^"\\]|\\.)*"?|[^,}\]\s]+)')
_ESCAPE = b"\\u"


def redact_json(raw: bytes | None) -> bytes | None:
    """``raw`` with the value of every credential field replaced by ``"[redacted]"`` (works on any bytes).

    Bytes that parse as JSON are redacted on the parsed value, field names unescaped, and encoded again (compact,
    keys in their order); when nothing needs redacting they are returned as they came. Bytes that do not parse (a
    body cut short, not JSON at all) are redacted as far as they go, names written with escapes included."""
    if raw is None or (_ESCAPE not in raw and not any(f.encode() in raw for f in CREDENTIAL_FIELDS)):
        return raw
    try:
        value = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return _FIELD.sub(rb'\1"' + REDACTED.encode() + b'"', raw)
    if not _holds_credential(value):
        return raw
    return msgspec.json.encode(redact_fields(value))


def _holds_credential(obj: Any) -> bool:
    if isinstance(obj, dict):
        return any(k in CREDENTIAL_FIELDS or _holds_credential(v) for k, v in obj.items())
    if isinstance(obj, list):
        return any(_holds_credential(v) for v in obj)
    return False


def redact_fields(obj: Any) -> Any:
    """A decoded JSON value with every credential field's value replaced, at any depth (a copy)."""
    if isinstance(obj, dict):
        return {k: REDACTED if k in CREDENTIAL_FIELDS else redact_fields(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact_fields(v) for v in obj]
    return obj


def configured_secrets(settings: Any) -> list[str]:
    """Every secret the settings hold: API keys, write keys, the admin token, the SASL password."""
    out = [k for p in settings.projects for k in p.api_keys]
    out += [s.write_key for p in settings.projects for s in p.segment_sources]
    token = getattr(getattr(settings, "admin", None), "token", None)
    smtp = getattr(getattr(settings, "notifications", None), "smtp", None)
    mail = smtp.password if smtp is not None else None
    for value in (settings.kafka.sasl_password, token.get_secret_value() if token is not None else None,
                  mail.get_secret_value() if mail is not None else None):
        if value:
            out.append(value)
    return out


class SecretFilter(logging.Filter):
    """Replaces configured secrets in the final text of every log record (message and arguments)."""

    def __init__(self, secrets: Iterable[str]):
        super().__init__()
        # longest first, so a secret that contains another is replaced whole; very short ones would blank out
        # ordinary words and are not worth the noise
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for s in self.secrets:
            if s in text:
                text = text.replace(s, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        scrubbed = self.scrub(message)
        if record.exc_info and record.exc_info[1] is not None:
            text = self.scrub(str(record.exc_info[1]))
            if text != str(record.exc_info[1]):   # the traceback would repeat it: keep the type and the scrubbed text
                record.exc_text = f"{type(record.exc_info[1]).__name__}: {text}"
                record.exc_info = None
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


def install_log_filter(settings: Any) -> SecretFilter:
    """Scrub the settings' secrets from every log record the process creates, whichever handler writes it (faust
    sets up handlers of its own): the record factory applies the filter as each record is made."""
    f = SecretFilter(configured_secrets(settings))
    make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        f.filter(record)
        return record
    logging.setLogRecordFactory(factory)
    return f
