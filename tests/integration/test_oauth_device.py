"""Enrolment: ``mailsocketd-oauth2`` (the device authorization grant, RFC 8628) against a REAL
HTTPS token endpoint on loopback (tests/tokenendpoint.py) served by this test's reactor.

The command runs as a separate process (``python -m mailsocketd.oauth_command``, this
checkout's code), as an operator runs it; its output, exit status and the file it writes are
checked, and what it sent is read from the endpoint's record.
"""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_twisted
from mailrig import account_toml, global_reactor, toml_value
from tokenendpoint import DEVICE_CODE_GRANT, TokenEndpoint
from twisted.internet import threads

from mailsocketd.mail.oauth.config import OAuth2Config
from mailsocketd.mail.oauth.device import DeviceGrantError, device_grant
from mailsocketd.mail.oauth.messages import DeviceAuthorization

REPO = Path(__file__).resolve().parents[2]
CLIENT_SECRET = "cs-Device-Client-Secret"  # noqa: S105 (a test value)

pytestmark = pytest.mark.timeout(60)


@pytest_twisted.async_yield_fixture
async def endpoint(tmp_path):
    ep = await TokenEndpoint.start(tmp_path, lambda user, ttl: f"at-{user}",
                                   client_secret=CLIENT_SECRET, interval=1)
    yield ep
    await ep.stop()


@pytest.fixture
def config(tmp_path, endpoint):
    """A configuration with account work ([oauth2]) and account plain (a password)."""
    secret = tmp_path / "client-secret"
    secret.write_text(CLIENT_SECRET + "\n")
    secret.chmod(0o600)
    password = tmp_path / "pw"
    password.write_text("pw\n")
    password.chmod(0o600)
    oauth2 = {"token_url": endpoint.token_url, "device_authorization_url": endpoint.device_url,
              "client_id": endpoint.client_id, "client_secret_file": str(secret),
              "refresh_token_file": str(tmp_path / "tokens" / "work.refresh-token"),
              "scope": "mail offline_access", "ca_file": str(endpoint.ca_file)}
    (tmp_path / "tokens").mkdir()
    path = tmp_path / "m.toml"
    path.write_text(
        account_toml("work", server="tls:127.0.0.1:993", user="alice@example.test",
                     auth="xoauth2")
        + "[accounts.work.oauth2]\n"
        + "".join(f"{k} = {toml_value(v)}\n" for k, v in oauth2.items())
        + account_toml("plain", server="tls:127.0.0.1:993", user="alice",
                       password_file=str(password)))
    return path


def enrol(config, account="work"):
    """Run the command in a thread (the endpoint keeps serving in the reactor)."""
    def run():
        return subprocess.run([sys.executable, "-m", "mailsocketd.oauth_command", "--config",
                               str(config), "--account", account], capture_output=True,
                              text=True, timeout=40, cwd=REPO, stdin=subprocess.DEVNULL,
                              check=False)
    return threads.deferToThread(run)


def token_file(tmp_path):
    return tmp_path / "tokens" / "work.refresh-token"


@pytest_twisted.ensureDeferred
async def test_enrolment_prints_the_code_polls_and_writes_the_refresh_token(
        endpoint, config, tmp_path):
    endpoint.script_token[:] = ["pending", "pending", "approve"]
    r = await enrol(config)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    lines = r.stdout.splitlines()
    assert lines[0] == "To let mailsocketd read the mail of account work (alice@example.test):"
    assert lines[1] == f"  open   https://127.0.0.1:{endpoint.port}/activate"
    assert lines[2] == "  enter  WDJB-MJHT"
    assert lines[3] == "Waiting for the approval (the code is valid for 10 minutes)..."
    assert lines[4] == (f"mailsocketd-oauth2: account work: refresh token written to "
                        f"{token_file(tmp_path)}")
    # what was sent: the device request, then three polls at least `interval` apart
    device = endpoint.received("device")
    assert [d.form for d in device] == [{"client_id": endpoint.client_id,
                                         "client_secret": CLIENT_SECRET,
                                         "scope": "mail offline_access"}]
    polls = endpoint.received("token")
    assert len(polls) == 3
    assert all(p.form["grant_type"] == DEVICE_CODE_GRANT for p in polls)
    assert all(b.at - a.at >= 0.95 for a, b in zip([device[0], *polls], polls, strict=False))
    # the file: 0600, the refresh token the endpoint handed out, never printed
    written = token_file(tmp_path)
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    token = written.read_text().strip()
    assert token in endpoint.refresh_tokens
    assert token not in r.stdout and CLIENT_SECRET not in r.stdout


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(("step", "text"), [
    ("expired", "the code expired before it was approved; run the command again"),
    ("denied", "access was denied at the verification page"),
    ((400, {"error": "invalid_client", "error_description": "no such client"}),
     "token endpoint 127.0.0.1: invalid_client (no such client)"),
])
async def test_a_failed_grant_is_one_line_and_exit_1(endpoint, config, tmp_path, step, text):
    endpoint.script_token[:] = ["pending", step]
    r = await enrol(config)
    assert r.returncode == 1
    assert r.stderr == f"mailsocketd-oauth2: account work: {text}\n"
    assert not token_file(tmp_path).exists()


@pytest_twisted.ensureDeferred
async def test_slow_down_adds_five_seconds_to_the_interval(endpoint, config, tmp_path):
    endpoint.script_token[:] = ["slow_down", "approve"]
    oauth2 = OAuth2Config(token_url=endpoint.token_url, client_id=endpoint.client_id,
                          refresh_token_file=str(token_file(tmp_path)),
                          client_secret_file=str(tmp_path / "client-secret"),
                          device_authorization_url=endpoint.device_url,
                          ca_file=str(endpoint.ca_file))
    shown: list[DeviceAuthorization] = []
    token = await device_grant(oauth2, global_reactor(), shown.append, environ={})
    assert token.reveal().decode() in endpoint.refresh_tokens
    assert [s.user_code for s in shown] == ["WDJB-MJHT"]
    first, second = endpoint.received("token")
    assert second.at - first.at >= 5.9  # interval 1 + 5


@pytest_twisted.ensureDeferred
async def test_polling_stops_when_the_code_expires(endpoint, config, tmp_path):
    endpoint.device_expires_in = 3  # and the user never approves
    oauth2 = OAuth2Config(token_url=endpoint.token_url, client_id=endpoint.client_id,
                          refresh_token_file=str(token_file(tmp_path)),
                          client_secret_file=str(tmp_path / "client-secret"),
                          device_authorization_url=endpoint.device_url,
                          ca_file=str(endpoint.ca_file))
    started = time.monotonic()
    with pytest.raises(DeviceGrantError, match="the code expired before it was approved"):
        await device_grant(oauth2, global_reactor(), lambda a: None, environ={})
    assert time.monotonic() - started < 4
    assert 1 <= len(endpoint.received("token")) <= 3
    assert not token_file(tmp_path).exists()


@pytest_twisted.ensureDeferred
async def test_configuration_errors_exit_2_naming_the_key(endpoint, config, tmp_path):
    r = await enrol(config, account="plain")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.startswith("mailsocketd-oauth2: accounts.plain.oauth2: is missing")
    r = await enrol(config, account="nobody")
    assert r.returncode == 2
    assert r.stderr == ("mailsocketd-oauth2: accounts: no account named 'nobody' "
                        "(configured: work, plain)\n")
    text = config.read_text().replace(str(tmp_path / "tokens"), str(tmp_path / "missing"))
    config.write_text(text)
    r = await enrol(config)
    assert r.returncode == 2
    assert r.stderr == ("mailsocketd-oauth2: accounts.work.oauth2.refresh_token_file: cannot "
                        f"write into {tmp_path / 'missing'} (missing, or not writable by this "
                        "user)\n")
    assert endpoint.requests == []  # refused before anyone is sent to a browser
