"""The prefork worker pool: one master, N children."""
