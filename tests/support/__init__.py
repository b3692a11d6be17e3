"""Test doubles that speak real protocols (a local HTTP subscriber), shared by the test modules."""
