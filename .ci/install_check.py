"""`pip install .` into a clean venv, with no extras, then run what a site runs.

Proves the packaging, not the code: every package and data file is in the wheel, every run-time import is
a declared dependency, and the optional parts (OpenADR, GPU agent, etcd, miner libraries, DNP3) stay out
of the way when their extras are missing. It checks `mulletd check-config` on the example site, runs
`mulletd run` against `mulletd simulate` until the daemon has read the meter and published setpoints, stops
it with SIGTERM (exit 0), and checks that `mulletd agent asic` without the asic extra names it. It prints
the installed dependency tree's size; `--extras all` also sizes an install with every extra.

Standard library only: it runs with the machine's python3 (>= 3.11), which needs network access to the
package index (or PIP_FIND_LINKS / PIP_INDEX_URL pointing at a mirror).

    python3 .ci/install_check.py [--extras all] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "deploy" / "site.example.toml"
WAIT_S = 120.0  # a fresh 2-core machine: the first import of everything takes a few seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_venv(root: Path, spec: str) -> tuple[Path, float]:
    """A new venv at `root` with `pip install spec`; the seconds pip took."""
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    started = time.monotonic()
    subprocess.run(
        [
            str(root / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            spec,
        ],
        check=True,
    )
    return root, time.monotonic() - started


def tree_size(venv: Path) -> tuple[int, float]:
    """Installed distributions (less pip and setuptools, which every venv has) and site-packages MB."""
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
    )
    names = {d["name"].lower() for d in json.loads(listed.stdout)} - {"pip", "setuptools", "wheel"}
    (site_packages,) = (venv / "lib").glob("python3*/site-packages")
    size = sum(f.stat().st_size for f in site_packages.rglob("*") if f.is_file() and not f.is_symlink())
    return len(names), size / 1e6


def site_config(work: Path, broker_port: int) -> tuple[Path, int]:
    """The example site moved onto free ports and a journal in `work`; its metrics port."""
    text = EXAMPLE.read_text()
    text = text.replace("mqtt://127.0.0.1:1883", f"mqtt://127.0.0.1:{broker_port}")
    text = re.sub(r"^port = \d+", lambda _m: f"port = {free_port()}", text, flags=re.MULTILINE)
    text = re.sub(r'^path = ".*"', f'path = "{work / "journal.sqlite"}"', text, count=1, flags=re.MULTILINE)
    path = work / "site.toml"
    path.write_text(text)
    section = text[text.index("\n[metrics]") :]
    return path, int(re.search(r"^port = (\d+)", section, flags=re.MULTILINE).group(1))  # type: ignore[union-attr]


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        values = {}
        for line in response.read().decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values


def controlling(port: int) -> bool:
    """The daemon is connected, has read the meter and has published setpoints."""
    try:
        values = metrics(port)
    except OSError:
        return False
    power_w = values.get("mullet_site_power_watts", float("nan"))
    return (
        values.get("mullet_mqtt_connected") == 1.0
        and power_w == power_w
        and power_w > 0
        and values.get("mullet_setpoints_published_total", 0.0) > 0
    )


def start_broker(port: int, venv: Path, log: Path) -> subprocess.Popen[bytes]:
    mosquitto = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if mosquitto:
        argv = [mosquitto, "-p", str(port)]
    else:  # amqtt, a core dependency, is the embedded broker where mosquitto is absent
        code = (
            "import asyncio, sys\n"
            "from mullet.simulators.broker import EmbeddedBroker\n"
            "async def main():\n"
            f"    await EmbeddedBroker(port={port}).start()\n"
            "    await asyncio.Event().wait()\n"
            "asyncio.run(main())\n"
        )
        argv = [str(venv / "bin" / "python"), "-c", code]
    return subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def wait_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"install_check: {what} exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"install_check: {what} did not listen on {port} within {WAIT_S:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)
    return process.returncode


def check_runs(venv: Path, work: Path) -> None:
    mulletd = str(venv / "bin" / "mulletd")
    done = subprocess.run([mulletd, "check-config", str(EXAMPLE)], capture_output=True, text=True)
    print(f"install_check: check-config: exit {done.returncode}: {done.stdout.strip().splitlines()[:1]}")
    if done.returncode != 0:
        raise SystemExit(f"install_check: check-config failed:\n{done.stdout}{done.stderr}")

    agent = subprocess.run(
        [mulletd, "agent", "asic", "--config", str(REPO / "deploy" / "agent-asic.example.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    print(
        f"install_check: agent asic without the asic extra: exit {agent.returncode}: {agent.stderr.strip()}"
    )
    if agent.returncode != 2 or "mullet[asic]" not in agent.stderr:
        raise SystemExit("install_check: `mulletd agent asic` did not name the missing asic extra")

    broker_port = free_port()
    config, metrics_port = site_config(work, broker_port)
    broker = start_broker(broker_port, venv, work / "broker.log")
    processes: list[subprocess.Popen[bytes]] = [broker]
    try:
        wait_port(broker_port, broker, "the broker")
        simulate = subprocess.Popen(
            [mulletd, "simulate", "--config", str(config)],
            stdout=(work / "simulate.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        processes.append(simulate)
        run = subprocess.Popen(
            [mulletd, "run", "--config", str(config)],
            stdout=(work / "run.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        processes.append(run)
        started = time.monotonic()
        while not controlling(metrics_port):
            if run.poll() is not None or time.monotonic() - started > WAIT_S:
                tail = (work / "run.log").read_text(errors="replace").splitlines()[-30:]
                raise SystemExit("install_check: mulletd run did not take control:\n" + "\n".join(tail))
            time.sleep(0.2)
        print(f"install_check: mulletd run: controlling after {time.monotonic() - started:.1f} s")
        code = stop(run)
        if code != 0:
            raise SystemExit(f"install_check: mulletd run exited with {code} on SIGTERM")
        print("install_check: mulletd run: exit 0 on SIGTERM")
    finally:
        for process in reversed(processes):
            stop(process)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", default="", help="also size an install with these extras, e.g. all")
    parser.add_argument("--keep", type=Path, help="work in DIR and leave it there")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="mullet-install-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        # A copy without build outputs: setuptools' build/lib keeps files deleted from the tree.
        source = work / "source"
        shutil.copytree(
            REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__")
        )
        venv, pip_s = make_venv(work / "venv", str(source))
        count, mb = tree_size(venv)
        print(
            f"install_check: pip install . (no extras): {count} distributions, {mb:.0f} MB, pip {pip_s:.0f} s"
        )
        check_runs(venv, work)
        if args.extras:
            spec = f"{source}[{args.extras}]"
            extras_venv, pip_s = make_venv(work / "venv-extras", spec)
            count, mb = tree_size(extras_venv)
            what = f"pip install .[{args.extras}]"
            print(f"install_check: {what}: {count} distributions, {mb:.0f} MB ({pip_s:.0f} s)")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print("install_check: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
