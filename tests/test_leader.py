"""The leader lease on a real etcd (Debian's etcd-server) on loopback: one leader, a takeover within the
TTL when the leader dies without a word, and a higher epoch for the new leader (what fences the old)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ETCD, etcd_server

pytestmark = pytest.mark.skipif(
    ETCD is None, reason="etcd not installed (apt-get install etcd-server; .ci/run installs it)"
)


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[int]:
    with etcd_server(tmp_path) as (client_port, _process):
        yield client_port


async def test_one_leader_and_a_takeover_with_a_higher_epoch_within_the_ttl(etcd: int) -> None:
    from mullet.daemon.pair.lease import LeaderLease, LeadershipLost

    a = LeaderLease("127.0.0.1", etcd, key="/mullet/s1/leader", node_id="a", ttl_s=1)
    b = LeaderLease("127.0.0.1", etcd, key="/mullet/s1/leader", node_id="b", ttl_s=1)
    task_a = asyncio.create_task(a.run())
    await asyncio.wait_for(a.elected.wait(), 30)
    task_b = asyncio.create_task(b.run())
    try:
        # b campaigns but cannot lead while a holds the lease (a refreshes it every ttl/3).
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(b.elected.wait(), 2.5)
        assert a.leading and not b.leading

        # a dies without a word (as under SIGKILL: no resign, its lease just stops being refreshed).
        died_s = time.monotonic()
        task_a.cancel()
        with contextlib.suppress(asyncio.CancelledError, LeadershipLost):
            await task_a
        await asyncio.wait_for(b.elected.wait(), 30)
        takeover_s = time.monotonic() - died_s
        print(f"takeover {takeover_s:.2f} s after the leader died (lease TTL 1 s)")
        assert takeover_s < 10 * 3.0  # within the TTL by design; 10x for a loaded machine
        assert a.epoch is not None and b.epoch is not None and b.epoch > a.epoch
    finally:
        task_b.cancel()
        with contextlib.suppress(asyncio.CancelledError, LeadershipLost):
            await task_b
