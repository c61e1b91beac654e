"""`skiplock dashboard`: a server-rendered web view of the queue, for operators.

Pages: the overview, the job listing (keyset paging), one job, the processes,
the schedules, and the action log. Read-only unless started with
`--allow-actions`; then retry, run now, cancel, pause and resume are POSTs from
its own pages (Origin) with a CSRF token, bulk ones confirmed on a page of
their own, each logged in "DashboardAction" in its own transaction. It answers
only to its own names (the Host header: security.py, DNS rebinding).

Flask and waitress come with the extra `skiplock[dashboard]`; nothing here
imports them until the command runs, so the rest of skiplock works without.
"""
