"""Keep secrets out of output: passwords in service URLs are masked."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_MASK = "***"
# user:password@ inside any URL-looking token, also when urlsplit cannot parse it.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@")
_KEYVALUE = re.compile(r"(?i)\b(password|passwd|pwd)=([^&\s]+)")


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


def redact_text(text: str) -> str:
    """Mask every ``scheme://user:password@`` and ``password=...`` in free text."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{_MASK}@", text)
    return _KEYVALUE.sub(lambda m: f"{m.group(1)}={_MASK}", text)
