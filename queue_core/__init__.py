"""skiplock's queue core: the job table and every operation on it."""
