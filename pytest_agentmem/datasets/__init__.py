"""pytest_agentmem.datasets."""
