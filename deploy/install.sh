#!/bin/sh
# Install mulletd from this checkout as the systemd unit expects it (docs/operations.md section 1):
#   /opt/mullet/.venv            a venv with mullet installed (the unit's ExecStart)
#   /etc/mullet/site.toml        the example site, only if there is none (journal in /var/lib/mullet)
#   /etc/mullet/credentials/     0700; api-token generated if missing, mqtt-password empty if missing
#   /var/lib/mullet/             0700, the journal (systemd moves it under /var/lib/private for DynamicUser)
#   /etc/systemd/system/mulletd.service and mulletd.service.d/cpu.conf
# Then: edit /etc/mullet/site.toml, `mulletd check-config`, `systemctl enable --now mulletd`.
#
# Usage: deploy/install.sh [--root DIR] [--python PY] [--extras LIST] [--pip-args ARGS] [--reuse-site DIR]
#   --root DIR        install under DIR instead of / (a test or an image); paths inside the installed
#                     unit and config then point under DIR too, and systemctl is not called
#   --python PY       the interpreter for the venv (default python3; Debian: apt-get install python3-venv)
#   --extras LIST     the optional parts this site runs, comma-separated: openadr, etcd (for [ha]),
#                     dnp3, asic, gpu, or all (docs/operations.md section 5); none by default
#   --pip-args ARGS   extra pip arguments, e.g. "--no-index --find-links /srv/wheels" on a site
#                     without internet
#   --reuse-site DIR  development and tests only: no pip; the venv sees the packages installed in DIR
#                     (a site-packages holding mullet from this checkout and its dependencies)
set -eu

root=/
python=python3
pip_args=
extras=
reuse_site=
while [ $# -gt 0 ]; do
    case "$1" in
    --root) root=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    --extras) extras=$2; shift 2 ;;
    --pip-args) pip_args=$2; shift 2 ;;
    --reuse-site) reuse_site=$2; shift 2 ;;
    *) echo "install.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done

source_dir=$(cd "$(dirname "$0")/.." && pwd)
root=$(mkdir -p "$root" && cd "$root" && pwd)
base=${root%/}  # "" for /
etc=$base/etc/mullet
state=$base/var/lib/mullet
venv=$base/opt/mullet/.venv
units=$base/etc/systemd/system
umask 022  # the venv and the config must be readable by the unit's DynamicUser

say() { echo "install.sh: $*"; }

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    { echo "install.sh: $python is older than Python 3.11" >&2; exit 1; }
"$python" -c 'import ensurepip, venv' 2>/dev/null ||
    { echo "install.sh: $python has no venv/ensurepip (Debian: apt-get install python3-venv)" >&2; exit 1; }

install -d -m 0755 "$etc" "$base/opt/mullet" "$units" "$units/mulletd.service.d"
install -d -m 0700 "$etc/credentials" "$state"

say "venv $venv"
if [ -n "$reuse_site" ]; then
    "$python" -m venv --clear --without-pip "$venv"
    purelib=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    reuse_site=$(cd "$reuse_site" && pwd)
    # addsitedir, so the .pth files there (an editable install's finder) are read as well
    echo "import site; site.addsitedir('$reuse_site')" > "$purelib/mullet-reuse-site.pth"
    "$venv/bin/python" -c 'import mullet.daemon.cli' ||
        { echo "install.sh: mullet is not importable from $reuse_site" >&2; exit 1; }
    cat > "$venv/bin/mulletd" <<EOF
#!$venv/bin/python
import sys
from mullet.daemon.cli import main
sys.exit(main())
EOF
    chmod 0755 "$venv/bin/mulletd"
else
    "$python" -m venv --clear "$venv"
    # shellcheck disable=SC2086  # pip_args is a list of words
    "$venv/bin/python" -m pip install --disable-pip-version-check --quiet $pip_args "$source_dir${extras:+[$extras]}"
fi

if [ -e "$etc/site.toml" ]; then
    say "kept $etc/site.toml"
else
    sed "s|^path = \"mullet-journal.sqlite\"|path = \"$state/journal.sqlite\"|" \
        "$source_dir/deploy/site.example.toml" > "$etc/site.toml"
    chmod 0644 "$etc/site.toml"
    say "wrote $etc/site.toml (the example site: edit it)"
fi

if [ ! -e "$etc/credentials/api-token" ]; then
    "$python" -c 'import secrets; print(secrets.token_urlsafe(32))' > "$etc/credentials/api-token"
    say "generated $etc/credentials/api-token"
fi
# LoadCredential= fails the start when its file is missing: an empty one means no broker password.
[ -e "$etc/credentials/mqtt-password" ] || : > "$etc/credentials/mqtt-password"
chmod 0600 "$etc/credentials/api-token" "$etc/credentials/mqtt-password"

sed -e "s|/opt/mullet/.venv|$venv|g" -e "s|/etc/mullet/|$etc/|g" \
    "$source_dir/deploy/systemd/mulletd.service" > "$units/mulletd.service"
install -m 0644 "$source_dir/deploy/systemd/mulletd.service.d/cpu.conf" "$units/mulletd.service.d/cpu.conf"
chmod 0644 "$units/mulletd.service"
say "unit $units/mulletd.service"

"$venv/bin/mulletd" check-config "$etc/site.toml"
if [ "$root" = / ] && command -v systemctl > /dev/null; then
    systemctl daemon-reload
    say "next: edit $etc/site.toml, mulletd check-config it, then systemctl enable --now mulletd"
fi
