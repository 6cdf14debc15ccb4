"""pytest_agentmem.scenarios."""
