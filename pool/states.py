"""The master's named states, the causes of a child's end, and its kinds of deadline.

String enums: observers, logs and the process table see the plain words
("running", "crashed", ...), and the code cannot misspell them.
"""

from __future__ import annotations

import enum


class PoolState(enum.StrEnum):
    RUNNING = "running"
    DRAINING = "draining"  # TERM/INT or until(): children finish their job, then exit
    STOPPING = "stopping"  # QUIT, a second INT, a halt: children abandon their jobs now


class Cause(enum.StrEnum):
    """Why a child ended (PoolObserver.on_child_exit)."""

    RECYCLED = "recycled"  # exited 0 by itself: --max-jobs-per-child, --max-memory-per-child
    CRASHED = "crashed"
    KILLED_TIMEOUT = "killed_timeout"  # its job overran its timeout
    KILLED_LOST = "killed_lost"  # its job was rescued elsewhere: its result is discarded
    FENCED = "fenced"  # its lease could not be renewed: stopped before it could run out
    STOPPED = "stopped"  # the pool's shutdown, HUP, TTOU
    CANCELLED = "cancelled"  # its job was cancelled (pool/cancelling.py) and ended FAILED


class Due(enum.StrEnum):
    """What a deadline of the master is for (Master.deadlines lists them all)."""

    TICK = "tick"  # title and observers, about once a second
    OUTAGE_RETRY = "outage retry"  # the database's back-off is over
    HEARTBEAT = "heartbeat"
    RECOVERY = "recovery"
    RESPAWN = "respawn"  # a slot's crash back-off is over
    KILL = "kill"  # an escalation's grace ran out: SIGKILL
    JOB_TIMEOUT = "job timeout"
    LOST = "lost"  # a lost job's child had its grace to report it finished
    FENCE = "fence"  # a lease is about to run out unrenewed
