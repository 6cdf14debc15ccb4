"""pytest_agentmem.memory."""
