"""One PDU's outlets over Modbus TCP, for hard cuts: two warm connections and bounded waits.

A `PduClient` keeps a Modbus TCP connection open to its PDU (connected by `start()`, kept alive by
a power read every `keepalive_s`, reconnected with exponential backoff). That read doubles as the
per-outlet power readback: a cache with monotonic timestamps, where a value older than
`stale_after_s` (or never read) is `None`, unknown and never 0 W. For profiles with a login the
keep-alive also renews the session before it can expire, so a hard cut is one round trip per request.

`switch()` issues every write for that PDU back to back, on the open connection: one FC 15 / FC 16
per contiguous run of outlets when the profile allows multi writes, else one FC 05 / FC 06 per outlet;
the login write first when the session may have expired, and once more if the PDU refuses a write
(a session lost behind our back, e.g. a reboot). Requests use a small timeout and no retries
(pymodbus' defaults, a 3 s timeout and 3 retries, block ~12 s on a dead device); after a timeout the remaining
writes to that PDU are abandoned instead of each waiting out its own timeout. `switch_now()` (the fast
path) puts the first write on the socket before it returns.

The fast path's armed cuts go on a second connection that nothing else uses. One connection serves
one request at a time (drivers/modbus_tcp.py: devices need not serve pipelined requests, and
pymodbus' server answers only the first of two that arrive together), so on the first a cut would
wait behind any keep-alive read in flight: with 50 PDUs read every second, ~5 % of trips found one
busy (bench/trip_latency.py), and a PDU slow to answer a read would hold its cut for up to
`timeout_s`, most of a 0.25 s FFR deadline. The cut connection carries no requests between trips;
TCP keep-alive probes (every `keepalive_s`, three missed: closed) find a dead peer or a rebooted
PDU, and the keep-alive reopens it. A PDU that will not keep two connections (refuses the second,
closes it, or drops the first for it, three times in a row) gets `single_connection` and its cuts go
on the keep-alive's connection. The login session is taken to be the PDU's, not the connection's: the
keep-alive renews it on the first connection and the cut relies on it.

Device errors never raise into the caller: results carry the outlets that were not acknowledged and
a reason from `FAILURE_REASONS`, and the client counts its failures by reason (`failures`).

The log says what an operator needs once per change (drivers/health.py), never once per failed poll:
the keep-alive's outcome is the PDU's health (`pdu down` / `garbage` / `slow` / `up`, with the reason),
and the cut connection has its own (`pdu cut connection down` / `up`), one line when it is lost and
one when it is back, not one per reconnect attempt. Only the keep-alive feeds them: the trip's writes
(`write_armed`, `follow_armed`) do no health bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.pdu import ModbusPDU

from mullet.drivers.device_profiles import PduProfile, load_pdu_profile
from mullet.drivers.health import DeviceHealth
from mullet.drivers.modbus_tcp import ModbusTcpClient, PreparedRequest, Transaction
from mullet.drivers.pdu.types import PduSpec, PduState, SwitchResult
from mullet.drivers.pdu.writes import PreparedSwitch, write_batches, write_request

log = structlog.get_logger("mullet.pdu")

_DEVICE_ERRORS = (ModbusException, OSError, TimeoutError)

ArmedWrite = tuple[ModbusTcpClient, int]  # the connection an armed write went on, its transaction id


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):  # before OSError: TimeoutError is one
        return "timeout"
    if isinstance(exc, ConnectionException | OSError):
        return "unreachable"  # includes the connection dropping while a request waited
    return "modbus_error"


class PduClient:
    """One PDU: a warm Modbus TCP connection, outlet switching and a per-outlet power cache."""

    def __init__(
        self,
        pdu_id: str,
        host: str,
        port: int,
        *,
        outlets: int,
        profile: PduProfile | str = "netio-coils",
        device_id: int = 1,
        timeout_s: float = 0.2,
        keepalive_s: float = 1.0,
        stale_after_s: float = 3.0,
        reconnect_min_s: float = 0.1,
        reconnect_max_s: float = 5.0,
        keep_login: bool = True,
    ) -> None:
        """ProfileError for a profile that cannot serve `outlets`, ValueError for bad timings: both are
        configuration errors, raised here rather than at the first cut."""
        for name, value in (
            ("timeout_s", timeout_s),
            ("keepalive_s", keepalive_s),
            ("stale_after_s", stale_after_s),
            ("reconnect_min_s", reconnect_min_s),
            ("reconnect_max_s", reconnect_max_s),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"pdu {pdu_id}: {name} must be > 0, got {value}")
        self.pdu_id = pdu_id
        self.host = host
        self.port = port
        self.outlets = outlets
        self.profile = load_pdu_profile(profile) if isinstance(profile, str) else profile
        self._has_login = self.profile.login is not None
        self.profile.check_outlets(outlets)
        self.device_id = device_id
        self.timeout_s = timeout_s
        self.keepalive_s = keepalive_s
        self.stale_after_s = stale_after_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = max(reconnect_min_s, reconnect_max_s)
        self.keep_login = keep_login
        self.failures: Counter[str] = Counter()
        self.logins = 0
        self.power_reads = 0
        self.last_read_s: float | None = None
        # Reconnects are ours, with backoff, from the keep-alive; no retries on the real-time path.
        self._client = ModbusTcpClient(host, port, timeout_s=timeout_s, on_connection=self._on_connection)
        self._cut = ModbusTcpClient(  # the armed cuts' own connection (module docstring)
            host, port, timeout_s=timeout_s, on_connection=self._on_cut_connection, keepalive_s=keepalive_s
        )
        self._cut_opened_s = -math.inf
        self._cut_blamed = False  # the open (or last) cut connection has been counted a failure
        self._cut_failures = 0  # in a row: refused, closed soon after opening, or cost the other one
        self.single_connection = False  # the PDU keeps one connection only: cuts share the keep-alive's
        self._state: PduState = "new"
        # What the log says (module docstring); `state` stays the connection's, for mullet_pdu_up.
        self.health = DeviceHealth("pdu", log, pdu=pdu_id, address=f"{host}:{port}")
        # Fed by connection events and each keep-alive tick, not by polls that can flap: one event
        # confirms a change.
        self.cut_health = DeviceHealth("pdu cut connection", log, confirm_polls=1, pdu=pdu_id)
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._connecting: asyncio.Task[bool] | None = None
        self._session_until_s = 0.0
        self._power_w: list[float | None] = [None] * (outlets + 1)
        self._power_at_s: list[float] = [0.0] * (outlets + 1)
        self._reads = self.profile.power_reads(outlets)
        self._power_datatype = getattr(ModbusClientMixin.DATATYPE, self.profile.power_type.upper())
        login = self.profile.login
        # Renew a session this long before the PDU would end it (network delay, clock skew).
        self._login_margin_s = (
            min(login.idle_s / 2, max(timeout_s, 0.1 * login.idle_s)) if login is not None else 0.0
        )

    @classmethod
    def from_spec(cls, spec: PduSpec, **options: Any) -> PduClient:
        """A client for one `config.pdus[]` entry; `options` (keyword arguments of `__init__`) override
        the entry's timings."""
        timings = {
            "timeout_s": spec.timeout_s,
            "keepalive_s": spec.keepalive_s,
            "stale_after_s": spec.stale_after_s,
        }
        return cls(
            spec.pdu_id,
            spec.host,
            spec.port,
            outlets=spec.outlets,
            profile=spec.profile,
            device_id=spec.device_id,
            **{**timings, **options},
        )

    # status

    @property
    def state(self) -> PduState:
        """`up`: connected and the last request answered; `unresponsive`: connected but the last
        request timed out; `down`: no connection (reconnecting); `new` / `connecting` before the
        first connection; `closed` after `close()`."""
        return self._state

    @property
    def connected(self) -> bool:
        return self._client.connected

    @property
    def stale(self) -> bool:
        """True while no complete power readback is younger than `stale_after_s`."""
        return self.last_read_s is None or time.monotonic() - self.last_read_s > self.stale_after_s

    def outlet_power_w(self, outlet: int) -> float | None:
        """Last read power of `outlet` in W; None when never read, older than `stale_after_s`, or no
        such outlet. Unknown is not 0."""
        if not 1 <= outlet <= self.outlets:
            return None
        value = self._power_w[outlet]
        if value is None or time.monotonic() - self._power_at_s[outlet] > self.stale_after_s:
            return None
        return value

    def outlets_power_w(self, outlets: Iterable[int]) -> float | None:
        """Sum over `outlets`, or None if any of them is unknown."""
        total = 0.0
        for outlet in outlets:
            value = self.outlet_power_w(outlet)
            if value is None:
                return None
            total += value
        return total

    def outlet_read_s(self, outlet: int) -> float | None:
        """When `outlet`'s cached power was read (monotonic s), or None."""
        if not 1 <= outlet <= self.outlets or self._power_w[outlet] is None:
            return None
        return self._power_at_s[outlet]

    # lifecycle

    async def start(self) -> None:
        """Connect, read power (and log in) once, then keep the connection warm in the background.
        Returns within about two timeouts whatever the PDU does; a PDU that is down is retried."""
        if self._task is not None or self._closed:
            return
        connected = await self._connect()
        if connected:
            await self._tick()
        first_delay_s = self.keepalive_s if connected else self.reconnect_min_s
        self._task = asyncio.create_task(self._keepalive(first_delay_s), name=f"pdu-{self.pdu_id}")

    async def close(self) -> None:
        self._closed = True
        for task in (self._task, self._connecting):
            # Cancel until the task has really ended (a task may catch one cancel in a cleanup path;
            # the keep-alive loop also checks _closed).
            while task is not None and not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=self.timeout_s)
            if task is not None and not task.cancelled():
                with contextlib.suppress(Exception):
                    task.result()
        self._task = self._connecting = None
        self._client.close()
        self._cut.close()
        self._set_state("closed")

    # the fast path

    def prepare_switch(self, outlets: Iterable[int], on: bool) -> PreparedSwitch:
        """Check and order `outlets` ahead of time, for `switch_now`."""
        wanted = tuple(sorted(set(outlets)))
        valid = [outlet for outlet in wanted if 1 <= outlet <= self.outlets]
        batches = tuple(write_batches(self.profile, valid))
        first = (
            PreparedRequest.of(write_request(self.profile, self.device_id, *batches[0], on))
            if batches
            else None
        )
        return PreparedSwitch(on, wanted, batches, first)

    def switch_now(self, prepared: PreparedSwitch) -> Coroutine[Any, Any, SwitchResult]:
        """`switch()`, but the first write is on the socket (or queued behind an unanswered request)
        before this returns when the connection is up and the login session (if any) is good;
        otherwise all of it happens when the returned coroutine runs. Await the coroutine for the
        result: no task is made here, that is left to whoever gathers several PDUs."""
        armed = self.write_armed(prepared)
        return self.follow_armed(prepared, armed, time.monotonic())

    def write_armed(self, prepared: PreparedSwitch) -> ArmedWrite | None:
        """The first half of `switch_now`, all a trip waits for: the first write on the socket now,
        on the cut connection or else on the other if that one is idle, when no login is due. Returns
        where it went (None: not written). Then `follow_armed`."""
        first = prepared.first
        if first is None or self._closed or (self._has_login and self._session_lapsing()):
            return None
        for client in (self._cut, self._client):
            connection = client.connection
            if connection is not None and (tid := connection.write_now(first)):
                return client, tid
        return None

    def follow_armed(
        self, prepared: PreparedSwitch, armed: ArmedWrite | None, written_s: float
    ) -> Coroutine[Any, Any, SwitchResult]:
        """The second half: the transaction of the `armed` write (written by `written_s`, monotonic)
        and its timeout, or the first write queued behind an unanswered request; the coroutine does
        the rest on the same connection."""
        sent: Transaction | None = None
        via = self._cut if self._cut.connected else self._client
        if armed is not None and prepared.first is not None:
            via, tid = armed
            assert via.connection is not None  # written this turn: nothing could have closed it
            sent = via.connection.track(prepared.first, tid, written_s)
        elif (
            prepared.first is not None
            and not self._closed
            and via.connected
            and (self.profile.login is None or not self._session_lapsing())
        ):
            with contextlib.suppress(ConnectionResetError):
                sent = via.send(prepared.first)
        return self.switch(prepared.outlets, prepared.on, sent=sent, via=via)

    async def _keepalive(self, delay_s: float) -> None:
        backoff_s = self.reconnect_min_s
        while not self._closed:
            await asyncio.sleep(delay_s)
            if await self._connect():
                backoff_s = self.reconnect_min_s
                await self._tick()
                delay_s = self.keepalive_s
            else:
                delay_s = backoff_s
                backoff_s = min(backoff_s * 2, self.reconnect_max_s)

    async def _tick(self) -> None:
        """The keep-alive: reopen the cut connection if it closed, read power, renew the login
        session if it would lapse before next time."""
        try:
            await self._open_cut()
            await self.read_power()
            login = self.profile.login
            if (
                self.keep_login
                and login is not None
                and self._client.connected
                # two periods ahead, so a late tick never leaves a switch facing a lapsed session
                and time.monotonic() + 2 * self.keepalive_s >= self._session_until_s - self._login_margin_s
            ):
                await self._login()
        except Exception:  # never let the keep-alive die on a bug; count it and go on
            log.exception("pdu keep-alive failed", pdu=self.pdu_id)
            self.failures["internal_error"] += 1

    async def _connect(self) -> bool:
        """Connected now, or after one bounded attempt (shared by concurrent callers)."""
        if self._client.connected:
            return True
        if self._closed:
            return False
        task = self._connecting
        if task is None or task.done():
            task = self._connecting = asyncio.create_task(self._open(), name=f"pdu-connect-{self.pdu_id}")
        return await asyncio.shield(task)

    async def _open(self) -> bool:
        if self._state == "new":
            self._set_state("connecting")
        try:
            async with asyncio.timeout(self.timeout_s * 2):
                await self._client.connect()
        except _DEVICE_ERRORS:
            pass
        if not self._client.connected:
            self._fail("unreachable")
            self.health.note("down", f"cannot connect to {self.host}:{self.port}")
            return False
        self._set_state("up")
        return True

    def _on_connection(self, connected: bool) -> None:
        """The connection's connect/disconnect callback."""
        if connected:
            # A fresh connection may be a fresh session (or a rebooted PDU): log in before switching.
            self._session_until_s = 0.0
        elif not self._closed:
            self._set_state("down")
            if self._cut.connected and self._cut_young():
                self._blame_cut()  # maybe the PDU dropped this connection for the cut's

    async def _open_cut(self) -> None:
        """One bounded attempt to (re)open the cut connection; until then cuts use the other one."""
        if self._cut.connected:
            if not self._cut_young():
                self._cut_failures = 0  # it has lasted: what failed before was not the PDU's limit
            self.cut_health.note("up")  # a line held back by the health's min gap goes out now
            return
        if self.single_connection or self._closed or not self._client.connected:
            return
        try:
            await self._cut.connect()
        except _DEVICE_ERRORS as exc:
            self.failures["unreachable"] += 1
            self.cut_health.note("down", f"cannot reopen: {type(exc).__name__}")
            self._cut_failed()

    def _on_cut_connection(self, connected: bool) -> None:
        if connected:
            self._session_until_s = 0.0  # as for the other connection: maybe a rebooted PDU
            self._cut_opened_s = time.monotonic()
            self._cut_blamed = False
            self.cut_health.note("up")
        elif not self._closed and not self.single_connection:
            self.cut_health.note("down", "connection lost (cuts go on the keep-alive's until it is back)")
            if self._cut_young():
                self._blame_cut()  # closed by the PDU soon after opening

    def _blame_cut(self) -> None:
        """Once per cut connection: a network outage that takes both connections counts once."""
        if not self._cut_blamed:
            self._cut_blamed = True
            self._cut_failed()

    def _cut_young(self) -> bool:
        return time.monotonic() - self._cut_opened_s < 2 * max(self.keepalive_s, self.timeout_s)

    def _cut_failed(self) -> None:
        """A PDU that refuses a second connection, closes it, or drops the first for it will not keep
        two: after three such in a row, stop opening the cut connection (else the two would flap)."""
        self._cut_failures += 1
        if self._cut_failures >= 3 and not self.single_connection:
            self.single_connection = True
            self._cut.close()
            log.warning(
                "pdu keeps one connection only: cuts share the keep-alive's until restart", pdu=self.pdu_id
            )

    # power readback

    async def read_power(self) -> bool:
        """Read every outlet's power now (what the keep-alive does); False if any read failed."""
        if not self._client.connected:
            self._fail("unreachable")
            self.health.note("down", "no connection")
            return False
        read = (
            self._client.read_input_registers
            if self.profile.power_table == "input"
            else self._client.read_holding_registers
        )
        stride, size, scale = self.profile.power_stride, self.profile.power_size, self.profile.power_scale_w
        slowest_s = 0.0
        implausible = 0
        for first, start, count in self._reads:
            sent_s = time.monotonic()
            try:
                response = await read(start, count=count, device_id=self.device_id)
            except _DEVICE_ERRORS as exc:
                reason = self._fail(_reason(exc))
                self.health.note("down", self._down_reason(reason, exc))
                return False
            registers = response.registers
            if response.isError() or len(registers) < count:
                self._fail("modbus_error")
                answer = (
                    "a Modbus exception" if response.isError() else f"{len(registers)} of {count} registers"
                )
                self.health.note("garbage", f"power read answered with {answer}")
                return False
            now_s = time.monotonic()
            slowest_s = max(slowest_s, now_s - sent_s)
            for index in range(count // stride):
                raw = ModbusClientMixin.convert_from_registers(
                    registers[index * stride : index * stride + size],
                    data_type=self._power_datatype,
                    word_order=self.profile.power_word_order,
                )
                assert isinstance(raw, int | float)
                watts = float(raw) * scale
                if not math.isfinite(watts) or watts < 0:
                    self.failures["implausible"] += 1  # the old value is left to go stale
                    implausible += 1
                    continue
                self._power_w[first + index] = watts
                self._power_at_s[first + index] = now_s
        self.last_read_s = time.monotonic()
        self.power_reads += 1
        self._set_state("up")
        if implausible:
            self.health.note("garbage", f"{implausible} implausible power reading(s) (not finite, or < 0)")
        elif slowest_s > self.timeout_s / 2:
            self.health.note(
                "slow", f"answers in {slowest_s:.3f} s, over half the {self.timeout_s:g} s timeout"
            )
        else:
            self.health.note("up")
        return True

    def _down_reason(self, reason: str, exc: BaseException) -> str:
        if reason == "timeout":
            return f"no answer within {self.timeout_s:g} s"
        return f"connection lost or refused: {type(exc).__name__}"

    # switching

    async def switch(
        self,
        outlets: Iterable[int],
        on: bool,
        *,
        sent: Transaction | None = None,
        via: ModbusTcpClient | None = None,
    ) -> SwitchResult:
        """Switch `outlets` on or off with as few round trips as the profile allows. Never raises for
        device errors: see the result's `failed` and `reason`. `sent`, `via`: the fast path's first
        write, already out, and the connection the rest goes on (default: the keep-alive's)."""
        started_s = time.monotonic()
        wanted = tuple(sorted(set(outlets)))
        valid = [outlet for outlet in wanted if 1 <= outlet <= self.outlets]
        failed = [outlet for outlet in wanted if not 1 <= outlet <= self.outlets]
        reason: str | None = "bad_outlet" if failed else None
        if failed:
            self.failures["bad_outlet"] += 1
        progress = _Progress()
        try:
            why = await self._switch(valid, on, progress, sent, via or self._client)
            if why is not None:
                reason = reason or why
        except Exception:
            log.exception("pdu switch failed", pdu=self.pdu_id)
            self.failures["internal_error"] += 1
            reason = reason or "internal_error"
            progress.failed.extend(o for o in valid if o not in progress.done and o not in progress.failed)
        failed.extend(progress.failed)
        result = SwitchResult(
            pdu_id=self.pdu_id,
            on=on,
            outlets=wanted,
            failed=tuple(sorted(failed)),
            reason=reason if failed else None,
            writes=progress.writes,
            logged_in=progress.logged_in,
            started_s=started_s,
            issued_s=progress.issued_s,
            done_s=time.monotonic(),
        )
        if failed:
            log.warning(
                "pdu switch incomplete",
                pdu=self.pdu_id,
                on=on,
                failed=result.failed,
                reason=result.reason,
                elapsed_ms=round(result.elapsed_s * 1000, 2),
            )
        return result

    async def _switch(
        self,
        outlets: list[int],
        on: bool,
        progress: _Progress,
        sent: Transaction | None,
        via: ModbusTcpClient,
    ) -> str | None:
        """Write `outlets`, recording progress; the first failure's reason, or None. `sent`: the first
        batch's write, already on the socket (switch_now checked the connection and the session)."""
        if not outlets:
            return None
        if sent is None and not via.connected:
            via = self._client  # the cut connection closed since it was chosen: the keep-alive's
        if sent is None and (self._closed or not (via.connected or await self._connect())):
            progress.failed.extend(outlets)
            return "closed" if self._closed else "unreachable"
        login = self.profile.login
        if (
            sent is None
            and login is not None
            and time.monotonic() >= self._session_until_s - self._login_margin_s
        ):
            progress.writes += 1
            progress.logged_in = True
            why = await self._login()
            if why is not None:
                progress.failed.extend(outlets)
                return why
        batches = write_batches(self.profile, outlets)
        reason: str | None = None
        relogged = False
        for index, (first, count) in enumerate(batches):
            progress.writes += 1
            why = await self._write(first, count, on, progress, via, sent if index == 0 else None)
            if why == "refused" and login is not None and not relogged:
                # Maybe the PDU ended the session early (reboot, its own clock): log in once more.
                relogged = True
                progress.writes += 1
                progress.logged_in = True
                why = await self._login()
                if why is None:
                    progress.writes += 1
                    why = await self._write(first, count, on, progress, via)
            batch = range(first, first + count)
            if why is None:
                progress.done.extend(batch)
                continue
            reason = reason or why
            progress.failed.extend(batch)
            if why in ("timeout", "unreachable"):
                # The PDU is not answering: do not spend a timeout on each remaining write.
                for rest_first, rest_count in batches[index + 1 :]:
                    progress.failed.extend(range(rest_first, rest_first + rest_count))
                break
        return reason

    async def _write(
        self,
        first: int,
        count: int,
        on: bool,
        progress: _Progress,
        via: ModbusTcpClient,
        sent: Transaction | None = None,
    ) -> str | None:
        try:
            if sent is None:
                sent = via.send(write_request(self.profile, self.device_id, first, count, on))
            response = await sent.answer
        except _DEVICE_ERRORS as exc:
            return self._fail(_reason(exc))
        finally:
            if progress.issued_s is None and sent is not None:
                progress.issued_s = sent.written_s
        assert sent.written_s is not None  # answered, so written
        return self._check_write(response, sent.written_s)

    def _check_write(self, response: ModbusPDU, sent_s: float) -> str | None:
        if response.isError():
            return self._fail("refused")
        self._renewed(sent_s)
        self._set_state("up")
        return None

    async def _login(self) -> str | None:
        login = self.profile.login
        assert login is not None
        sent_s = time.monotonic()
        try:
            response = await self._client.write_register(
                login.register, login.value, device_id=self.device_id
            )
        except _DEVICE_ERRORS as exc:
            return self._fail(_reason(exc))
        if response.isError():
            self._session_until_s = 0.0
            return self._fail("login_failed")
        self.logins += 1
        self._renewed(sent_s)
        self._set_state("up")
        return None

    def _session_lapsing(self) -> bool:
        """The login session may have ended (or will within the safety margin): log in first."""
        return time.monotonic() >= self._session_until_s - self._login_margin_s

    def _renewed(self, sent_s: float) -> None:
        """An acknowledged write sent at `sent_s` keeps the login session open from then on."""
        login = self.profile.login
        if login is not None:
            self._session_until_s = max(self._session_until_s, sent_s + login.idle_s)

    def _fail(self, reason: str) -> str:
        self.failures[reason] += 1
        if reason == "timeout":
            self._set_state("unresponsive")
        elif reason == "unreachable":
            self._set_state("down")
        return reason

    def _set_state(self, state: PduState) -> None:
        """The connection's state (`state`, mullet_pdu_up); not logged: `health` says it once per
        change, from the keep-alive, where a failed trip write would log once per trip."""
        self._state = state


@dataclass(slots=True)
class _Progress:
    writes: int = 0
    logged_in: bool = False
    issued_s: float | None = None
    done: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
