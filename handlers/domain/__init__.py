"""The domain the six built-in job types work on.

Pure functions (interpretation, pattern mining, insight questions, review
aggregation, plan building, manual suggestions) live in their own modules and
know nothing of the database; `schema.py` holds the tables and `store.py`
every read and write, so that a model-backed implementation of any one step
can replace its function without touching the queue or the SQL.
"""
