"""Where the history lives: a SQLite file or a PostgreSQL database, from one target string.

``--agentmem-history TARGET`` takes a plain path or ``sqlite:///path`` (a SQLite
file, the default embedded store) or ``postgresql://...`` / ``postgres://...``
(a team's shared store). :func:`parse_target` checks the text while options are
parsed; :func:`describe` is the form every message prints (no password).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from .redact import redact_url

Kind = Literal["sqlite", "postgres"]

_POSTGRES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class Target:
    """A parsed history target: ``kind`` and either ``path`` (SQLite) or ``url`` (Postgres)."""

    kind: Kind
    path: Path | None = None
    url: str | None = None

    def describe(self) -> str:
        """The target as messages print it: the path, or the URL with its password masked."""
        return str(self.path) if self.kind == "sqlite" else redact_url(self.url or "")

    def resolved(self, root: Path) -> Target:
        """A relative SQLite path taken from ``root`` (the rootdir), as the report paths are."""
        if self.kind == "sqlite" and self.path is not None and not self.path.is_absolute():
            return Target("sqlite", path=root / self.path)
        return self

    def __str__(self) -> str:
        return self.describe()


def parse_target(value: str) -> Target:
    """``path``, ``sqlite:///path`` or ``postgresql://...``; a usage error names the forms."""
    text = str(value).strip()
    lower = text.lower()
    if lower.startswith(_POSTGRES):
        return Target("postgres", url=text)
    if lower.startswith("sqlite://"):
        rest = text[len("sqlite://"):]
        if not rest.startswith("/") or rest in ("/", ""):
            raise pytest.UsageError(
                f"--agentmem-history: expected sqlite:///relative/path or sqlite:////absolute/path, "
                f"got {text!r}")
        path = rest[1:]  # sqlite:///x.db -> x.db (relative), sqlite:////tmp/x.db -> /tmp/x.db
        return Target("sqlite", path=Path(path).expanduser())
    if "://" in text:
        raise pytest.UsageError(
            f"--agentmem-history: unknown store {redact_url(text)!r}; give a file path, "
            "sqlite:///path or postgresql://user@host/db")
    if not text:
        raise pytest.UsageError("--agentmem-history: expected a file path, sqlite:///path or "
                                "postgresql://user@host/db, got an empty value")
    return Target("sqlite", path=Path(text).expanduser())
