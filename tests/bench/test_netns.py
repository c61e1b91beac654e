"""The many-hosts soak's network (bench/netns.py): real namespaces, a real cut.

Needs root and `ip netns`; skipped elsewhere, and while a soak holds the
namespaces (its lock). Nothing heavy runs: a TCP listener on the bridge's
address stands for the database.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest

from bench import netns


@pytest.fixture
def hosts() -> Iterator[netns.Hosts]:
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command")
    # What a crashed soak would leave: removed by `up`, with what runs inside.
    try:
        netns.check_available()
        subprocess.run(["ip", "netns", "add", netns.namespace(7)], check=True,
                       capture_output=True)
    except (netns.NetnsUnavailable, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no network namespaces here: {exc}")
    made = netns.Hosts(2)
    try:
        made.up()
    except netns.NetnsUnavailable as exc:  # a soak runs: its namespaces are not ours to touch
        subprocess.run(["ip", "netns", "del", netns.namespace(7)], capture_output=True)
        pytest.skip(str(exc))
    try:
        yield made
    finally:
        made.down()


def test_a_cut_host_cannot_reach_the_server_while_the_others_can_and_heals(
        hosts: netns.Hosts) -> None:
    assert sorted(netns.ours()[0]) == [netns.namespace(0), netns.namespace(1)]  # the stale one went
    server = socket.create_server((netns.SERVER, 0))
    port = server.getsockname()[1]

    def accept() -> None:
        while True:
            try:
                server.accept()[0].close()
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        assert netns.wait_reachable(0, netns.SERVER, port, timeout=10)
        hosts.cut(0)
        assert not netns.wait_reachable(0, netns.SERVER, port, timeout=1)
        assert netns.wait_reachable(1, netns.SERVER, port, timeout=10)
        hosts.heal(0)
        assert netns.wait_reachable(0, netns.SERVER, port, timeout=10)
        named = subprocess.run(hosts.command(1, ["hostname"]), capture_output=True, text=True,
                               check=True)
        assert named.stdout.strip() == netns.hostname(1)
    finally:
        server.close()
    hosts.down()
    assert netns.ours() == ([], [])
