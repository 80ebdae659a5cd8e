"""The QSE point list over DNP3 (drivers/qse_dnp3.py), read by an independent master: opendnp3 (the
yadnp3 wheel), not py1815's own, which shares the outstation's reading of the standard.

opendnp3 calls back on its own threads; each callback hands what it saw to the test's loop
(`call_soon_threadsafe`), and the test awaits that with a generous timeout, never a sleep.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest

pytest.importorskip("py1815", reason="the dnp3 extra (py1815, the outstation) is not installed")
opendnp3 = pytest.importorskip("opendnp3", reason="yadnp3 (the opendnp3 master reading it) is not installed")

from mullet.drivers.qse_dnp3 import ANALOG_INDEX, QseDnp3Outstation  # noqa: E402
from mullet.drivers.qse_points import HEALTH_BITS, HOLDING_POINTS, INPUT_POINTS, Table  # noqa: E402
from mullet.drivers.qse_server import parse_allowlist  # noqa: E402

OUTSTATION, MASTER = 1024, 1
WAIT_S = 10.0
ONLINE, REFERENCE_ERR, STATE = 0x01, 0x40, 0x80  # DNP3 quality bits (analog and binary)
OBJECT_UNKNOWN, PARAM_ERROR, FUNC_NOT_SUPPORTED = 0x02, 0x04, 0x01  # IIN2 bits
HEALTH = 0b1010_0101

Snapshot = tuple[dict[int, tuple[float, int]], dict[int, tuple[bool, int]]]


def _post(loop: asyncio.AbstractEventLoop, fn: Callable[[Any], None], item: Any) -> None:
    """From an opendnp3 thread to the test's loop (which may be gone at teardown)."""
    try:
        loop.call_soon_threadsafe(fn, item)
    except RuntimeError:
        pass


class _Fragments(opendnp3.ISOEHandler):  # type: ignore[misc,name-defined]
    """One scan's measurements; at each end of fragment, what it has seen so far goes to the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._loop = loop
        self.ended: asyncio.Queue[Snapshot] = asyncio.Queue()
        self.analogs: dict[int, tuple[float, int]] = {}
        self.binaries: dict[int, tuple[bool, int]] = {}
        self.variations: set[object] = set()

    def BeginFragment(self, info: Any) -> None:
        pass

    def Process(self, info: Any, values: Any) -> None:
        for item in values:
            if isinstance(item.value, opendnp3.Analog):
                self.analogs[item.index] = (item.value.value, item.value.flags.value)
                self.variations.add(info.gv)
            elif isinstance(item.value, opendnp3.Binary):
                self.binaries[item.index] = (item.value.value, item.value.flags.value)
                self.variations.add(info.gv)

    def EndFragment(self, info: Any) -> None:
        _post(self._loop, self.ended.put_nowait, (dict(self.analogs), dict(self.binaries)))


class _App(opendnp3.IMasterApplication):  # type: ignore[misc,name-defined]
    """Every response's IIN and every task's end, handed to the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._loop = loop
        self.iins: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        self.tasks: asyncio.Queue[tuple[object, object]] = asyncio.Queue()

    def OnReceiveIIN(self, iin: Any) -> None:
        _post(self._loop, self.iins.put_nowait, (iin.LSB, iin.MSB))

    def OnTaskStart(self, type_: Any, id_: Any) -> None:
        pass

    def OnTaskComplete(self, info: Any) -> None:
        _post(self._loop, self.tasks.put_nowait, (info.type, info.result))

    def OnOpen(self) -> None:
        pass

    def OnClose(self) -> None:
        pass

    def AssignClassDuringStartup(self) -> bool:
        return False

    def Now(self) -> Any:
        return opendnp3.UTCTimestamp(0)


class _Master:
    """An opendnp3 master on its own threads; its startup integrity poll (classes 1, 2, 3 and 0)
    lands in `startup`."""

    def __init__(self, port: int, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.manager = opendnp3.DNP3Manager(1)
        channel = self.manager.AddTCPClient(
            "qse",
            opendnp3.levels.NOTHING,
            opendnp3.ChannelRetry.Default(),
            [opendnp3.IPEndpoint("127.0.0.1", port)],
            "0.0.0.0",
            None,
        )
        config = opendnp3.MasterStackConfig()
        config.link.LocalAddr = MASTER
        config.link.RemoteAddr = OUTSTATION
        self.app = _App(loop)
        self.startup = _Fragments(loop)
        self.handlers = [self.startup]  # opendnp3 holds them by pointer: kept alive here
        self.stack = channel.AddMaster("qse", self.startup, self.app, config)
        self.stack.Enable()

    def handler(self) -> _Fragments:
        handler = _Fragments(self.loop)
        self.handlers.append(handler)
        return handler

    async def class0(self) -> Snapshot:
        handler = self.handler()
        self.stack.ScanClasses(opendnp3.ClassField(True, False, False, False), handler)
        return await asyncio.wait_for(handler.ended.get(), WAIT_S)

    async def started(self) -> None:
        """Until the startup tasks are over (the last, enabling unsolicited responses, is refused:
        py1815 sends none), then forget their IINs."""

        async def last_task() -> None:
            while (await self.app.tasks.get())[0] != opendnp3.MasterTaskType.ENABLE_UNSOLICITED:
                pass

        await asyncio.wait_for(last_task(), WAIT_S)
        while not self.app.iins.empty():
            self.app.iins.get_nowait()

    async def iin_with(self, bits: int) -> tuple[int, int]:
        """The next response IIN with any of `bits` set in its second octet."""

        async def find() -> tuple[int, int]:
            while True:
                lsb, msb = await self.app.iins.get()
                if msb & bits:
                    return lsb, msb

        return await asyncio.wait_for(find(), WAIT_S)

    async def close(self) -> None:
        await asyncio.to_thread(self.manager.Shutdown)  # releases the GIL; joins its threads


def _inputs() -> dict[str, float]:
    values = {p.name: i + 0.5 for i, p in enumerate(INPUT_POINTS)}  # exact in float32
    values.update(site_mw=12.5, mpc_mw=math.nan, health=float(HEALTH))
    return values


def _levels() -> dict[str, float]:
    values = {p.name: 0.0 for p in HOLDING_POINTS}
    values.update(base_point_set_mw=8.0, base_point_on=1.0, qse_heartbeat=41.0)
    return values


class _Site:
    def __init__(self) -> None:
        self.inputs = _inputs()
        self.levels = _levels()
        self.reads: list[Table] = []
        self.failing = False
        self.refusals: list[tuple[str, str]] = []

    def read(self, table: Table) -> Mapping[str, float]:
        self.reads.append(table)
        if self.failing:
            raise RuntimeError("controller state unavailable")
        return self.inputs if table == "input" else self.levels

    def refused(self, reason: str, peer: str) -> None:
        self.refusals.append((reason, peer))


def _outstation(site: _Site, allow: str = "127.0.0.1") -> QseDnp3Outstation:
    return QseDnp3Outstation(
        host="127.0.0.1",
        port=0,  # a free port, bound without a race (`port` says which)
        outstation_address=OUTSTATION,
        master_address=MASTER,
        allow=parse_allowlist([allow]),
        read=site.read,
        refused=site.refused,
    )


@pytest.fixture
async def link() -> AsyncIterator[tuple[_Site, QseDnp3Outstation, _Master]]:
    site = _Site()
    outstation = _outstation(site)
    await outstation.start()
    master = _Master(outstation.port, asyncio.get_running_loop())
    try:
        yield site, outstation, master
    finally:
        await master.close()
        await outstation.stop()


async def test_integrity_poll_serves_the_point_list_with_unknown_flagged_offline(link: Any) -> None:
    site, outstation, master = link
    analogs, binaries = await asyncio.wait_for(master.startup.ended.get(), WAIT_S)
    assert outstation.connected
    assert len(analogs) == len(INPUT_POINTS) + len(HOLDING_POINTS) == len(ANALOG_INDEX)
    assert master.startup.variations == {
        opendnp3.GroupVariation.Group30Var5,
        opendnp3.GroupVariation.Group1Var2,
    }
    # Input points in their order, then the holding points' levels.
    assert analogs[2] == analogs[ANALOG_INDEX["site_mw"]] == (12.5, ONLINE)
    assert analogs[0] == (0.5, ONLINE)  # heartbeat, a u16 point, as a float
    assert analogs[len(INPUT_POINTS) + 2] == analogs[ANALOG_INDEX["base_point_set_mw"]] == (8.0, ONLINE)
    for point in INPUT_POINTS:
        value = site.inputs[point.name]
        if not math.isnan(value):
            assert analogs[ANALOG_INDEX[point.name]] == (value, ONLINE), point.name
    for point in HOLDING_POINTS:
        assert analogs[ANALOG_INDEX[point.name]] == (site.levels[point.name], ONLINE), point.name
    # Unknown is never a valid 0.0: ONLINE is clear.
    value, flags = analogs[ANALOG_INDEX["mpc_mw"]]
    assert not flags & ONLINE and flags & REFERENCE_ERR
    # The health bits as binary inputs 0..7, each with ONLINE and its state bit.
    assert len(binaries) == len(HEALTH_BITS)
    for bit, _ in HEALTH_BITS:
        on = bool(HEALTH >> bit & 1)
        assert binaries[bit] == (on, ONLINE | (STATE if on else 0)), bit

    # Read at request time: the next class 0 poll sees what changed since.
    site.inputs.update(site_mw=13.25, mpc_mw=20.0, health=float(0b0000_0010))
    site.levels["base_point_set_mw"] = 9.0
    analogs, binaries = await master.class0()
    assert analogs[ANALOG_INDEX["site_mw"]] == (13.25, ONLINE)
    assert analogs[ANALOG_INDEX["mpc_mw"]] == (20.0, ONLINE)
    assert analogs[ANALOG_INDEX["base_point_set_mw"]] == (9.0, ONLINE)
    assert [binaries[b][0] for b in range(8)] == [False, True, False, False, False, False, False, False]


async def test_objects_not_served_are_refused_and_controls_are_not_offered(link: Any) -> None:
    _site, _outstation, master = link
    await master.started()  # its IINs said "function not supported" twice: forgotten
    # Counters (g20) are not served: IIN2.1, object unknown; nor integer analogs (g30v1).
    master.stack.ScanAllObjects(opendnp3.GroupVariationID(20, 0), master.handler())
    _, msb = await master.iin_with(OBJECT_UNKNOWN | PARAM_ERROR)
    assert msb & OBJECT_UNKNOWN
    master.stack.ScanAllObjects(opendnp3.GroupVariationID(30, 1), master.handler())
    _, msb = await master.iin_with(OBJECT_UNKNOWN | PARAM_ERROR)
    assert msb & OBJECT_UNKNOWN
    # A range past the last analog input: IIN2.2, parameter error.
    last = len(ANALOG_INDEX)
    master.stack.ScanRange(opendnp3.GroupVariationID(30, 5), last - 1, last + 3, master.handler())
    _, msb = await master.iin_with(OBJECT_UNKNOWN | PARAM_ERROR)
    assert msb & PARAM_ERROR
    # A range inside is answered with just those points.
    handler = master.handler()
    master.stack.ScanRange(opendnp3.GroupVariationID(30, 0), 2, 3, handler)
    analogs, binaries = await asyncio.wait_for(handler.ended.get(), WAIT_S)
    assert analogs == {2: (12.5, ONLINE), 3: (3.5, ONLINE)} and binaries == {}

    # A control (CROB) is refused (IIN2.1: an outstation with no outputs) and fails at the master.
    outcome: asyncio.Future[list[object]] = master.loop.create_future()
    master.stack.DirectOperate(
        opendnp3.ControlRelayOutputBlock(opendnp3.OperationType.LATCH_ON),
        0,
        lambda result: _post(master.loop, outcome.set_result, [p.status for p in result.to_list()]),
    )
    _, msb = await master.iin_with(OBJECT_UNKNOWN | PARAM_ERROR | FUNC_NOT_SUPPORTED)
    assert msb & OBJECT_UNKNOWN
    assert opendnp3.CommandStatus.SUCCESS not in await asyncio.wait_for(outcome, WAIT_S)


async def test_an_unreadable_state_is_served_as_unknown_not_as_zero(link: Any) -> None:
    site, _outstation, master = link
    await asyncio.wait_for(master.startup.ended.get(), WAIT_S)
    site.failing = True
    analogs, binaries = await master.class0()
    assert len(analogs) == len(ANALOG_INDEX)
    assert all(not flags & ONLINE for _, flags in analogs.values())
    assert all(not flags & ONLINE for _, flags in binaries.values())
    site.failing = False  # and the association carries on
    analogs, _ = await master.class0()
    assert analogs[ANALOG_INDEX["site_mw"]] == (12.5, ONLINE)


async def test_a_peer_outside_the_allowlist_is_closed_and_counted() -> None:
    site = _Site()
    outstation = _outstation(site, allow="192.0.2.0/24")
    await outstation.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", outstation.port)
        try:
            assert await asyncio.wait_for(reader.read(64), WAIT_S) == b""  # closed, nothing said
        finally:
            writer.close()
        assert [reason for reason, _ in site.refusals] == ["not_allowed"]
        assert site.refusals[0][1].startswith("127.0.0.1:")
        assert not outstation.connected and site.reads == []
    finally:
        await outstation.stop()


@pytest.mark.parametrize(
    ("outstation_address", "master_address"), [(1024, 1024), (0xFFF0, 1), (1024, -1), (1024, 0xFFFF)]
)
def test_link_addresses_dnp3_reserves_or_repeats_are_refused(
    outstation_address: int, master_address: int
) -> None:
    with pytest.raises(ValueError, match="address"):
        QseDnp3Outstation(
            host="127.0.0.1",
            port=0,
            outstation_address=outstation_address,
            master_address=master_address,
            allow=(),
            read=lambda table: {},
            refused=lambda reason, peer: None,
        )


def test_the_module_imports_without_the_extra_and_start_names_it() -> None:
    code = (
        "import asyncio, sys\n"
        "sys.modules['py1815'] = None\n"
        "from mullet.drivers import extras\n"
        "from mullet.drivers.qse_dnp3 import QseDnp3Outstation\n"
        "assert not extras.installed('py1815')\n"
        "o = QseDnp3Outstation(host='127.0.0.1', port=0, outstation_address=1024, master_address=1,\n"
        "    allow=(), read=lambda t: {}, refused=lambda r, p: None)\n"
        "try:\n"
        "    asyncio.run(o.start())\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "mullet[dnp3]" in done.stdout


async def test_the_daemon_serves_its_live_points_over_dnp3(mqtt_broker, tmp_path) -> None:
    """`[qse] dnp3 = true`: mulletd's own outstation, beside its Modbus server, with the simulated
    site's live values."""
    from helpers import running_site
    from test_qse import with_qse

    from mullet.simulators.ports import free_port

    dnp3_port = free_port()
    mutate = with_qse(dnp3=True, dnp3_port=dnp3_port, heartbeat_timeout_s=600.0)
    async with running_site(mqtt_broker, tmp_path, mutate):
        master = _Master(dnp3_port, asyncio.get_running_loop())
        try:
            analogs, binaries = await asyncio.wait_for(master.startup.ended.get(), WAIT_S * 3)
        finally:
            await master.close()
    site_mw, flags = analogs[ANALOG_INDEX["site_mw"]]
    assert site_mw > 5.0 and flags & ONLINE
    mining_mw, flags = analogs[ANALOG_INDEX["mining_mw"]]
    assert 5.0 < mining_mw < site_mw and flags & ONLINE
    assert analogs[ANALOG_INDEX["heartbeat"]][0] >= 1.0
    assert binaries[0] == (True, ONLINE | STATE)  # controlling
