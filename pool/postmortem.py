"""Exit codes, and what a dead child's wait status means in words.

rq's fork, monitor, post-mortem: the master learns from `waitpid` how a child
died and says so in the job's `"lastError"` and in its log (docs/lessons.md: a
crash is an attempt, with a `lastError` that names the signal).
"""

from __future__ import annotations

import os
import signal

# A child exits 0 when it stops on request (drain, HUP, TTOU) or is recycled.
EXIT_OK = 0
# gunicorn's WORKER_BOOT_ERROR: the child could not even boot (a handler module
# failed to import, the database refused it). The master halts on it instead of
# respawning forever, and exits with the same code, so that a supervisor can be
# told not to restart (systemd's RestartPreventExitStatus=3).
EXIT_BOOT_FAILURE = 3
# The child abandoned its job on SIGQUIT (immediate stop, or a job timeout).
EXIT_ABORTED = 4

_HINTS: dict[int, str] = {
    signal.SIGKILL: " (out of memory?)",
    signal.SIGSEGV: " (segmentation fault)",
    signal.SIGBUS: " (bus error)",
    signal.SIGABRT: " (aborted)",
    signal.SIGFPE: " (floating-point exception)",
    signal.SIGILL: " (illegal instruction)",
}


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def describe_status(status: int, killed_because: str | None = None) -> str:
    """A `waitpid` status as words: "killed by SIGKILL (out of memory?)", "exited with status 17".

    `killed_because`: the master itself sent the SIGKILL, and why; then that is said
    instead of a guess (an operator told "out of memory?" looks for the wrong thing)."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        if signum == signal.SIGKILL and killed_because:
            return f"killed by SIGKILL from the master ({killed_because})"
        return f"killed by {signal_name(signum)}{_HINTS.get(signum, '')}"
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        if code == EXIT_OK:
            return "exited normally"
        return f"exited with status {code}"
    return f"ended with wait status {status}"


def is_clean_exit(status: int) -> bool:
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_OK


def is_boot_failure(status: int) -> bool:
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_BOOT_FAILURE


def died_while_running(pid: int, status: int, attempt: int, max_attempts: int) -> str:
    """The `lastError` of a job whose child died under it."""
    return (
        f"worker pid {pid} {describe_status(status)} while running "
        f"(attempt {attempt}/{max_attempts})"
    )


def timed_out(pid: int, timeout_s: float, attempt: int, max_attempts: int) -> str:
    return (
        f"timed out after {timeout_s:g}s; worker pid {pid} was stopped "
        f"(attempt {attempt}/{max_attempts})"
    )
