"""The daemon, the simulated controllers and the agents' MQTT link over mosquitto's TLS listener with the
shipped ACL (deploy/mosquitto/tls.conf + acl): everyone authenticates, the site works end to end, and a
controller that publishes or reads another group's topics, or commands like the daemon, is refused by
the broker, so the daemon never sees it.

A throwaway CA, broker certificate and daemon client certificate are made with `cryptography`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import getpass
import ipaddress
import json
import os
import secrets
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import Running, observing, site_config, start_daemon, until

from mullet.daemon.site.simulated import simulated_site
from mullet.drivers.protocol import GridEvent, Topics, encode
from mullet.simulators.broker import MosquittoBroker, find_mosquitto
from mullet.simulators.meter import FrequencyScript

ROOT = Path(__file__).resolve().parents[1]
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
pytestmark = pytest.mark.skipif(
    find_mosquitto() is None or not Path(MOSQUITTO_PASSWD).exists(),
    reason="needs mosquitto and mosquitto_passwd",
)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def _issue(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(signer, hashes.SHA256())


def make_pki(directory: Path) -> dict[str, Path]:
    """CA, broker certificate (127.0.0.1 / localhost) and a client certificate for the daemon."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mullet test CA")])
    ca_cert = _issue("mullet test CA", ca_key, ca_name, ca_key, ca=True)
    files = {"ca": directory / "ca.crt"}
    files["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for who in ("broker", "mulletd"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(who, key, ca_name, ca_key, ca=False)
        files[f"{who}_cert"] = directory / f"{who}.crt"
        files[f"{who}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{who}_key"] = directory / f"{who}.key"
        _write_key(files[f"{who}_key"], key)
    return files


class TlsBroker(MosquittoBroker):
    """mosquitto with the shipped deploy/mosquitto/tls.conf and acl, paths pointed at the test's files."""

    def __init__(self, executable: str, pki: dict[str, Path], passwd: Path) -> None:
        super().__init__(executable)
        shipped = (ROOT / "deploy" / "mosquitto" / "tls.conf").read_text()
        replacements = {
            "/etc/mosquitto/mullet.passwd": str(passwd),
            "/etc/mosquitto/mullet.acl": str(ROOT / "deploy" / "mosquitto" / "acl"),
            "/etc/mosquitto/certs/ca.crt": str(pki["ca"]),
            "/etc/mosquitto/certs/broker.crt": str(pki["broker_cert"]),
            "/etc/mosquitto/certs/broker.key": str(pki["broker_key"]),
            "listener 8883": f"listener {self.port} {self.host}",
        }
        for old, new in replacements.items():
            assert old in shipped, old
            shipped = shipped.replace(old, new)
        # Started as root, mosquitto drops to user `mosquitto`, which cannot read the test's files.
        self.conf_text = shipped + f"user {getpass.getuser()}\npersistence false\nset_tcp_nodelay true\n"

    @property
    def url(self) -> str:
        return f"mqtts://{self.host}:{self.port}"

    def spawn(self) -> None:
        conf = self._dir / "mosquitto.conf"
        conf.write_text(self.conf_text)
        self.process = subprocess.Popen(
            [self.executable, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=open(self.log_path, "wb")
        )

    @property
    def log_path(self) -> Path:
        return self._dir / "mosquitto.log"


def _passwords(path: Path, users: dict[str, str]) -> None:
    for index, (user, password) in enumerate(users.items()):
        flags = ["-c"] if index == 0 else []
        subprocess.run(
            [MOSQUITTO_PASSWD, *flags, "-b", str(path), user, password], check=True, capture_output=True
        )


def _client(broker: TlsBroker, pki: dict[str, Path], user: str, password: str) -> aiomqtt.Client:
    return aiomqtt.Client(
        broker.host,
        broker.port,
        username=user,
        password=password,
        identifier=f"{user.replace('/', '-')}-{secrets.token_hex(3)}",
        tls_context=ssl.create_default_context(cafile=str(pki["ca"])),
    )


@contextlib.asynccontextmanager
async def _secure_site(
    tmp_path: Path,
) -> AsyncIterator[tuple[Running, TlsBroker, dict[str, Path], dict[str, str]]]:
    pki = make_pki(tmp_path)
    daemon_pw, device_pw = "d-" + secrets.token_hex(12), "c-" + secrets.token_hex(12)
    for name, secret in (("daemon-pw", daemon_pw), ("device-pw", device_pw)):
        (tmp_path / name).write_text(secret + "\n")
        (tmp_path / name).chmod(0o600)
    executable = find_mosquitto()
    assert executable is not None
    broker = TlsBroker(executable, pki, tmp_path / "passwd")

    def mutate(data: dict) -> None:
        data["mqtt"].update(
            url=broker.url,
            username="mulletd",
            password_file=str(tmp_path / "daemon-pw"),
            ca_file=str(pki["ca"]),
            cert_file=str(pki["mulletd_cert"]),
            key_file=str(pki["mulletd_key"]),
        )
        data["simulator"]["mqtt_password_file"] = str(tmp_path / "device-pw")

    config, path = site_config(broker.url, tmp_path, mutate)
    users = {
        "mulletd": daemon_pw,
        "aggregator": "a-" + secrets.token_hex(8),
        "monitor": "m-" + secrets.token_hex(8),
    }
    users |= {f"mining/{g.group_id}": device_pw for g in config.groups}
    users |= {f"ai/{t.tenant_id}": device_pw for t in config.tenants}
    _passwords(tmp_path / "passwd", users)
    await broker.start()
    site = simulated_site(config)
    site_task = asyncio.create_task(site.run())
    log_path = tmp_path / "mulletd.log"
    daemon = None
    try:
        await asyncio.wait_for(site.started.wait(), timeout=15)
        daemon = await start_daemon(path, log_path)
        async with observing(
            broker,
            [f"{config.topic_root}/#"],
            Topics(config.topic_root),
            client_id=f"monitor-{secrets.token_hex(3)}",
            username="monitor",
            password=users["monitor"],
            tls_context=ssl.create_default_context(cafile=str(pki["ca"])),
        ) as observer:
            await observer.wait_for(lambda m: m.topic == observer.topics.daemon_plan, 30)
            yield Running(config, path, site, daemon, observer, log_path), broker, pki, users
    finally:
        if daemon is not None and daemon.returncode is None:
            daemon.kill()
            await daemon.wait()
        site_task.cancel()
        await asyncio.gather(site_task, return_exceptions=True)
        await broker.stop()


def _rejected(running: Running, reason: str) -> float:
    return running.metric(f'mullet_rejected_messages_total{{reason="{reason}"}}', 0.0)


async def test_the_site_runs_over_tls_with_the_shipped_acl_and_a_controller_cannot_cross_groups(
    tmp_path: Path,
) -> None:
    async with _secure_site(tmp_path) as (running, broker, pki, users):
        observer, topics, site, config = (
            running.observer,
            running.observer.topics,
            running.site,
            running.config,
        )
        # Every controller logged in under its own identity and reports through the ACL.
        await until(lambda: all(link.ready.is_set() for link in site.links), 30, "controllers connected")
        rated_kw = sum(g.rated_kw for g in config.groups)
        await until(lambda: site.mining_power_kw() >= 0.99 * rated_kw, 30, "full mining load")
        limit_kw = site.site_power_kw() - 0.25 * rated_kw
        async with _client(broker, pki, "aggregator", users["aggregator"]) as aggregator:
            await aggregator.publish(
                topics.grid_event,
                encode(GridEvent(id="tls-1", kind="limit", kw=limit_kw, program="ERS-10")),
                qos=1,
            )
            assert (await observer.ack("tls-1"))["accepted"] is True
        # Setpoints reached the controllers (read ACL) and their states the daemon (write ACL).
        await until(lambda: site.site_power_kw() <= limit_kw, 30, "site under the limit")

        # A controller (mining/c01) trying another group's topics and the daemon's: all dropped.
        c02_state_before = len([1 for m in observer.received if m.topic == topics.group_state("c02")])
        async with _client(broker, pki, "mining/c01", users["mining/c01"]) as rogue:
            await rogue.subscribe(topics.group_set("c02"), qos=1)
            await rogue.subscribe(topics.group_set("c01"), qos=1)
            own = await anext(aiter(rogue.messages))  # retained: its own set only, never c02's
            assert own.topic.value == topics.group_set("c01")
            forged_set = (
                b'{"v": 1, "seq": 999999, "mode": "run", "power_kw": null, "trip_stage": null, "ts": 1}'
            )
            await rogue.publish(topics.group_state("c02"), b"not json from c01", qos=1)
            await rogue.publish(topics.group_online("c02"), b"0", qos=1)
            await rogue.publish(topics.group_set("c02"), forged_set, qos=1)
            await rogue.publish(topics.trip, b'{"v": 1, "seq": 999999, "stage": 1, "ts": 1}', qos=1)
            await rogue.publish(topics.daemon_plan, b"{}", qos=1)
            # Then one it may send (its own state, not JSON): per-client order means anything denied
            # above would have reached subscribers, the daemon included, before this.
            mark = len(observer.received)
            await rogue.publish(topics.group_state("c01"), b"not json, own topic", qos=1)
            await observer.wait_for(lambda m: m.payload == b"not json, own topic", 30, since=mark)
        await until(lambda: _rejected(running, "not_json") >= 1, 30, "the daemon saw the allowed message")
        assert _rejected(running, "not_json") == 1  # only c01's own; c02's forged state never arrived
        forged = [
            (m.topic, m.payload)
            for m in observer.received
            # The forged seq as written above: a float in a real state can hold the digits 999999.
            if b'"seq": 999999' in m.payload or m.payload in (b"not json from c01", b"{}")
        ]
        assert forged == []
        assert len([1 for m in observer.received if m.topic == topics.group_state("c02")]) >= c02_state_before
        assert all(
            not (m.topic == topics.group_online("c02") and m.payload == b"0") for m in observer.received
        )

        # An under-frequency trip: its PUBLISH is framed by paho_direct and written to the TLS
        # socket directly; the controllers get it and the broker's PUBACK comes back.
        seen = len(observer.received)
        site.frequency = FrequencyScript(59.8)
        trip = await observer.wait_for(lambda m: m.topic == topics.trip, 30, since=seen)
        assert trip.json()["stage"] == 1
        await until(lambda: _trip_acks(running), 30, "the trip's PUBACK")
        assert [ack["published"] for ack in _trip_acks(running)] == [True]

        # The daemon's and the controllers' passwords never reach the daemon's log.
        log_text = running.log_path.read_text()
        assert '"mqtt connected"' in log_text
        for user in ("mulletd", "mining/c01"):
            assert users[user] not in log_text
        assert os.stat(pki["mulletd_key"]).st_mode & 0o077 == 0


def _trip_acks(running: Running) -> list[dict]:
    lines = running.log_path.read_text().splitlines()
    return [entry for entry in map(json.loads, lines) if entry.get("event") == "trip acknowledged"]
