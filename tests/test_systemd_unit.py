"""deploy/systemd/mulletd.service passes `systemd-analyze verify` and scores an exposure of 2.0 or lower
with `systemd-analyze security --offline=true` (where systemd-analyze is installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "deploy" / "systemd" / "mulletd.service"
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="needs systemd-analyze")


def _installed_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart= pointing at this venv's mulletd (verify checks the binary exists)."""
    text = UNIT.read_text()
    assert "ExecStart=/opt/mullet/.venv/bin/mulletd run" in text
    copy = tmp_path / "mulletd.service"
    copy.write_text(
        text.replace("/opt/mullet/.venv/bin/mulletd", str(Path(sys.executable).with_name("mulletd")))
    )
    return copy


def test_the_unit_verifies_and_its_exposure_is_at_most_2(tmp_path: Path) -> None:
    unit = _installed_copy(tmp_path)
    verify = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")
    security = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--threshold=20", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for mulletd.service: (\d+\.\d)", security.stdout)
    assert found is not None, security.stdout[-500:]
    assert float(found.group(1)) <= 2.0 and security.returncode == 0
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
    ):
        assert line in text


def test_exits_a_restart_cannot_fix_do_not_restart_and_restarts_are_bounded() -> None:
    """An unusable journal (EXIT_JOURNAL) or an invalid config fails the unit at once instead of
    crash-looping; other failures restart at most StartLimitBurst times per StartLimitIntervalSec."""
    from mullet.daemon.cli import EXIT_CONFIG, EXIT_JOURNAL, EXIT_LEADERSHIP_LOST

    settings = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, value)
    prevented = {int(code) for code in settings["RestartPreventExitStatus"].split()}
    assert {EXIT_JOURNAL, EXIT_CONFIG} <= prevented and EXIT_LEADERSHIP_LOST not in prevented
    assert settings["Restart"] == "on-failure"
    assert int(settings["StartLimitBurst"]) <= 5 and int(settings["StartLimitIntervalSec"]) >= 60
