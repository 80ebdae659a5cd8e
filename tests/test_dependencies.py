"""What the code relies on is declared and still there.

- Every third-party module the packages import is a declared dependency (core or an extra), and the
  table of extras the code checks (drivers/extras.py) is pyproject's.
- The internals of paho-mqtt, aiomqtt and pymodbus that the drivers read (pinned to the minor series
  tested) exist and behave as the drivers assume: an upgrade that drops one fails here, by name, not as
  a stalled fast path in the field.
- The site daemon runs with no extra installed (each extra's modules made unimportable), and a
  configured part whose extra is missing is refused at check-config, naming the `pip install`.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from helpers import MULLETD, running_site

from mullet.drivers import extras

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("daemon", "drivers", "policies", "simulators")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    """The distribution a requirement names, normalised (PEP 503)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _imported_modules() -> dict[str, set[str]]:
    """Top-level module -> the files that import it, over every module of the four packages."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.partition(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_run_time_import_is_a_declared_dependency() -> None:
    project = PYPROJECT["project"]
    optional = project["optional-dependencies"]
    declared = {_name(r) for r in project["dependencies"]}
    for extra, requirements in optional.items():
        if extra != "dev":  # test tools: the packages must never need them
            declared |= {_name(r) for r in requirements if not r.startswith("mullet[")}
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for module, files in _imported_modules().items():
        if module in sys.stdlib_module_names or module in ("mullet", "_typeshed"):
            continue
        names = {_name(d) for d in distributions.get(module, [])}
        if not names & declared:
            undeclared[module] = (sorted(names) or ["not installed"], sorted(files)[:3])
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_the_extras_the_code_names_are_pyprojects() -> None:
    optional = PYPROJECT["project"]["optional-dependencies"]
    for extra, modules in extras.EXTRAS.items():
        assert extra in optional, f"drivers/extras.py names extra {extra!r}, pyproject has none"
        assert {_name(d) for d in modules.values()} == {_name(r) for r in optional[extra]}, extra
    assert sorted(optional["all"][0].partition("[")[2].rstrip("]").split(",")) == sorted(extras.EXTRAS)


def test_every_package_directory_is_packaged() -> None:
    """setuptools' package-dir mapping needs each subpackage listed: one missing installs without it
    (an editable install hides that; `pip install .` does not)."""
    mapped = PYPROJECT["tool"]["setuptools"]["package-dir"]
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = set()
    for package, folder in mapped.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            on_disk.add(".".join([package, *relative.parts]))
    assert on_disk == listed


# Internals the drivers read, by library (pinned in pyproject.toml to the minor series tested).


def test_paho_internals_read_by_the_direct_publish_exist() -> None:
    """drivers/paho_direct.py writes a QoS 1 PUBLISH straight to paho's socket (the fast path)."""
    import paho.mqtt
    from paho.mqtt.client import CallbackAPIVersion, Client, MQTTMessage, MQTTv5, mqtt_ms_wait_for_puback

    client = Client(CallbackAPIVersion.VERSION2)
    version = paho.mqtt.__version__
    for attribute in (
        "_sock",
        "_out_packet",
        "_protocol",
        "_out_message_mutex",
        "_max_inflight_messages",
        "_max_queued_messages",
        "_inflight_messages",
        "_out_messages",
        "_mid_generate",
        "_pack_remaining_length",
        "_sock_send",
        "_call_socket_register_write",
    ):
        assert hasattr(client, attribute), f"paho-mqtt {version}: Client.{attribute} is gone"
    Client._raise_for_invalid_topic(b"mullet/site/x")
    with pytest.raises(ValueError):
        Client._raise_for_invalid_topic(b"mullet/+/x")
    # MQTT 3.1.1 section 2.2.3: 321 = 0x41 | 0x80, then 0x02.
    assert bytes(client._pack_remaining_length(bytearray(b"\x32"), 321)) == b"\x32\xc1\x02"
    assert isinstance(client._mid_generate(), int)
    assert client._sock is None and len(client._out_packet) == 0 and len(client._out_messages) == 0
    assert client._inflight_messages == 0 and client._protocol != MQTTv5
    with client._out_message_mutex:
        pass
    message = MQTTMessage(1, b"t")
    message.state = mqtt_ms_wait_for_puback
    assert message.info.mid == 1


async def test_aiomqtt_keeps_a_paho_client_the_drivers_reach() -> None:
    """drivers/mqtt.py and drivers/device_link.py reach the paho client under aiomqtt's Client."""
    import aiomqtt
    from paho.mqtt.client import Client

    client = aiomqtt.Client("127.0.0.1", port=1)
    version = importlib.metadata.version("aiomqtt")
    assert isinstance(client._client, Client), f"aiomqtt {version}: Client._client is not paho's Client"
    assert hasattr(client, "pending_calls_threshold"), f"aiomqtt {version}: pending_calls_threshold gone"
    for attribute in ("socket", "on_publish", "on_socket_unregister_write", "publish", "loop_write"):
        assert hasattr(client._client, attribute), f"aiomqtt {version}: paho Client.{attribute} is gone"


def test_pymodbus_framer_builds_and_reads_mbap_frames() -> None:
    """drivers/modbus_tcp.py frames requests and parses replies with pymodbus' FramerSocket itself."""
    from pymodbus.framer import FramerSocket
    from pymodbus.pdu import DecodePDU
    from pymodbus.pdu.register_message import ReadHoldingRegistersRequest

    framer = FramerSocket(DecodePDU(is_server=False))
    request = ReadHoldingRegistersRequest(address=0x10, count=2, dev_id=1, transaction_id=7)
    # MBAP: transaction 7, protocol 0, length 6, unit 1; PDU: FC 03, address 0x0010, count 2.
    assert framer.buildFrame(request) == bytes.fromhex("0007 0000 0006 01 03 0010 0002")
    reply = bytes.fromhex("0007 0000 0007 01 03 04 000A 000B")
    used, pdu = framer.handleFrame(reply[:5], 0, 0)
    assert used == 0 and pdu is None  # a partial frame waits for the rest
    used, pdu = framer.handleFrame(reply, 0, 0)
    assert used == len(reply) and pdu is not None
    assert (pdu.transaction_id, pdu.registers) == (7, [10, 11])


# No extras installed.


def _no_extras(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python cannot import any extra's module (sitecustomize runs first)."""
    folder = tmp_path / "no-extras"
    folder.mkdir()
    modules = sorted(m for table in extras.EXTRAS.values() for m in table)
    (folder / "sitecustomize.py").write_text(
        f"import sys\nfor name in {modules!r}:\n    sys.modules[name] = None\n"
    )
    return {"PYTHONPATH": str(folder)}


def _check_config(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [str(MULLETD), "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_check_config_names_the_extra_a_configured_part_needs(tmp_path: Path) -> None:
    env = _no_extras(tmp_path)
    example = (ROOT / "deploy" / "site.example.toml").read_text()
    assert _check_config(ROOT / "deploy" / "site.example.toml", env).returncode == 0
    cases = {
        "openadr": "\n[openadr]\nenabled = true\n",
        "etcd": '\n[ha]\netcd_endpoints = ["127.0.0.1:2379"]\nnode_id = "a"\n',
    }
    for extra, section in cases.items():
        path = tmp_path / f"{extra}.toml"
        path.write_text(example + section)
        done = _check_config(path, env)
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"pip install 'mullet[{extra}]'" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


async def test_the_site_daemon_takes_control_with_no_extra_installed(mqtt_broker, tmp_path: Path) -> None:
    env = _no_extras(tmp_path)
    async with running_site(mqtt_broker, tmp_path, env=env) as running:
        # Online and planning (running_site waited for both); the meter is read, not unknown.
        await running.until_metric("mullet_site_power_watts", lambda w: w > 0, 30)
    text = running.log_path.read_text()
    assert "Traceback" not in text
