"""The standard agent-memory scenarios, run against the shipped Postgres/pgvector service.

This is how a user runs them against their own system: import them into a test
module; override ``memory_service`` (or ``memory_repo``) in a conftest to swap the system.
"""

from pytest_agentmem.scenarios.locomo import *  # noqa: F401,F403,E402
from pytest_agentmem.scenarios.standard import *  # noqa: F401,F403
from pytest_agentmem.scenarios.users import *  # noqa: F401,F403,E402
