"""pytest_agentmem.report."""
