"""Secrets (the API token, the MQTT password, a TLS key) live in files of their own or in systemd
credentials, never in the config file, and never in a file every user of the machine can read.

A systemd credential (`LoadCredential=` / `LoadCredentialEncrypted=`, systemd.exec(5)) is a file named
after the credential in `$CREDENTIALS_DIRECTORY`, readable by the service only.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
MAX_SECRET_BYTES = 4096


class SecretError(ValueError):
    """A secret that cannot be used; the message never contains the secret."""


def check_secret_file(path: str | Path) -> Path:
    """The path, if it names a regular file that others (neither owner nor group) cannot read or write."""
    file = Path(path)
    try:
        info = file.stat()
    except OSError as exc:
        raise SecretError(f"cannot read {str(file)!r}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise SecretError(f"{str(file)!r} is not a regular file")
    if info.st_mode & (stat.S_IROTH | stat.S_IWOTH):
        mode = stat.S_IMODE(info.st_mode)
        raise SecretError(f"{str(file)!r} is readable or writable by others (mode {mode:04o}); chmod o-rw")
    return file


def credential_path(name: str) -> Path:
    directory = os.environ.get(CREDENTIALS_ENV)
    if not directory:
        raise SecretError(f"credential {name!r} needs ${CREDENTIALS_ENV} (LoadCredential= in the unit)")
    return Path(directory) / name


def read_secret(*, file: str | None = None, credential: str | None = None) -> str | None:
    """The secret from a file or a systemd credential (surrounding whitespace dropped); None if neither
    is configured."""
    if file is None and credential is None:
        return None
    path = check_secret_file(file if file is not None else credential_path(str(credential)))
    try:
        raw = path.read_bytes()[: MAX_SECRET_BYTES + 1]
    except OSError as exc:
        raise SecretError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    if len(raw) > MAX_SECRET_BYTES:
        raise SecretError(f"{str(path)!r} is longer than {MAX_SECRET_BYTES} bytes")
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretError(f"{str(path)!r} is not UTF-8 text") from None
    if not value:
        raise SecretError(f"{str(path)!r} is empty")
    return value
