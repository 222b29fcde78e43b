"""Issue 12 item 8, the smaller things operators expect, against the installed daemon (and,
for the log, the REAL Dovecot and Postfix): ``help`` lists the mail commands only with
``[imap]``; a closing connection no longer counts against its address; no ``Starting
factory``/``Scheduling retry`` lines per send and retry; one log line per login; the wheel
ships LICENSE; ``scripts/run.sh`` reinstalls only when the checkout changed."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from daemon import free_port, read_line, running_daemon, start_daemon, wait_for_port
from lineclient import LineClient
from mailrig import account_toml, write_password

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
NOISE = ("Starting factory", "Stopping factory", "Scheduling retry")


def help_lines(daemon):
    return daemon.exchange(b"help\r\nquit\r\n").decode().split("\r\n")


def test_help_lists_the_mail_commands_only_with_imap(tmp_path):
    with running_daemon(tmp_path) as d:
        text = help_lines(d)
        assert text[:6] == [
            "ok 4 commands",
            "time            the local date and time, as YYYY/MM/DD HH:MM:SS",
            "quit            answer 'quit' and close the connection",
            "help [COMMAND]  the commands, or one command's syntax and arguments",
            "status          version, uptime, connections, mail",
            "."]
        # the mail commands still answer, with why they cannot serve
        assert d.ask(b"login alice pw") == (b"error: mail is not configured on this server "
                                            b"(no [imap] in its configuration)")
    with running_daemon(tmp_path, config_toml='[imap]\nserver = "tcp:127.0.0.1:1"\n') as d:
        text = help_lines(d)
        assert text[0] == "ok 13 commands"
        assert "login USER PASSWORD     log in with your mail user and password" in text


def test_a_closing_connection_no_longer_counts_against_its_address(tmp_path):
    """The server's half of a closed connection lingers (up to close_grace) for the client's
    EOF; its address's count was released only then, so a client that reconnected at once was
    refused 'too many connections from your address'."""
    config = "[line]\nmax_connections_per_peer = 1\nclose_grace = 20\n"
    with running_daemon(tmp_path, config_toml=config) as d:
        deadline = time.monotonic() + 10
        while True:  # until the start-up probe's connection is gone
            first = d.connect()
            first.sendall(b"quit\r\n")
            reply = read_line(first)
            if reply == b"quit" or time.monotonic() > deadline:
                break
            first.close()
            time.sleep(0.05)
        assert reply == b"quit"
        with first:
            assert first.recv(100) == b""  # the server has shut its side; ours stays open
            with d.connect() as second:
                second.sendall(b"time\r\n")
                assert re.fullmatch(rb"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d",
                                    read_line(second))


def test_no_factory_or_retry_noise_and_one_line_per_login(mailserver, tmp_path):
    """A send, a login, and an account retrying against a refused port: none logs Twisted's
    'Starting factory'/'Stopping factory'/'Scheduling retry' lines; the login is logged
    once (it was twice: by the line service and by the user's IMAP session)."""
    refused = socket.socket()  # bound, not listening: every attempt is refused
    refused.bind(("127.0.0.1", 0))
    config = (f'[imap]\nserver = "tcp:127.0.0.1:{mailserver.imap_port}"\n'
              f'ca_file = "{mailserver.ca_file}"\n'
              f'[smtp]\nserver = "tcp:127.0.0.1:{mailserver.smtp_port}"\n'
              f'ca_file = "{mailserver.ca_file}"\nfrom_domain = "{mailserver.domain}"\n'
              + account_toml("down", server=f"tcp:127.0.0.1:{refused.getsockname()[1]}",
                             user="alice", password_file=write_password(tmp_path)))
    d = start_daemon(tmp_path, config_toml=config)
    try:
        with LineClient.connect(d.port) as c:
            assert c.ask(f"login alice {mailserver.users['alice']}") == "ok logged in as alice"
            assert c.ask("send bob@example.test").startswith("ok ready")
            for line in ("Subject: noise", "", "no noise, please", "."):
                c.send(line)
            assert c.line().startswith("ok sent <")
            assert c.ask("logout").startswith("ok")
        log = d.wait_log(r"down: .*next attempt in(.|\n)*down: .*next attempt in", timeout=30)
    finally:
        d.stop()
        refused.close()
    noise = [line for line in log.splitlines() if any(n in line for n in NOISE)]
    assert noise == []
    assert len(re.findall(r"alice logged in", log)) == 1, log
    assert "logged in to the mail server" not in log


def test_the_wheel_ships_the_license(tmp_path):
    """pyproject says MIT; the LICENSE file now exists and is in the built wheel."""
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                             "--disable-pip-version-check", "-w", str(tmp_path), str(REPO)],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("mailsocketd-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        (license_name,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        text = z.read(license_name).decode()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert text.startswith("MIT License\n") and "WITHOUT WARRANTY OF ANY KIND" in text
    assert "License-Expression: MIT" in metadata and "License-File: LICENSE" in metadata
    assert text == (REPO / "LICENSE").read_text()


def run_sh(checkout, port, timeout=240):
    """Start ``bash scripts/run.sh`` in ``checkout`` until it listens; stop it; return what
    it wrote on stderr and how long it took to listen."""
    started = time.monotonic()
    proc = subprocess.Popen(["bash", "scripts/run.sh", "--listen",
                             f"tcp:{port}:interface=127.0.0.1"], cwd=checkout,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        wait_for_port("127.0.0.1", port, proc, timeout)
        took = time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGTERM)  # run.sh execs twistd: this is the daemon, ours
        err = proc.communicate(timeout=30)[1].decode()
    return err, took


def test_run_sh_reinstalls_only_when_the_checkout_changed(tmp_path):
    """It ran pip install . at every start (about 4 s); now only when the files changed."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, checkout / name)
    for name in ("mailsocketd", "twisted", "scripts"):
        shutil.copytree(REPO / name, checkout / name,
                        ignore=shutil.ignore_patterns("__pycache__", "dropin.cache"))
    installing = "run.sh: installing mailsocketd into .venv (the checkout changed)"
    err, first = run_sh(checkout, free_port())
    assert installing in err, err
    err, second = run_sh(checkout, free_port())
    assert installing not in err, err
    assert second < 3.0 < first or second < first / 2, (first, second)
    with (checkout / "mailsocketd" / "__init__.py").open("a") as f:
        f.write("# changed\n")
    err, _ = run_sh(checkout, free_port())
    assert installing in err, err
    assert os.path.exists(checkout / ".venv" / ".mailsocketd-installed")
