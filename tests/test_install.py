"""deploy/install.sh into a temporary root: the paths the unit and docs/operations.md name exist with
their modes, the unit's ExecStart= names the installed mulletd, and it checks the installed config.

The venv re-uses this checkout's installed packages (--reuse-site): pip's build of the checkout needs
the network or a wheelhouse (`--pip-args "--no-index --find-links DIR"`), which a test must not."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

INSTALL = Path(__file__).resolve().parents[1] / "deploy" / "install.sh"


def _install(root: Path) -> subprocess.CompletedProcess[str]:
    site = sysconfig.get_paths()["purelib"]
    argv = ["sh", str(INSTALL), "--root", str(root), "--python", sys.executable, "--reuse-site", site]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    result = _install(root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: site" in result.stdout  # check-config on the installed example site
    return root


def test_install_creates_the_paths_with_their_modes(installed: Path) -> None:
    etc = installed / "etc" / "mullet"
    assert _mode(etc) == 0o755 and _mode(etc / "site.toml") == 0o644
    assert _mode(etc / "credentials") == 0o700
    assert _mode(etc / "credentials" / "api-token") == 0o600
    assert len((etc / "credentials" / "api-token").read_text().strip()) >= 32
    assert _mode(etc / "credentials" / "mqtt-password") == 0o600
    assert _mode(installed / "var" / "lib" / "mullet") == 0o700
    journal = f'path = "{installed}/var/lib/mullet/journal.sqlite"'
    assert journal in (etc / "site.toml").read_text().splitlines()
    assert (installed / "etc/systemd/system/mulletd.service.d/cpu.conf").is_file()


def test_the_units_exec_start_and_credentials_exist_and_check_the_installed_config(installed: Path) -> None:
    unit = (installed / "etc" / "systemd" / "system" / "mulletd.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    assert argv[0] == f"{installed}/opt/mullet/.venv/bin/mulletd" and Path(argv[0]).is_file()
    assert argv[1:3] == ["run", "--config"] and Path(argv[3]).is_file()
    for line in unit.splitlines():
        if line.startswith("LoadCredential="):
            assert Path(line.split(":", 1)[1]).is_file(), line
    helped = subprocess.run([argv[0], "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "check-config" in helped.stdout
    checked = subprocess.run([argv[0], "check-config", argv[3]], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and checked.stdout.startswith("ok: site"), checked.stderr


def test_a_second_install_keeps_the_sites_config_and_credentials(installed: Path) -> None:
    site = installed / "etc" / "mullet" / "site.toml"
    token = installed / "etc" / "mullet" / "credentials" / "api-token"
    site.write_text(site.read_text() + "\n# edited by the site\n")
    before = (site.read_text(), token.read_text())
    result = _install(installed)
    assert result.returncode == 0, result.stderr
    assert (site.read_text(), token.read_text()) == before


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_installed_unit_verifies(installed: Path) -> None:
    unit = installed / "etc" / "systemd" / "system" / "mulletd.service"
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")
