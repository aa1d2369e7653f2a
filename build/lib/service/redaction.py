"""Keep secrets and server-side paths out of answers and logs.

A tracking URI may carry credentials (``https://user:password@mlflow.example``); every message
that could name it goes through :func:`redact` before it reaches a log line or an HTTP answer.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["RedactingFilter", "redact", "split_credentials"]

# ``scheme://user:password@`` or ``scheme://token@`` inside any text.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s?#]+)@")


def _mask(match: re.Match[str]) -> str:
    user, sep, _password = match["userinfo"].partition(":")
    return f"{match['scheme']}{user}:***@" if sep else f"{match['scheme']}***@"


def redact(text: str) -> str:
    """``text`` with the password (or the token) of every URL in it replaced by ``***``.

    ``https://alice:s3cret@host/x`` becomes ``https://alice:***@host/x``;
    ``https://tok@host`` becomes ``https://***@host``.
    """
    return _USERINFO.sub(_mask, text)


def split_credentials(uri: str) -> tuple[str, tuple[str, str] | None]:
    """Split an HTTP(S) URI into the URI without its user info and ``(user, password)``.

    ``urllib`` (and so a plain probe) cannot use ``user:password@host`` URIs: it would look up
    ``user:password@host`` as a host name.

    Returns:
        (the URI without user info, the credentials or None).
    """
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri, None
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return bare, (unquote(parts.username or ""), unquote(parts.password or ""))


class RedactingFilter(logging.Filter):
    """A handler filter that redacts credentials from every record it formats (a library's
    exception may quote a URL with its password: MLflow's, requests')."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(text)
            record.exc_info = None
        return True
