"""Keep the credentials a run knows out of everything it shows (issue 14, items 1-2).

A server or proxy may echo the ``Authorization`` header in its error body
(``HTTP 401: authorization failed for Basic Z3c6...``), and any exception
text may quote a secret. So redaction does not depend on where a message
comes from: every credential the run resolves is registered here
(:func:`register_credentials`, called by
:class:`gridwatch.influx.client.Credentials`), and the places where text
leaves the process pass it through :func:`redact` first: the command line's
error line, the log handlers (:class:`RedactingFilter`), ``run.json``
(:func:`redact_data`) and the report.

Each secret is hidden in the forms it travels in: as is, in the base64 of
``user:password`` of a ``Basic`` header, URL-encoded, HTML-escaped and
base64url-encoded. Forms shorter than :data:`MIN_SECRET_CHARS` are not
registered: a short string turns up by chance in a report's embedded plots
(base64) and in ordinary words, and replacing it there would garble them.
The ``Basic`` header of a short password is still long enough to be hidden.

Examples
--------
>>> register_credentials(username="gw", password="pw-123456")
>>> redact("HTTP 401: authorization failed for Basic Z3c6cHctMTIzNDU2")
'HTTP 401: authorization failed for Basic [redacted]'
>>> clear()
"""

from __future__ import annotations

import base64
import html
import logging
import re
import threading
from urllib.parse import quote

REDACTED = "[redacted]"
"""What replaces a secret."""

MIN_SECRET_CHARS = 8
"""Shorter forms of a secret are not registered (see the module's notes)."""

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern | None = None


def secret_forms(*, username: str = "", password: str = "", token: str = "") -> set[str]:
    """The strings that would reveal these credentials.

    Parameters
    ----------
    username, password : str, optional
        Basic authentication. The user name alone is not a secret; with a
        password, ``user:password`` and its base64 (the ``Basic`` header's
        value) are.
    token : str, optional
        A token sent as ``Authorization: Token <token>``.

    Returns
    -------
    set of str
        Each secret as is, URL-encoded and base64url-encoded, plus the
        ``user:password`` forms; none shorter than :data:`MIN_SECRET_CHARS`.

    Examples
    --------
    >>> forms = secret_forms(username="gw", password="pw-123456")
    >>> "pw-123456" in forms, "Z3c6cHctMTIzNDU2" in forms, "gw" in forms
    (True, True, False)
    """
    forms: set[str] = set()
    raw = [s for s in (password, token) if s]
    if password:
        raw.append(f"{username}:{password}")
    for secret in raw:
        encoded = secret.encode("utf-8")
        standard = base64.b64encode(encoded).decode("ascii")
        urlsafe = base64.urlsafe_b64encode(encoded).decode("ascii")
        forms |= {secret, quote(secret, safe=""), html.escape(secret), standard,
                  standard.rstrip("="), urlsafe, urlsafe.rstrip("=")}
    return {form for form in forms if len(form) >= MIN_SECRET_CHARS}


def register_credentials(*, username: str = "", password: str = "", token: str = "") -> None:
    """Remember these credentials: from now on :func:`redact` hides them.

    Parameters
    ----------
    username, password, token : str, optional
        As for :func:`secret_forms`.
    """
    forms = secret_forms(username=username, password=password, token=token)
    global _pattern
    with _lock:
        if forms - _secrets:
            _secrets.update(forms)
            _pattern = None


def clear() -> None:
    """Forget every registered secret (for tests)."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None


def _compiled() -> re.Pattern | None:
    global _pattern
    with _lock:
        if _pattern is None and _secrets:
            # Longest first, so a secret is hidden whole before any secret inside it.
            ordered = sorted(_secrets, key=lambda s: (-len(s), s))
            _pattern = re.compile("|".join(re.escape(s) for s in ordered))
        return _pattern


def redact(text) -> str:
    """``text`` with every registered secret replaced by :data:`REDACTED`.

    Parameters
    ----------
    text : str or object
        Anything; non-strings are converted with ``str``.

    Returns
    -------
    str
    """
    text = text if isinstance(text, str) else str(text)
    pattern = _compiled()
    return text if pattern is None else pattern.sub(REDACTED, text)


def redact_data(obj):
    """A copy of JSON-like data (dicts, lists, strings) with every string redacted.

    Keys are redacted too; numbers, booleans and ``None`` pass unchanged.

    Parameters
    ----------
    obj : dict, list, tuple, str or scalar

    Returns
    -------
    The same structure (tuples become lists).
    """
    if _compiled() is None:
        return obj
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact_data(k): redact_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_data(v) for v in obj]
    return obj


class RedactingFilter(logging.Filter):
    """A handler filter that redacts a record's message and traceback before it is formatted.

    Add it to each handler (``handler.addFilter(RedactingFilter())``): a
    handler's filters see the records of child loggers too, a logger's do not.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record`` in place with its secrets hidden; always keep it."""
        if _compiled() is None:
            return True
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
