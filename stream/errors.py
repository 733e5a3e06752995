"""The error taxonomy: what went wrong, where, and what to do about it.

Three kinds, decided in one place per external system (see ``stream.retry``):
invalid input is never retried (it goes to the dead-letter topic), a transient
failure is retried with backoff, anything else stops the worker with a message
that names the coordinates and the cure.
"""

from __future__ import annotations


class StreamError(Exception):
    """Base class: every error the project raises on purpose."""


class ConfigError(StreamError):
    """The configuration is invalid; the message names the key and the file."""


class ProbeError(StreamError):
    """A dependency (broker, bucket, queue) is missing or not accessible."""


class TransientError(StreamError):
    """A failure worth retrying later (throttling, a broker or S3 hiccup)."""


class FatalError(StreamError):
    """A failure retrying cannot fix; the worker stops and says why."""
