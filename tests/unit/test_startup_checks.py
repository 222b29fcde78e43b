"""Start-up checks and the log's disk use (issue 11 item 16 and 18): a CA file that cannot be
used stops twistd with a line naming the key, and ``--logfile`` keeps ``[log] keep_files`` old
files, no more."""

from __future__ import annotations

import signal
from typing import Any, cast

import pytest
from checkrig import make_unrelated_ca

from mailsocketd import logs
from mailsocketd.tap import Options


def options(tmp_path: Any, toml: str) -> Options:
    path = tmp_path / "m.toml"
    path.write_text(toml)
    parsed = Options()
    parsed.parseOptions(["--config", str(path)])
    return parsed


@pytest.mark.parametrize(("table", "key"), [
    ('[imap]\nserver = "tls:imap.example.test"\n', "imap.ca_file"),
    ('[smtp]\nserver = "tls:smtp.example.test"\n', "smtp.ca_file"),
    ('[accounts.work]\nserver = "tls:imap.example.test"\nuser = "u"\npassword_env = "PW"\n',
     "accounts.work.ca_file"),
    ('[accounts.work]\nserver = "tls:imap.example.test"\nuser = "u"\nauth = "xoauth2"\n'
     '[accounts.work.oauth2]\ntoken_url = "https://idp.example.test/token"\n'
     'client_id = "c"\nrefresh_token_file = "{RT}"\n',
     "accounts.work.oauth2.ca_file"),
])
def test_a_ca_file_that_cannot_be_used_stops_start_up(tmp_path, monkeypatch, table, key):
    monkeypatch.setenv("PW", "secret")
    refresh_token = tmp_path / "rt"
    refresh_token.write_text("a-refresh-token\n")
    refresh_token.chmod(0o600)
    table = table.replace("{RT}", str(refresh_token))
    empty, garbage = tmp_path / "empty.pem", tmp_path / "garbage.pem"
    empty.write_bytes(b"")
    garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
    for path, problem in ((tmp_path / "missing.pem", "cannot read: No such file or directory"),
                          (empty, "no certificate in it"),
                          (garbage, "not a PEM certificate file")):
        with pytest.raises(SystemExit) as info:
            options(tmp_path, f'{table}ca_file = "{path}"\n')
        assert info.value.code == f"twistd mailsocketd: {key}: {path}: {problem}"


def test_a_good_ca_file_starts(tmp_path):
    ca = make_unrelated_ca(tmp_path / "ca.pem")
    parsed = options(tmp_path, f'[imap]\nserver = "tls:imap.example.test"\nca_file = "{ca}"\n')
    assert parsed.config.imap is not None and parsed.config.imap.ca_file == str(ca)


class Reactor:
    running = False

    def callFromThread(self, f: Any, *args: Any, **kw: Any) -> None:
        f(*args, **kw)


@pytest.mark.parametrize("keep", [1, 3])
def test_old_log_files_past_keep_files_are_deleted(tmp_path, keep):
    before = signal.getsignal(signal.SIGUSR1)
    path = tmp_path / "m.log"
    logs.configure_target(str(path), nodaemon=False, keep_files=keep)
    try:
        out: Any = logs._open_target(Reactor())  # type: ignore[arg-type]
        for n in range(8):
            out.write(f"line {n}\n")
            out.rotate()
        out.write("current\n")
        out.close()
    finally:
        signal.signal(signal.SIGUSR1, before)
        logs.configure_target(None, nodaemon=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["m.log", *(f"m.log.{i}" for i in range(1, keep + 1))]
    assert path.read_text() == "current\n"
    assert (tmp_path / "m.log.1").read_text() == "line 7\n"  # the newest old one


def test_keep_files_reaches_the_log_target(tmp_path):
    parent = {"logger": None, "syslog": False, "logfile": str(tmp_path / "m.log"),
              "nodaemon": True}
    path = tmp_path / "m.toml"
    path.write_text("[log]\nkeep_files = 4\n")
    parsed = Options()
    parsed.parent = cast(Any, parent)  # twistd's own Options, a dict as far as we read it
    try:
        parsed.parseOptions(["--config", str(path)])
        assert logs._target["keep_files"] == 4 and parent["logger"] == "mailsocketd.logs.text_observer"
    finally:
        logs.configure_target(None, nodaemon=True)
