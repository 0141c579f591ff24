"""Fixtures for tests/. The helpers live in tiny_models.py: tests/host has a conftest of its own,
so importing helpers `from conftest` would be ambiguous."""

from tiny_models import model, tok  # noqa: F401  (fixtures)
