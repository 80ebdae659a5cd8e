"""OpenADR event to curtail command, over the VTN path: how long a grid operator's event takes to become a
shed command when it comes through OpenADR 2.0b (openleadr, HTTP pull) instead of MQTT.

Set-up: a mosquitto process on a free loopback port; the example site simulated in this process (as in
bench/event_latency.py); an openleadr `OpenADRServer` VTN in this process; `mulletd run` as a
subprocess with its VEN polling the VTN every --poll-s seconds. Each of K rounds, after a random wait
of 0..poll s (so events land at every phase of the poll):

  the VTN queues a LOAD_DISPATCH setpoint event (ECRS, leaving mining ~2/3 of rated), then from just
  before `add_event`:
    (a) opt-in   -> the VTN's opt callback reports optIn (VEN polled, journaled, answered)
    (b) curtail  -> the first mining/<group>/set with mode "curtail" reaches an observer client
  then the VTN cancels the event and the round waits until every group is commanded to run again.

openleadr is pull-based: (b) is dominated by the wait for the next poll (uniform over one poll
interval), plus the VEN's request round trip, the daemon's validation and journal commit, and one plan.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import secrets
import sys
import tempfile
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import tomli_w
from _common import p99_note, print_header, print_table, reproduce_command, summary
from event_latency import HOST, Observer, site_config
from openleadr import OpenADRServer, objects

from mullet.daemon.logs import configure_logging
from mullet.daemon.site.simulated import simulated_site
from mullet.drivers.protocol import Topics
from mullet.simulators.broker import MosquittoBroker, find_mosquitto
from mullet.simulators.ports import free_port

VTN_ID = "Mullet-Bench-VTN"
VEN_ID = "ven-Bench-1"
CONTEXT = "http://ercot.example/ECRS"


async def run(args: argparse.Namespace) -> int:
    executable = find_mosquitto()
    if executable is None:
        print("mosquitto not found", file=sys.stderr)
        return 2
    broker = MosquittoBroker(executable)
    await broker.start()
    opts: dict[str, tuple[str, int]] = {}
    opt_seen = asyncio.Event()

    def on_opt(ven_id: str, event_id: str, opt_type: str) -> None:
        opts[event_id] = (opt_type, time.perf_counter_ns())
        opt_seen.set()

    port = free_port(HOST)
    vtn = OpenADRServer(
        vtn_id=VTN_ID, http_port=port, http_host=HOST, requested_poll_freq=timedelta(seconds=args.poll_s)
    )

    async def register(info: dict) -> tuple[str, str]:
        return VEN_ID, "reg-bench"

    vtn.add_handler("on_create_party_registration", register)
    await vtn.run()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        config, path = site_config(broker.url, workdir, curtail_s=0.5, resume_s=0.5, tick_hz=20)
        raw = tomllib.loads(path.read_text())
        raw["openadr"] = {
            "enabled": True,
            "vtn_url": f"http://{HOST}:{port}/OpenADR2/Simple/2.0b",
            "poll_s": args.poll_s,
            "report_interval_s": 60,
            "market_contexts": {CONTEXT: "ECRS"},
        }
        path.write_text(tomli_w.dumps(raw))
        site = simulated_site(config)
        site_task = asyncio.create_task(site.run())
        await asyncio.wait_for(site.started.wait(), 15)
        log_path = workdir / "mulletd.log"
        with log_path.open("ab") as log_file:
            daemon = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).with_name("mulletd")),
                "run",
                "--config",
                str(path),
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
            )
        topics = Topics(config.topic_root)
        mining_kw = sum(g.rated_kw for g in config.groups)
        ai_kw = sum(t.reserved_kw + t.headroom_kw for t in config.tenants)
        limit_kw = config.site.safety_margin_kw + config.site.base_load_kw + ai_kw + mining_kw * 2 / 3
        opt_ms: list[float] = []
        curtail_ms: list[float] = []
        try:
            async with aiomqtt.Client(HOST, broker.port, identifier=f"obs-{secrets.token_hex(3)}") as client:
                await client.subscribe(f"{config.topic_root}/mining/+/set", qos=1)
                observer = Observer(client, topics)
                pump = asyncio.create_task(observer.pump())
                # Registered and steady: the first plan is out and the site at full load.
                await observer.wait_for(lambda t, p: True, 30)
                deadline = time.monotonic() + 60
                while site.mining_power_kw() < 0.99 * mining_kw and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)  # the simulator's physics have no event to wait on
                await asyncio.sleep(args.poll_s * 2)  # the VEN's registration and first polls
                for _ in range(args.rounds):
                    await asyncio.sleep(random.uniform(0, args.poll_s))
                    seen = len(observer.received)
                    opt_seen.clear()
                    sent_ns = time.perf_counter_ns()
                    event_id = vtn.add_event(
                        ven_id=VEN_ID,
                        signal_name="LOAD_DISPATCH",
                        signal_type="setpoint",
                        intervals=[
                            objects.Interval(
                                dtstart=datetime.now(UTC),
                                duration=timedelta(minutes=30),
                                signal_payload=limit_kw,
                            )
                        ],
                        callback=on_opt,
                        market_context=CONTEXT,
                    )
                    stamp, _, _ = await observer.wait_for(
                        lambda t, p: json.loads(p).get("mode") == "curtail", args.poll_s * 5 + 5, since=seen
                    )
                    curtail_ms.append((stamp - sent_ns) / 1e6)
                    async with asyncio.timeout(args.poll_s * 5 + 5):
                        while event_id not in opts:
                            opt_seen.clear()
                            await opt_seen.wait()
                    opt, opt_ns = opts[event_id]
                    if opt != "optIn":
                        raise RuntimeError(f"VEN answered {opt}")
                    opt_ms.append((opt_ns - sent_ns) / 1e6)
                    vtn.cancel_event(VEN_ID, event_id)
                    deadline = time.monotonic() + args.poll_s * 5 + 20
                    while any(g.commanded != "run" for g in site.groups.values()):
                        if time.monotonic() > deadline:
                            raise RuntimeError("load not restored after cancel")
                        await asyncio.sleep(0.05)
                pump.cancel()
        finally:
            daemon.terminate()
            await daemon.wait()
            site_task.cancel()
            await asyncio.gather(site_task, return_exceptions=True)
            await vtn.stop()
            await broker.stop()
            broker.close()
    rows = []
    for name, samples in (
        ("(a) event -> optIn at the VTN", opt_ms),
        ("(b) event -> curtail command", curtail_ms),
    ):
        median, p99, worst = summary(samples)
        rows.append((name, len(samples), median, p99, worst))
    print_table(("path", "n", "p50 ms", "p99 ms", "max ms"), rows)
    print()
    print(p99_note(len(curtail_ms)))
    wait_ms = args.poll_s * 500
    print(
        f"poll interval {args.poll_s:g} s: the wait for the next poll is uniform over it"
        f" (mean {wait_ms:.0f} ms)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--poll-s", type=float, default=1.0)
    args = parser.parse_args(argv)
    configure_logging("warning")
    logging.getLogger("openleadr").setLevel(logging.WARNING)  # it logs every message at INFO
    command = reproduce_command("vtn_latency.py", [("--rounds", args.rounds), ("--poll-s", args.poll_s)])
    print_header(
        "OpenADR VTN event -> curtail",
        "openleadr VTN add_event -> VEN poll -> daemon journal + plan -> first curtail setpoint on MQTT",
        command,
    )
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
