"""Hosts on one machine: a network namespace each, joined to the server by a bridge.

Each host `i` is the namespace `skiplock-soak-<i>` with one interface, `eth0`
(10.231.0.<10+i>/24), the far end of a veth pair whose near end
(`sksoak-v<i>`) is a port of the bridge `sksoak-br` (10.231.0.1/24, where the
soak's PostgreSQL listens). Every address stays on this machine.

A partition takes the near end down: the host keeps its address and its
route, its packets are dropped on the wire, and its TCP connections hang and
retransmit (they neither fail nor reset), as when a switch port dies. Taking
it up again heals them. The tools are `ip` and `unshare` only (no iptables or
nft is needed).

One soak runs at a time (a lock file); whatever it finds of an earlier run
that crashed (namespaces, links, processes inside them) is removed first, and
`Hosts.down` removes everything again, whatever state it finds. Needs root.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

NAMESPACE_PREFIX = "skiplock-soak-"
LINK_PREFIX = "sksoak-"  # interface names hold at most 15 characters
BRIDGE = f"{LINK_PREFIX}br"
SERVER = "10.231.0.1"
PREFIX_LEN = 24
LOCK = Path("/run/lock/skiplock-soak.lock")


class NetnsUnavailable(RuntimeError):
    """This machine cannot make network namespaces (not root, or no `ip netns`)."""


def _ip(*argv: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def namespace(index: int) -> str:
    return f"{NAMESPACE_PREFIX}{index}"


def address(index: int) -> str:
    return f"10.231.0.{10 + index}"


def near_end(index: int) -> str:
    return f"{LINK_PREFIX}v{index}"


def check_available() -> None:
    """Raise NetnsUnavailable with the reason if namespaces cannot be made here."""
    if os.geteuid() != 0:
        raise NetnsUnavailable("network namespaces need root")
    probe = f"{NAMESPACE_PREFIX}probe"
    try:
        _ip("netns", "add", probe)
    except (OSError, RuntimeError) as exc:
        raise NetnsUnavailable(f"`ip netns add` failed: {exc}") from None
    _ip("netns", "del", probe, check=False)


def ours() -> tuple[list[str], list[str]]:
    """The namespaces and links of this module that exist now (a run's or a crashed one's)."""
    spaces = [line.split()[0] for line in _ip("netns", "list").splitlines()
              if line.startswith(NAMESPACE_PREFIX)]
    links = []
    for line in _ip("-o", "link", "show").splitlines():
        name = line.split(":", 2)[1].strip().split("@")[0]
        if name.startswith(LINK_PREFIX):
            links.append(name)
    return spaces, links


def remove_all() -> None:
    """Remove every namespace and link of ours, killing what runs inside; never raises."""
    try:
        spaces, links = ours()
    except (OSError, RuntimeError, subprocess.TimeoutExpired):
        return
    for space in spaces:
        try:
            pids = _ip("netns", "pids", space, check=False).split()
        except (OSError, subprocess.TimeoutExpired):
            pids = []
        for pid in pids:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _ip("netns", "del", space, check=False)
    for link in links:
        _ip("link", "del", link, check=False)  # a veth's peer goes with it


class Hosts:
    """`count` namespaces on a bridge; `up` makes them, `down` removes them."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.lock: IO[str] | None = None

    def up(self) -> None:
        check_available()
        LOCK.parent.mkdir(parents=True, exist_ok=True)
        self.lock = open(LOCK, "w")  # noqa: SIM115 - held for the whole run
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.lock.close()
            self.lock = None
            raise NetnsUnavailable(f"another soak runs (it holds {LOCK})") from None
        spaces, links = ours()
        if spaces or links:
            print(f"  removing what an earlier soak left: {spaces + links}")
            remove_all()
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{SERVER}/{PREFIX_LEN}", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        for i in range(self.count):
            space, near, far = namespace(i), near_end(i), f"{LINK_PREFIX}p{i}"
            _ip("netns", "add", space)
            _ip("link", "add", near, "type", "veth", "peer", "name", far)
            _ip("link", "set", far, "netns", space)
            _ip("-n", space, "link", "set", far, "name", "eth0")
            _ip("-n", space, "addr", "add", f"{address(i)}/{PREFIX_LEN}", "dev", "eth0")
            _ip("-n", space, "link", "set", "eth0", "up")
            _ip("-n", space, "link", "set", "lo", "up")
            _ip("link", "set", near, "master", BRIDGE)
            _ip("link", "set", near, "up")

    def cut(self, index: int) -> None:
        _ip("link", "set", near_end(index), "down")

    def heal(self, index: int) -> None:
        _ip("link", "set", near_end(index), "up")

    def command(self, index: int, argv: list[str]) -> list[str]:
        """`argv` run as host `index`: in its namespace, with a hostname of its own (in a
        UTS namespace), so that the pool's holder ids ("lockedBy") name the host. Each
        step execs the next: the process started is the command itself."""
        return ["ip", "netns", "exec", namespace(index), "unshare", "--uts",
                "sh", "-c", 'hostname "$0" && exec "$@"', hostname(index), *argv]

    def down(self) -> None:
        """Remove everything of ours, if this run holds the lock (else they are another
        soak's, which runs)."""
        if self.lock is not None:
            remove_all()
            self.lock.close()
            self.lock = None


def hostname(index: int) -> str:
    return f"soak-host{index}"


def wait_reachable(index: int, host: str, port: int, timeout: float) -> bool:
    """True once a TCP connection from host `index` to host:port succeeds."""
    probe = ("import socket, sys\n"
             "try:\n"
             f"    socket.create_connection(({host!r}, {port}), timeout={timeout}).close()\n"
             "except OSError:\n"
             "    sys.exit(1)\n")
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(["ip", "netns", "exec", namespace(index), sys.executable, "-c", probe],
                              capture_output=True, timeout=timeout + 10)
        if done.returncode == 0:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
