"""``StrEnum`` on every supported Python (3.11 has it; 3.10 gets the same behaviour)."""

from __future__ import annotations

import sys
from enum import Enum

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10
    class StrEnum(str, Enum):
        """An enum whose members are their string values (``str()``, ``format()``, JSON)."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return str(self.value).__format__(spec)

__all__ = ["StrEnum"]
