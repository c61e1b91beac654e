"""Registers the six built-in job types (their modules land with the domain work)."""
