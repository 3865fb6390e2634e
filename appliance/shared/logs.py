"""Logging: one JSON object per line on stdout, for journald, with secrets and names redacted.

Every line has ``ts`` (RFC 3339 UTC), ``level``, ``logger`` and ``msg``; ``request_id`` while a
request is being served (bound by ``LogContextMiddleware``, appliance/web/middleware.py); any
``extra={...}`` fields; ``exc`` (the formatted traceback) when an exception is logged. JSON escapes
newlines, so a traceback stays one line.

Redaction (``RedactingFilter``) runs on every record before it is written:

* ``Bearer <x>`` in text becomes ``Bearer [redacted]``;
* the value of a field (an ``extra`` key or a nested dict key) named ``token``, ``admin_token``,
  ``authorization``, ``code``, ``password``, ``secret`` or ``participants``, or ending in
  ``_token``, ``_secret`` or ``_password``, becomes ``"[redacted]"``; so does ``name=value`` or
  ``"name": "value"`` written into a message with one of those names;
* a run of 40 or more base64url characters (``A-Z a-z 0-9 - _``) that mixes upper and lower case
  letters becomes ``[redacted]``. That is the shape of our tokens (``secrets.token_urlsafe(32)``,
  43 characters; one lacks either case with odds of about 1 in 10^9). sha256 hex digests (one
  case only), UUIDs and snake_case identifiers are left alone: they are not secrets, and a log
  that keeps hashes can still be matched against the ledger.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from appliance.shared.times import to_rfc3339

REDACTED = "[redacted]"
SENSITIVE_KEYS = frozenset(
    {"token", "admin_token", "authorization", "code", "password", "secret", "participants"}
)
_SENSITIVE_SUFFIXES = ("_token", "_secret", "_password")

_BEARER = re.compile(r"\b(Bearer)\s+[^\s\"',;]+", re.IGNORECASE)
_KEY_NAMES = "|".join(sorted(SENSITIVE_KEYS, key=len, reverse=True))
_KEY_VALUE = re.compile(rf"\b({_KEY_NAMES})=[^\s&,;\"']+", re.IGNORECASE)
_JSON_KEY_VALUE = re.compile(rf"\"({_KEY_NAMES})\"(\s*:\s*)\"(?:[^\"\\]|\\.)*\"", re.IGNORECASE)
_LONG_RUN = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{40,}(?![A-Za-z0-9_-])")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}
_HANDLER_MARK = "_venuebox_json"

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("venuebox_request_id", default=None)


# -- request id ----------------------------------------------------------------------------------


def bind_request_id(request_id: str | None) -> contextvars.Token[str | None]:
    """Stamp every log line of the current context (task, and threads it hands work to) with this id.
    Returns the token for ``reset_request_id``."""
    return _request_id.set(request_id)


def reset_request_id(token: contextvars.Token[str | None]) -> None:
    _request_id.reset(token)


def current_request_id() -> str | None:
    return _request_id.get()


# -- redaction -----------------------------------------------------------------------------------


def is_sensitive_key(key: str) -> bool:
    lowered = key.lower()
    return lowered in SENSITIVE_KEYS or lowered.endswith(_SENSITIVE_SUFFIXES)


def _redact_long_run(match: re.Match[str]) -> str:
    run = match.group(0)
    mixed_case = any(c.isupper() for c in run) and any(c.islower() for c in run)
    return REDACTED if mixed_case else run


def redact_text(text: str) -> str:
    """The text with bearer credentials, ``secret=...`` pairs and token-shaped strings replaced."""
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _KEY_VALUE.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    text = _JSON_KEY_VALUE.sub(lambda m: f'"{m.group(1)}"{m.group(2)}"{REDACTED}"', text)
    return _LONG_RUN.sub(_redact_long_run, text)


def redact_value(key: str, value: Any) -> Any:
    """A field's value as it may be logged: redacted whole if the key names a secret, else its
    strings (also inside dicts, lists and tuples) passed through ``redact_text``."""
    if is_sensitive_key(key):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {str(k): redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value("", v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_text(str(value))


class RedactingFilter(logging.Filter):
    """Redact a record in place: message (with its args merged in), ``extra`` fields, traceback.

    Put it on a handler, not a logger: a logger's filters do not see records propagated from its
    children, a handler's see them all."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let the handler report it as logging does
            return True
        record.msg, record.args = redact_text(message), ()
        for key, value in list(vars(record).items()):
            if key not in _RECORD_ATTRS:
                setattr(record, key, redact_value(key, value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


# -- output --------------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line.

    With ``level_prefix`` the line starts with the syslog priority (``<3>`` for errors): journald
    strips it and files the line at that priority, so ``journalctl -p warning`` works."""

    _PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6}

    def __init__(self, *, level_prefix: bool = False) -> None:
        super().__init__()
        self.level_prefix = level_prefix

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": to_rfc3339(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = vars(record).get("request_id") or current_request_id()
        if request_id:
            line["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and key not in line:
                line[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        try:
            # ASCII escapes: a line must never be lost to a stdout that cannot encode a name.
            text = json.dumps(line, default=str)
        except (TypeError, ValueError):  # a circular or otherwise unencodable extra
            text = json.dumps({k: v if isinstance(v, str) else repr(v) for k, v in line.items()})
        if self.level_prefix:
            priority = next((p for lvl, p in self._PRIORITY.items() if record.levelno >= lvl), 7)
            text = f"<{priority}>{text}"
        return text


def _is_journal(stream: TextIO) -> bool:
    """True when the stream is connected to journald: systemd sets ``JOURNAL_STREAM`` to the
    device:inode of the journal socket it gave us as stdout/stderr."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def setup_logging(
    level: str | int = "INFO", stream: TextIO | None = None, *, level_prefix: bool | None = None
) -> logging.Handler:
    """Send every log record (ours, uvicorn's) to ``stream`` (stdout by default) as JSON lines.

    Calling it again replaces the handler it installed before; other root handlers (pytest's
    capture) are left alone. ``level_prefix=None`` adds the syslog priority prefix only when the
    stream is the journal. Returns the handler."""
    stream = sys.stdout if stream is None else stream
    if level_prefix is None:
        level_prefix = _is_journal(stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(level_prefix=level_prefix))
    handler.addFilter(RedactingFilter())
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)

    # uvicorn's server messages go through the same handler; its access log stays off (the daemon
    # passes access_log=False, and request lines would only repeat what the metrics count).
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # APScheduler logs two INFO lines per job run: thousands an hour, saying nothing a tech needs.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # httpx logs one INFO line per request: one per uplink batch, which the uplink's state and
    # metrics already count; its warnings still come through.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler
