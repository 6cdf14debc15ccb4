"""pytest_agentmem.services."""
