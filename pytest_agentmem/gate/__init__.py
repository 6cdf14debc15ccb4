"""pytest_agentmem.gate."""
