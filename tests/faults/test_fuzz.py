"""Bad-input fuzzing with hypothesis: nothing from outside may crash the daemon or make it act.

- every subscribed topic (`mining/+/state|online`, `ai/+/state|online`, `grid/event`, `grid/price`,
  with configured and unknown subjects) gets random bytes and mutations of valid payloads (fields
  dropped, replaced by NaN / inf / negative / huge numbers, wrong types, unknown fields, other
  versions) through the daemon's own inbound dispatch (`Daemon._on_message`, what the MQTT session
  calls); a refused message changes no reading, queues no grid event, and adds exactly one to
  `mullet_rejected_messages_total` under a reason from a fixed set;
- random grid events through `ObligationBook.decide` and the plan: a refusal changes nothing and
  carries a code from the bounded set; what is accepted plans without error, with firm AI uncapped;
- random meter register values (NaN, inf, negative, huge, subnormal) served over Modbus TCP by the
  meter simulator to the real meter driver: only plausible samples come through, the rest are counted
  by reason;
- random mutations of the example config: a `Config`, or a `ConfigError` naming each problem.

Case counts are printed (MULLET_FUZZ_EXAMPLES scales them; default 400 per inbound property).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import struct
import time
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from faultkit import faulty_site
from helpers import EXAMPLE, site_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mullet.daemon.config import ConfigError, parse_config
from mullet.daemon.core.obligation_book import REJECTION_CODES, ObligationBook
from mullet.daemon.site.app import Daemon
from mullet.drivers.device_profiles import load_meter_profile
from mullet.drivers.meter import MAX_PLAUSIBLE_HZ, ModbusMeter
from mullet.drivers.protocol import (
    GridEvent,
    GroupState,
    Price,
    TenantState,
    WireError,
    decode,
    decode_online,
)
from mullet.policies.model import PolicyMemory, SiteSnapshot
from mullet.policies.plan import compute_plan
from mullet.simulators.meter import MeterSim

EXAMPLES = int(os.environ.get("MULLET_FUZZ_EXAMPLES", "400"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)
WIRE_REASONS = {"not_json", "not_object", "bad_version", "invalid_field", "too_large"}
INBOUND_REASONS = WIRE_REASONS | {"unknown_subject", "unknown_topic", "unexpected_topic", "queue_full"}
CASES: Counter[str] = Counter()

NASTY_NUMBERS = st.sampled_from(
    [math.nan, math.inf, -math.inf, -1.0, -1e-300, 0.0, 5e-324, 1e308, 1e19, 2**63, -(2**63), 2**64, 1e6]
)
JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    NASTY_NUMBERS,
    st.text(max_size=20),
)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


def _valid(kind: str, now_s: float) -> Any:
    """A payload the daemon accepts on that topic kind, to mutate."""
    return {
        "group_state": {"v": 1, "seq_applied": 3, "mode": "run", "power_kw": 600.0, "ts": now_s},
        "tenant_state": {"v": 1, "power_kw": 1500.0, "demand_kw": 1600.0, "ts": now_s},
        "grid_price": {"v": 1, "usd_per_mwh": 42.0, "ts": now_s},
        "grid_event": {"v": 1, "id": "fz-1", "kind": "limit", "kw": 9000.0, "program": "ERS-10"},
        "group_online": 1,
        "tenant_online": 0,
    }[kind]


@st.composite
def mutated(draw: st.DrawFn, kind: str) -> bytes:
    """Random bytes, or a valid payload with a few random mutations, serialised as JSON (NaN included)."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=64))
    payload = _valid(kind, 1_767_225_600.0)  # fixed: hypothesis replays must draw the same
    if isinstance(payload, dict):
        for _ in range(draw(st.integers(0, 3))):  # 0: the valid payload itself
            key = draw(st.sampled_from([*payload, "v", "extra", "power_kw", "kw", "ts", "id"]))
            action = draw(st.integers(0, 3))
            if action == 0:
                payload.pop(key, None)
            elif action == 1:
                payload[key] = draw(NASTY_NUMBERS)
            else:
                payload[key] = draw(JSON_VALUE)
    else:
        payload = draw(JSON_VALUE)
    text = json.dumps(payload, allow_nan=True)
    if draw(st.booleans()) and text:  # truncate or splice sometimes
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.text(max_size=3))
    return text.encode("utf-8", "surrogatepass")


def _rejected_total(daemon: Daemon) -> dict[str, float]:
    totals: dict[str, float] = {}
    for metric in daemon.metrics.rejected.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                totals[sample.labels["reason"]] = sample.value
    return totals


def _readings(daemon: Daemon) -> tuple:
    state = daemon.core.state
    return (
        dict(state.groups),
        dict(state.tenants),
        dict(state.groups_online),
        dict(state.tenants_online),
        state.price,
    )


@pytest.fixture
def daemon(tmp_path: Path) -> Daemon:
    config, _path = site_config("mqtt://127.0.0.1:1", tmp_path)
    built = Daemon(config)
    yield built
    built.journal.close()


async def test_random_and_mutated_payloads_on_every_subscribed_topic(daemon: Daemon) -> None:
    topics = daemon.topics
    group, tenant = daemon.core.group_ids[0], daemon.core.tenant_ids[0]
    targets = [
        ("group_state", topics.group_state(group)),
        ("group_state", topics.group_state("ghost")),
        ("group_online", topics.group_online(group)),
        ("tenant_state", topics.tenant_state(tenant)),
        ("tenant_online", topics.tenant_online("ghost")),
        ("grid_price", topics.grid_price),
        ("grid_event", topics.grid_event),
    ]
    outcomes: Counter[str] = Counter()

    @FUZZ
    @given(st.data())
    def one_message(data: st.DataObject) -> None:
        kind, topic = data.draw(st.sampled_from(targets))
        raw = data.draw(mutated(kind))
        before_readings = _readings(daemon)
        before_rejected = _rejected_total(daemon)
        daemon.intake.on_message(topic, raw)  # what the MQTT session calls for each message; must not raise
        after_rejected = _rejected_total(daemon)
        added = {r: after_rejected[r] - before_rejected.get(r, 0.0) for r in after_rejected}
        added = {r: n for r, n in added.items() if n}
        queued = []
        while not daemon.intake.grid_queue.empty():
            queued.append(daemon.intake.grid_queue.get_nowait()[0])
        CASES["inbound"] += 1
        if added:
            # Refused: counted once, by a known reason; nothing read, nothing queued to act on.
            assert sum(added.values()) == 1, added
            assert set(added) <= INBOUND_REASONS, added
            assert _readings(daemon) == before_readings
            assert not [item for item in queued if isinstance(item, GridEvent)]
            outcomes[f"rejected:{next(iter(added))}"] += 1
            return
        outcomes[f"accepted:{kind}"] += 1
        # Accepted: only well-formed, finite, non-negative readings get in.
        if kind == "group_state":
            reading = daemon.core.state.groups[group][0]
            assert math.isfinite(reading.power_kw) and reading.power_kw >= 0
        elif kind == "tenant_state":
            reading = daemon.core.state.tenants[tenant][0]
            assert math.isfinite(reading.power_kw) and reading.power_kw >= 0
        elif kind == "grid_price":
            assert daemon.core.state.price is not None and math.isfinite(daemon.core.state.price[0])
        elif kind == "grid_event":
            assert len(queued) == 1 and isinstance(queued[0], GridEvent)

    one_message()
    print(f"\nfuzz inbound: {CASES['inbound']} messages; {dict(sorted(outcomes.items()))}")
    assert any(k.startswith("rejected:") for k in outcomes) and any(
        k.startswith("accepted:") for k in outcomes
    )


GRID_EVENTS = st.builds(
    GridEvent,
    # Ids from the wire's character set (an id outside it never reaches decide: drivers/protocol.py).
    id=st.one_of(
        st.sampled_from(["a", "b", "ufr-1", "c"]), st.from_regex(r"[A-Za-z0-9._:@+=-]{1,8}", fullmatch=True)
    ),
    kind=st.sampled_from(["limit", "reduce", "cancel"]),
    kw=st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False), NASTY_NUMBERS.filter(math.isfinite)),
    start=st.one_of(st.none(), st.floats(0, 4e9, allow_nan=False)),
    end=st.one_of(st.none(), st.floats(0, 4e9, allow_nan=False)),
    program=st.sampled_from(["generic", "ERS-10", "ERS-30", "FFR", "ECRS", "4CP", "nonsense"]),
    allow_ai_flex=st.booleans(),
    trip_stage=st.one_of(st.none(), st.integers(1, 16)),
)


@FUZZ
@given(
    events=st.lists(GRID_EVENTS, min_size=1, max_size=8),
    site_kw=st.one_of(st.none(), st.floats(0, 30_000)),
)
def test_random_grid_events_are_decided_without_crash_and_refusals_change_nothing(events, site_kw) -> None:
    config = parse_config(tomllib.loads(EXAMPLE.read_text()))
    site = config.site_spec()
    book = ObligationBook.from_config(config)
    now_s = time.time()
    for event in events:
        CASES["grid_event"] += 1
        before = dict(book.obligations)
        decision = book.decide(event, now_s=now_s, site_power_kw=site_kw)
        if not decision.accepted:
            assert decision.code in REJECTION_CODES, decision.code
            book.apply(event, decision, now_s)  # what the daemon does not do; still must change nothing
            assert book.obligations == before
            continue
        book.apply(event, decision, now_s)
        for obligation in book.obligations.values():
            assert math.isfinite(obligation.site_limit_kw()) and obligation.site_limit_kw() >= 0
    snapshot = SiteSnapshot(
        site_power_kw=site_kw,
        tenant_power_kw={t.tenant_id: None for t in site.tenants},
        group_power_kw={g.group_id: g.rated_kw for g in site.groups},
    )
    plan = compute_plan(site, snapshot, list(book.obligations.values()), now_s, PolicyMemory())
    for tenant, decision in zip(site.tenants, plan.tenants, strict=True):
        assert (
            decision.power_cap_kw is None or decision.power_cap_kw >= tenant.reserved_kw - tenant.flexible_kw
        )


def _config_paths(data: dict, prefix: tuple = ()) -> list[tuple]:
    paths = []
    for key, value in data.items():
        path = (*prefix, key)
        if isinstance(value, dict):
            paths.extend(_config_paths(value, path))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for index, item in enumerate(value):
                paths.extend(_config_paths(item, (*path, index)))
        else:
            paths.append(path)
    return paths


EXAMPLE_DATA = tomllib.loads(EXAMPLE.read_text())
CONFIG_PATHS = _config_paths(EXAMPLE_DATA)


@FUZZ
@given(st.data())
def test_random_config_mutations_give_a_config_or_a_clear_error(data: st.DataObject) -> None:
    config_data = json.loads(json.dumps(EXAMPLE_DATA))
    for _ in range(data.draw(st.integers(1, 4))):
        path = data.draw(st.sampled_from(CONFIG_PATHS))
        parent = config_data
        for part in path[:-1]:
            parent = parent[part]
        if data.draw(st.booleans()):
            parent[path[-1]] = data.draw(st.one_of(NASTY_NUMBERS, JSON_LEAF))
        else:
            parent.pop(path[-1], None)
    CASES["config"] += 1
    try:
        config = parse_config(config_data)
    except ConfigError as exc:
        assert exc.problems and all(": " in line for line in exc.problems), exc.problems
        return
    site = config.site_spec()
    compute_plan(site, SiteSnapshot(None, {}), [], time.time(), PolicyMemory())
    for group in site.groups:
        assert math.isfinite(group.rated_kw) and group.rated_kw > 0


async def test_random_meter_register_values_reach_the_daemon_only_when_plausible() -> None:
    sim = MeterSim(power_kw=lambda: 1000.0, frequency_hz=lambda: 60.0, port=0)
    await sim.start()
    outcomes: list[tuple[str, float, float] | tuple[str, str]] = []
    arrived = asyncio.Event()

    def on_sample(sample) -> None:
        outcomes.append(("sample", sample.power_kw, sample.frequency_hz))
        arrived.set()

    def on_reject(reason: str) -> None:
        outcomes.append(("rejected", reason))
        arrived.set()

    meter = ModbusMeter(
        sim.host,
        sim.port,
        device_id=1,
        profile=load_meter_profile("eastron-sdm630"),
        poll_hz=100,
        timeout_s=0.5,
        on_sample=on_sample,
        on_reject=on_reject,
    )
    task = asyncio.create_task(meter.run())
    float32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
    # What a float32 register can hold: NaN, inf, negative, huge (3.4e38) and subnormal included.
    value = st.one_of(float32, NASTY_NUMBERS.map(lambda x: _as_float32(float(x))))
    draws = st.tuples(value, value)
    reasons: Counter[str] = Counter()
    try:
        cases: list[tuple[float, float]] = []

        # Hypothesis generates the cases (edge-biased); the Modbus round trips run in this loop below.
        @settings(max_examples=max(50, EXAMPLES // 4), database=None, deadline=None)
        @given(draws)
        def collect(case: tuple[float, float]) -> None:
            cases.append(case)

        collect()
        cases += [(math.nan, 60.0), (1e6, math.inf), (-5.0, 60.0), (3e38, 60.0), (1e6, 0.0), (1e6, 1e9)]
        for power_w, frequency_hz in cases:
            sim.override("power_w", power_w)
            sim.override("frequency_hz", frequency_hz)
            start = len(outcomes)
            # The second outcome after the override comes from a read that began after it.
            while len(outcomes) < start + 2:
                arrived.clear()
                await asyncio.wait_for(arrived.wait(), 5)
            outcome = outcomes[start + 1]
            CASES["meter"] += 1
            stored_w = _as_float32(power_w)
            stored_hz = _as_float32(frequency_hz)
            plausible = (
                math.isfinite(stored_w)
                and math.isfinite(stored_hz)
                and stored_w >= 0
                and 0 < stored_hz <= MAX_PLAUSIBLE_HZ
            )
            if plausible:
                assert outcome[0] == "sample", (power_w, frequency_hz, outcome)
                assert outcome[1] == pytest.approx(stored_w / 1000.0) and math.isfinite(outcome[2])
            else:
                assert outcome[0] == "rejected", (power_w, frequency_hz, outcome)
                reasons[outcome[1]] += 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sim.stop()
    assert set(reasons) <= {"not_finite", "frequency_out_of_range", "negative_power"}
    print(f"\nfuzz meter registers: {CASES['meter']} cases; rejected {dict(reasons)}")


def _as_float32(value: float) -> float:
    try:
        return struct.unpack(">f", struct.pack(">f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)


def _invalid(kind: str, raw: bytes) -> bool:
    model = {
        "group_state": GroupState,
        "tenant_state": TenantState,
        "grid_price": Price,
        "grid_event": GridEvent,
    }
    try:
        if kind in model:
            decode(model[kind], raw)
        else:
            decode_online(raw)
    except WireError:
        return True
    return False


async def test_invalid_payloads_over_the_broker_are_counted_and_never_acted_on(mqtt_broker, tmp_path) -> None:
    """The same mutations, invalid ones only, through mosquitto to `mulletd run`: each counted once."""
    async with faulty_site(mqtt_broker, tmp_path) as run:
        topics, observer = run.topics, run.observer
        group, tenant = run.config.groups[0].group_id, run.config.tenants[0].tenant_id
        targets = [
            ("group_state", topics.group_state(group)),
            ("group_online", topics.group_online(group)),
            ("tenant_state", topics.tenant_state(tenant)),
            ("tenant_online", topics.tenant_online(tenant)),
            ("grid_price", topics.grid_price),
            ("grid_event", topics.grid_event),
        ]
        batch: list[tuple[str, bytes]] = []

        @settings(max_examples=max(60, EXAMPLES // 2), database=None, deadline=None)
        @given(st.sampled_from(targets).flatmap(lambda t: st.tuples(st.just(t), mutated(t[0]))))
        def collect(case) -> None:
            (kind, topic), raw = case
            if _invalid(kind, raw) and raw:  # an empty retained payload clears, it is not a message
                batch.append((topic, raw))

        collect()
        before = sum(
            v for k, v in (await run.metrics()).items() if k.startswith("mullet_rejected_messages_total")
        )
        setpoints_before = await run.metric("mullet_setpoints_published_total")
        # Not retained: the next test's site starts clean. Sent together, then every PUBACK awaited:
        # one publish after another took ~45 ms each here (the loop also runs the simulated site).
        await asyncio.gather(*(observer.publish(topic, raw) for topic, raw in batch))
        expected = before + len(batch)
        deadline_s = time.monotonic() + 10
        while True:
            samples = await run.metrics()
            rejected = {k: v for k, v in samples.items() if k.startswith("mullet_rejected_messages_total")}
            if sum(rejected.values()) >= expected or time.monotonic() > deadline_s:
                break
            await asyncio.sleep(0.05)  # polling the daemon process's /metrics
        CASES["over_mqtt"] += len(batch)
        print(f"\nfuzz over mqtt: {len(batch)} invalid payloads; {rejected}")
        assert sum(rejected.values()) == expected
        assert await run.metric("mullet_grid_obligations_active") == 0.0
        assert await run.metric("mullet_setpoints_published_total") == setpoints_before
        assert run.daemon.returncode is None


def test_zz_fuzz_case_counts() -> None:
    """Runs last in this file: the tally of every case above (for the report)."""
    print(f"\nfuzz cases: {dict(CASES)} total {sum(CASES.values())}")
    assert sum(CASES.values()) > 0
