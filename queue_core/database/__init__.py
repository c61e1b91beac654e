"""Reaching PostgreSQL: URLs and the embedded cluster, connections and the
job's transaction (db), time bounds, fault classification, callers'
connections of other drivers, array literals, grants, migrations and scratch
databases.
"""
