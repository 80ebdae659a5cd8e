"""Active/standby at one site: a leader lease in etcd (aetcd over etcd's v3 gRPC API, etcd >= 3.4).

The leader key exists while its holder keeps its lease alive; whoever creates it leads. Its
`create_revision` is the leader's **epoch**: etcd revisions only grow, so every new leader has a
higher epoch than every earlier one, and controllers can fence a deposed leader's late commands
(drivers/group_command.py). A leader that cannot refresh its lease within the TTL must stop
commanding: `run()` raises `LeadershipLost` and the daemon exits (crash-only; its supervisor restarts
it as a standby). A dead leader's key vanishes when the TTL runs out, so a takeover costs at most the
TTL plus one standby poll.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import structlog

from mullet.drivers import extras

if TYPE_CHECKING:
    import aetcd  # type: ignore[import-untyped]  # aetcd ships no type information

log = structlog.get_logger("mullet.leader")


class LeadershipLost(Exception):
    """The lease could not be kept: another node may lead now."""


class LeaderLease:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        key: str,
        node_id: str,
        ttl_s: int = 2,
        fallbacks: Sequence[tuple[str, int]] = (),
    ) -> None:
        if ttl_s < 1:
            raise ValueError(f"ttl_s must be >= 1 s (etcd lease granularity), got {ttl_s}")
        # Imported here, at start-up, and only by a daemon with [ha]: aetcd is the etcd extra.
        extras.require("aetcd", "[ha]'s leader lease")
        import aetcd

        self._aetcd = aetcd
        self.host, self.port = host, port
        # Further members of the etcd cluster: a campaign that fails moves on to the next one.
        self._endpoints = [(host, port), *fallbacks]
        self._attempt = 0
        self.key = key.encode()
        self.node_id = node_id
        self.ttl_s = ttl_s
        self.epoch: int | None = None  # set while leading
        self.elected = asyncio.Event()
        self.on_lost: Callable[[], None] | None = None  # called the moment the lease is given up

    @property
    def leading(self) -> bool:
        return self.elected.is_set()

    async def run(self) -> None:
        """Campaign until elected, then hold the lease; raises LeadershipLost when it cannot."""
        log.info("leader campaign", node_id=self.node_id, key=self.key.decode(), ttl_s=self.ttl_s)
        while True:
            try:
                async with self._aetcd.Client(
                    host=self.host, port=self.port, timeout=max(1.0, self.ttl_s)
                ) as client:
                    await self._campaign(client)
            except LeadershipLost:
                raise
            except Exception as exc:  # etcd away or without a quorum: a standby just tries again
                log.warning("leader campaign failed", node_id=self.node_id, error=repr(exc)[:200])
                self._attempt += 1
                self.host, self.port = self._endpoints[self._attempt % len(self._endpoints)]
            await asyncio.sleep(self.ttl_s / 5)

    async def _campaign(self, client: aetcd.Client) -> None:
        lease = await client.lease(self.ttl_s)
        txn = client.transactions
        while True:
            created, _ = await client.transaction(
                compare=[txn.create(self.key) == 0],
                success=[txn.put(self.key, self.node_id.encode(), lease=lease)],
                failure=[],
            )
            if created:
                held = await client.get(self.key)
                if held is not None and held.value == self.node_id.encode():
                    self.epoch = int(held.create_revision)
                    self.elected.set()
                    log.warning("leader elected", node_id=self.node_id, epoch=self.epoch)
                    await self._hold(lease)
            # Standby: the key goes when the leader's lease runs out; look again soon, with our own lease
            # kept alive so the next attempt can use it at once.
            await asyncio.sleep(self.ttl_s / 5)
            await lease.refresh()

    async def _hold(self, lease: aetcd.Lease) -> None:
        refreshed_s = time.monotonic()
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                reply = await lease.refresh()
                ttl_s = int(reply.TTL)
            except Exception as exc:  # a transport error: the lease may still live until its TTL
                ttl_s = None
                log.warning("lease refresh failed", node_id=self.node_id, error=repr(exc)[:200])
            if ttl_s is not None and ttl_s > 0:
                refreshed_s = time.monotonic()
            elif ttl_s is not None or time.monotonic() - refreshed_s >= self.ttl_s * 2 / 3:
                # Expired, or about to: stop commanding before another node can be elected.
                self.elected.clear()
                if self.on_lost is not None:
                    self.on_lost()
                raise LeadershipLost(f"{self.node_id} lost the lease (epoch {self.epoch})")

    async def resign(self) -> None:
        """Hand over at once (clean shutdown): delete the key if it is still ours."""
        if not self.leading:
            return
        async with self._aetcd.Client(host=self.host, port=self.port, timeout=max(1.0, self.ttl_s)) as client:
            txn = client.transactions
            await client.transaction(
                compare=[txn.value(self.key) == self.node_id.encode()],
                success=[txn.delete(self.key)],
                failure=[],
            )
        self.elected.clear()
