"""scripts/system-packages.sh with stand-ins for apt-get, dpkg-query and systemctl on PATH.

The daemons among the test packages are enabled at boot by Debian when installed, which after
the next reboot would leave a Dovecot taking system logins on :143 and a Prometheus on :9090,
on every interface, on the machine of whoever ran the README's test command.  The script
disables the units of the packages it installed, and only those.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "system-packages.sh"
MISSING = ["dovecot-core", "postfix", "prometheus"]  # the rest counts as installed before

DPKG_QUERY = """#!/bin/bash
# a stand-in: the packages of MISSING are not installed until the stand-in apt-get has run
case "$*" in *'${Version}'*) printf 1; exit 0 ;; esac
shift 2  # -W -f=FORMAT
for p in "$@"; do
    case " $MISSING " in
        *" $p "*) if [ -e "$STATE/installed" ]; then echo "$p ii "; else echo "$p un "; fi ;;
        *) echo "$p ii " ;;
    esac
done
"""
APT_GET = """#!/bin/bash
echo "apt-get $*" >>"$STATE/calls"
case "$*" in *" install "*) touch "$STATE/installed" ;; esac
"""
SYSTEMCTL = """#!/bin/bash
echo "systemctl $*" >>"$STATE/calls"
"""


@pytest.fixture
def stand_ins(tmp_path: Path) -> dict[str, str]:
    if os.geteuid() != 0:  # as every integration fixture: a failure, never a skip
        pytest.fail("system-packages.sh runs only as root: run the tests as root "
                    "(bash scripts/test.sh)", pytrace=False)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("dpkg-query", DPKG_QUERY), ("apt-get", APT_GET),
                       ("systemctl", SYSTEMCTL),
                       ("debconf-set-selections", "#!/bin/sh\ncat >/dev/null\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    cache = tmp_path / "cache"
    for unpacked in ("cyrus-imapd", "courier-imap"):  # already unpacked for version 1
        (cache / unpacked).mkdir(parents=True)
        (cache / unpacked / ".sibling-version").write_text("1")
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STATE": str(tmp_path),
            "MISSING": " ".join(MISSING), "TEST_PKG_CACHE": str(cache)}


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def test_the_daemons_it_installs_are_disabled_at_boot_and_no_others(stand_ins: dict[str, str]):
    state = Path(stand_ins["STATE"])
    done = run(stand_ins)
    assert done.returncode == 0, done.stderr
    calls = (state / "calls").read_text().splitlines()
    assert [c for c in calls if c.startswith("systemctl")] == [
        "systemctl disable --quiet dovecot.service", "systemctl disable --quiet dovecot.socket",
        "systemctl disable --quiet postfix.service",
        "systemctl disable --quiet prometheus.service"]  # not Cyrus', Courier's, saslauthd
    assert (state / "cache" / "disabled-at-boot").read_text().split() == [
        "dovecot.service", "dovecot.socket", "postfix.service", "prometheus.service"]
    assert "dovecot-core: disabled at boot: dovecot.service dovecot.socket" in done.stdout

    (state / "calls").unlink()
    again = run(stand_ins)  # everything is there now: nothing installed, nothing touched
    assert again.returncode == 0, again.stderr
    assert not (state / "calls").exists()
    assert "all packages installed" in again.stdout
