"""Enrolment: ``mailsocketd-oauth2`` (the device authorization grant, RFC 8628, and with
``--browser`` the authorization code grant with PKCE and a loopback redirect) against a REAL
HTTPS token endpoint on loopback (tests/tokenendpoint.py) served by this test's reactor.

The command runs as a separate process (``python -m mailsocketd.oauth_command``, this
checkout's code), as an operator runs it; its output, exit status and the file it writes are
checked, and what it sent is read from the endpoint's record.
"""

from __future__ import annotations

import re
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import pytest_twisted
from mailrig import account_toml, global_reactor, toml_value
from tokenendpoint import DEVICE_CODE_GRANT, TokenEndpoint
from twisted.internet import threads

from mailsocketd.mail.oauth.browser import browser_grant
from mailsocketd.mail.oauth.config import OAuth2Config
from mailsocketd.mail.oauth.device import device_grant
from mailsocketd.mail.oauth.messages import DeviceAuthorization, GrantError

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
              "authorization_url": f"https://127.0.0.1:{endpoint.port}/authorize",
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


def device_config(endpoint, tmp_path):
    """Account work's [oauth2] for the device grant against the endpoint (the client secret
    file is the config fixture's)."""
    return OAuth2Config(token_url=endpoint.token_url, client_id=endpoint.client_id,
                        refresh_token_file=str(token_file(tmp_path)),
                        client_secret_file=str(tmp_path / "client-secret"),
                        device_authorization_url=endpoint.device_url,
                        ca_file=str(endpoint.ca_file))


def browser_config(endpoint, tmp_path):
    """Account work's [oauth2] for the browser grant against the endpoint."""
    return OAuth2Config(token_url=endpoint.token_url, client_id=endpoint.client_id,
                        refresh_token_file=str(token_file(tmp_path)),
                        authorization_url=f"https://127.0.0.1:{endpoint.port}/authorize",
                        ca_file=str(endpoint.ca_file))


@pytest_twisted.ensureDeferred
async def test_slow_down_adds_five_seconds_to_the_interval(endpoint, config, tmp_path):
    endpoint.script_token[:] = ["slow_down", "approve"]
    oauth2 = device_config(endpoint, tmp_path)
    shown: list[DeviceAuthorization] = []
    token = await device_grant(oauth2, global_reactor(), shown.append, environ={})
    assert token.reveal().decode() in endpoint.refresh_tokens
    assert [s.user_code for s in shown] == ["WDJB-MJHT"]
    first, second = endpoint.received("token")
    assert second.at - first.at >= 5.9  # interval 1 + 5


@pytest_twisted.ensureDeferred
async def test_polling_stops_when_the_code_expires(endpoint, config, tmp_path):
    endpoint.device_expires_in = 3  # and the user never approves
    oauth2 = device_config(endpoint, tmp_path)
    started = time.monotonic()
    with pytest.raises(GrantError, match="the code expired before it was approved"):
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


# -- --browser: the authorization code grant with PKCE and a loopback redirect ----------------

def browse(config, ca_file, *, bad_state_first=False):
    """Run ``mailsocketd-oauth2 --browser`` and be its user's browser: open the URL it prints
    (the endpoint approves and redirects to the command's port).  Runs in a thread."""
    with subprocess.Popen([sys.executable, "-m", "mailsocketd.oauth_command", "--config",
                           str(config), "--account", "work", "--browser"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=REPO, stdin=subprocess.DEVNULL) as proc:
        try:
            return _be_the_browser(proc, ca_file, bad_state_first)
        finally:
            if proc.poll() is None:
                proc.kill()


def _be_the_browser(proc, ca_file, bad_state_first):
    assert proc.stdout is not None and proc.stderr is not None
    shown = [proc.stdout.readline() for _ in range(4)]
    url = shown[1].strip()
    found = re.search(r"http://127\.0\.0\.1:(\d+)/", shown[2])
    assert found is not None, shown
    port = int(found.group(1))
    bad = None
    if bad_state_first:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/?code=stolen&state=guess",
                                   timeout=10).close()
        except urllib.error.HTTPError as e:
            bad = e.code
            e.close()
    context = ssl.create_default_context(cafile=str(ca_file))
    assert url.startswith("https://127.0.0.1:"), url
    with urllib.request.urlopen(url, context=context, timeout=10) as page:  # noqa: S310
        text = page.read().decode()
    rc = proc.wait(timeout=30)
    return rc, shown + proc.stdout.readlines(), proc.stderr.read(), url, text, bad


@pytest_twisted.ensureDeferred
async def test_browser_sign_in_writes_the_refresh_token(endpoint, config, tmp_path):
    rc, out, err, url, page, bad = await threads.deferToThread(
        browse, config, endpoint.ca_file, bad_state_first=True)
    assert (rc, err) == (0, ""), err
    assert bad == 400  # a request without the right state is refused, and the wait goes on
    assert page == "mailsocketd: signed in. You may close this window.\n"
    assert out[0] == ("To let mailsocketd read the mail of account work (alice@example.test), "
                      "open this URL in a browser on this machine and sign in:\n")
    assert out[3] == "Waiting for the sign-in (for up to 10 minutes)...\n"
    assert out[4] == ("mailsocketd-oauth2: account work: refresh token written to "
                      f"{token_file(tmp_path)}\n")
    query = dict(parse_qsl(urlsplit(url).query))
    assert url.startswith(f"https://127.0.0.1:{endpoint.port}/authorize?")
    assert {k: query[k] for k in ("response_type", "client_id", "scope",
                                  "code_challenge_method", "access_type")} == {
        "response_type": "code", "client_id": endpoint.client_id, "scope": "mail offline_access",
        "code_challenge_method": "S256", "access_type": "offline"}
    # the endpoint checked the PKCE verifier against the challenge, and the redirect URI
    [exchange] = endpoint.received("token")
    assert exchange.form["grant_type"] == "authorization_code"
    assert exchange.form["redirect_uri"] == query["redirect_uri"]
    written = token_file(tmp_path)
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    token = written.read_text().strip()
    assert token in endpoint.refresh_tokens
    assert all(token not in line for line in out) and CLIENT_SECRET not in "".join(out)


@pytest_twisted.ensureDeferred
async def test_a_refused_browser_sign_in_is_one_line_and_exit_1(endpoint, config, tmp_path):
    endpoint.authorize_error = "access_denied"
    rc, _, err, _, page, _ = await threads.deferToThread(browse, config, endpoint.ca_file)
    assert rc == 1
    assert page == "mailsocketd: the sign-in failed; the terminal says why.\n"
    assert err == "mailsocketd-oauth2: account work: the sign-in failed: access_denied\n"
    assert not token_file(tmp_path).exists() and endpoint.received("token") == []


@pytest_twisted.ensureDeferred
async def test_the_browser_wait_is_bounded_and_the_port_closed(endpoint, tmp_path):
    oauth2 = browser_config(endpoint, tmp_path)
    ports: list[int] = []
    with pytest.raises(GrantError, match=r"^no sign-in within 0\.02 minutes; run the command"):
        await browser_grant(oauth2, global_reactor(), lambda url, port: ports.append(port),
                            wait=1.2, environ={})
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", ports[0]), timeout=2).close()


@pytest_twisted.ensureDeferred
async def test_a_port_in_use_is_one_line(endpoint, tmp_path):
    oauth2 = browser_config(endpoint, tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(GrantError) as info:
            await browser_grant(oauth2, global_reactor(), lambda url, port: None, port=port,
                                environ={})
    assert str(info.value) == f"cannot listen on 127.0.0.1 port {port}: Address already in use"


# The enrolment with SIGINT handled as in a terminal, whatever the test runner's own
# disposition: a background job of a non-interactive shell (as some CI runners start jobs)
# ignores SIGINT, an ignored signal stays ignored across exec, and Python then leaves it
# ignored, so the Ctrl-C below would never arrive.
ENROL_WITH_CTRL_C = ("import runpy, signal; signal.signal(signal.SIGINT, "
                     "signal.default_int_handler); "
                     "runpy.run_module('mailsocketd.oauth_command', run_name='__main__')")


def interrupt_enrolment(config):
    """Start the device grant, wait for its prompt, then press Ctrl-C (SIGINT)."""
    with subprocess.Popen([sys.executable, "-c", ENROL_WITH_CTRL_C, "--config",
                           str(config), "--account", "work"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=REPO,
                          stdin=subprocess.DEVNULL) as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            shown = [proc.stdout.readline() for _ in range(4)]
            proc.send_signal(signal.SIGINT)
            return proc.wait(timeout=20), shown, proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()


@pytest_twisted.ensureDeferred
async def test_an_interrupted_enrolment_says_so_and_writes_nothing(endpoint, config, tmp_path):
    rc, shown, err = await threads.deferToThread(interrupt_enrolment, config)
    assert shown[3].startswith("Waiting for the approval")
    assert rc == 1
    assert err == "mailsocketd-oauth2: account work: stopped before a refresh token was written\n"
    assert not token_file(tmp_path).exists()
