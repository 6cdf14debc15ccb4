"""Exceptions raised by pytest-agentmem.

Every error names what went wrong and, where there is one, the fix.
"""

from __future__ import annotations


class AgentmemError(Exception):
    """Base class of every error pytest-agentmem raises on purpose."""


class ConfigurationError(AgentmemError):
    """A setting, marker keyword or fixture argument is wrong."""


class ServiceStartError(AgentmemError):
    """A service (Postgres, Redis, a container) could not be provisioned.

    ``log_tail`` holds the last lines of the server's log, ``hint`` what to try.
    """

    def __init__(self, message: str, *, hint: str = "", log_tail: str = "") -> None:
        self.hint = hint
        self.log_tail = log_tail
        text = message
        if log_tail:
            text += "\n--- last lines of the server log ---\n" + log_tail.rstrip()
        if hint:
            text += "\nhint: " + hint
        super().__init__(text)


class ServiceUnavailableError(ServiceStartError):
    """A service the user pointed us at (an external URL) does not answer."""


class BaselineError(AgentmemError):
    """A stored baseline file is malformed, of an unknown version, or unwritable."""


class PerformanceRegression(AgentmemError):
    """A perf test breached an absolute threshold or regressed against its baseline."""

    def __init__(self, messages: list[str]) -> None:
        self.messages = list(messages)
        super().__init__("\n".join(self.messages))
