"""Keep secrets out of output: passwords in service URLs, DSNs and messages are masked.

Three nets, each catching what the others may miss:

- URL user info: ``scheme://user:password@host`` (the password may itself hold
  ``@``, ``:`` or ``%``-escapes: everything up to the last ``@`` before the host);
- key/value pairs whose key names a password (``password``, ``sslpassword``,
  ``PGPASSWORD``, ``requirepass``, ...), quoted or not, as in libpq keyword DSNs
  (``password='a b'``), query strings, dict reprs (``'password': 'x'``) and JSON;
- the secrets themselves: each server the plugin starts or attaches to registers
  its password (:func:`register_secret`), and any later occurrence of it is
  masked wherever it appears, whatever surrounds it.
"""

from __future__ import annotations

import re
import threading
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

_MASK = "***"
# scheme://user:password@host -- the password runs to the last "@" that is followed
# by a host (no further "@" before the path, the end of the token or a quote).
_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s'\"]*):(?P<pw>[^\s'\"<>/?#]*)@"
    r"(?=[^@\s'\"<>/?#]*(?:[/?#\s'\"<>),\]}]|$))")
# A key naming a password, optionally quoted, then = or :, then the value: quoted
# (with backslash escapes) or bare (up to a separator).
_KEYS = r"[\w.-]*(?:password|passwd|pwd|requirepass|secret)"
_KEYVALUE = re.compile(
    rf"""(?ix)
    (?P<key>(?P<q>['"]?)\b{_KEYS}(?P=q))      # the key, perhaps quoted
    (?P<sep>\s*[=:]\s*|\s+(?=['"]))            # = or : (or a space before a quoted value)
    (?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s&;,'")}}\]]+)""")
_REQUIREPASS = re.compile(r"(?im)^(\s*requirepass\s+)(\S+)")

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
#: Secrets shorter than this are not masked by value (they would mask ordinary words).
MIN_SECRET_CHARS = 6


def register_secret(secret: str | None) -> None:
    """Mask ``secret`` (and its %-decoded form) wherever :func:`redact_text` meets it."""
    if not secret:
        return
    with _secrets_lock:
        for form in {secret, unquote(secret)}:
            if len(form) >= MIN_SECRET_CHARS:
                _secrets.add(form)


def register_url_secret(url: str) -> None:
    """Register the password of a service URL (a no-op for a URL without one)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    register_secret(password)


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if parts.password is None:
        return redact_text(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{parts.username or ''}:{_MASK}@{host}" + (f":{port}" if port else "")
    return redact_text(urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)))


def _mask_value(match: re.Match[str]) -> str:
    value = match["value"]
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match['key']}{match['sep']}{quote}{_MASK}{quote}"


def redact_text(text: str) -> str:
    """Mask every URL password, ``password=...`` pair and registered secret in free text."""
    if not text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{_MASK}@", text)
    text = _KEYVALUE.sub(_mask_value, text)
    text = _REQUIREPASS.sub(lambda m: f"{m.group(1)}{_MASK}", text)
    with _secrets_lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, _MASK)
    return text


def redact_value(value: Any) -> Any:
    """``value`` with every string in it (dict keys and values, list items) redacted."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {redact_value(k) if isinstance(k, str) else k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    if isinstance(value, tuple):
        return tuple(redact_value(v) for v in value)
    return value
