"""pytest_agentmem.load."""
