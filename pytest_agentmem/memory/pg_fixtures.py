"""Placeholder: Postgres repository and graph store fixtures (issue 4)."""
