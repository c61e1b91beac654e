"""What the queue does beyond a job's life: cancel, per-key concurrency limits,
unique windows, snooze, waiting for a result, progress, per-type retry policy,
and parking jobs no running pool serves.
"""
