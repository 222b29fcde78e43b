"""End to end: an account with an ``[oauth2]`` table logs in to the REAL Dovecot (MAIL_OAUTH=1)
with access tokens that the daemon gets itself, by the refresh grant, from a REAL HTTPS token
endpoint on loopback (tests/tokenendpoint.py) minting JWTs with the test Dovecot's key.

Covered: the login (both mechanisms) with the rotated refresh token written back; a token past
its ``expires_in`` refreshed before the next login; a token the server refuses though it had
time left (revoked, or the clocks disagree) replaced at once, without backoff; a revoked refresh
token (``invalid_grant``) as one clear status line and the long backoff; ``mailsocketd-check``
for such an account.  No token or secret in any status line or log event.
"""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from checkrig import DovecotLog
from logrig import global_log_events
from mailrig import account_toml, parsed_account, toml_value
from test_checker import Watching, error_of, eventually, state_of
from tokenendpoint import TokenEndpoint
from tokens import mint
from twisted.internet import reactor, threads
from twisted.internet.task import deferLater
from twisted.logger import formatEvent

REPO = Path(__file__).resolve().parents[2]
CLIENT_SECRET = "cs-End-To-End-Secret"  # noqa: S105 (a test value)

pytestmark = pytest.mark.timeout(90)


@pytest_twisted.async_yield_fixture
async def endpoint(mailserver_oauth, tmp_path):
    """The endpoint mints tokens Dovecot accepts for their lifetime (``ttl``)."""
    ep = await TokenEndpoint.start(
        tmp_path, lambda user, ttl: mint(mailserver_oauth, user, ttl=ttl),
        client_secret=CLIENT_SECRET, rotate=True)
    yield ep
    await ep.stop()


def oauth2_table(endpoint, tmp_path):
    refresh, secret = endpoint.write_client_files(tmp_path)
    return {"token_url": endpoint.token_url, "client_id": endpoint.client_id,
            "client_secret_file": str(secret), "refresh_token_file": str(refresh),
            "scope": "mail", "ca_file": str(endpoint.ca_file), "timeout": 5}


def account(mailserver, endpoint, tmp_path, auth="oauthbearer"):
    return parsed_account("work", server=f"tls:127.0.0.1:{mailserver.imaps_port}",
                          user="alice", ca_file=str(mailserver.ca_file), auth=auth,
                          oauth2=oauth2_table(endpoint, tmp_path))


def leaked(endpoint, texts):
    secrets = [CLIENT_SECRET, *endpoint.refresh_tokens, *endpoint.issued,
               *(t.rsplit(".", 1)[1][:16] for t in endpoint.issued)]
    return [t for t in texts if any(s in t for s in secrets)]


async def kick(mailserver):
    """Drop alice's IMAP connections (the watcher reconnects)."""
    await threads.deferToThread(mailserver._doveadm, "kick", "alice")


@pytest.mark.parametrize("auth", ["xoauth2", "oauthbearer"])
@pytest_twisted.ensureDeferred
async def test_an_oauth2_account_logs_in_with_tokens_from_the_endpoint(
        mailserver_oauth, endpoint, tmp_path, auth):
    dovecot = DovecotLog(mailserver_oauth.dovecot_log)
    work = account(mailserver_oauth, endpoint, tmp_path, auth)
    assert work.oauth2 is not None
    first_refresh_token = Path(work.oauth2.refresh_token_file).read_text().strip()
    with global_log_events() as events:
        async with Watching(work) as w:
            await eventually(lambda: w.state.mailboxes["INBOX"].counts is not None,
                             what="the first check")
            assert error_of(w) == "-"
            lines = w.state.status_lines()
    assert len(endpoint.received("token")) == 1
    assert "user=<alice>" in dovecot.wait_for(f"method={auth.upper()}")
    # the rotated refresh token is in the file (0600), and the old one is gone
    saved = Path(work.oauth2.refresh_token_file)
    assert saved.read_text().strip() in endpoint.refresh_tokens
    assert first_refresh_token not in endpoint.refresh_tokens
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    names = [e.get("event") for e in events]
    assert "oauth2_token" in names and "oauth2_refresh_token_saved" in names
    texts = lines + [formatEvent(e) for e in events] + [repr(e) for e in events]
    assert leaked(endpoint, texts) == []


@pytest_twisted.ensureDeferred
async def test_an_expired_token_is_refreshed_before_the_next_login(
        mailserver_oauth, endpoint, tmp_path):
    endpoint.ttl = 4  # refreshed 1 s before it expires
    dovecot = DovecotLog(mailserver_oauth.dovecot_log)
    async with Watching(account(mailserver_oauth, endpoint, tmp_path)) as w:
        await eventually(lambda: state_of(w) == "idling", what="idling")
        await deferLater(reactor, 4.5)  # the token has expired
        await kick(mailserver_oauth)
        await eventually(lambda: len(endpoint.received("token")) == 2, timeout=15,
                         what="a second refresh")
        await eventually(lambda: state_of(w) == "idling", timeout=15, what="idling again")
        assert w.backoff.auth_failures == 0 and error_of(w) == "-"
    log = dovecot.wait_for("method=OAUTHBEARER")
    assert "Token has expired" not in log  # the expired token was never sent


@pytest_twisted.ensureDeferred
async def test_a_token_refused_before_its_time_is_replaced_without_backoff(
        mailserver_oauth, endpoint, tmp_path):
    # the endpoint says an hour, the token lives 2 s: like a token revoked early
    endpoint.minter = lambda user, ttl: mint(mailserver_oauth, user, ttl=2)
    dovecot = DovecotLog(mailserver_oauth.dovecot_log)
    with global_log_events() as events:
        async with Watching(account(mailserver_oauth, endpoint, tmp_path)) as w:
            await eventually(lambda: state_of(w) == "idling", what="idling")
            await deferLater(reactor, 3.0)
            await kick(mailserver_oauth)
            await eventually(lambda: len(endpoint.received("token")) == 2, timeout=15,
                             what="a refresh after the refusal")
            await eventually(lambda: state_of(w) == "idling", timeout=15, what="idling again")
            assert w.backoff.auth_failures == 0 and error_of(w) == "-"
    assert "Token has expired" in dovecot.wait_for("Token has expired")
    assert [e.get("event") for e in events].count("token_refused") == 1


@pytest_twisted.ensureDeferred
async def test_a_revoked_refresh_token_is_one_clear_line_and_the_long_backoff(
        mailserver_oauth, endpoint, tmp_path):
    work = account(mailserver_oauth, endpoint, tmp_path)
    endpoint.refresh_tokens.clear()  # revoked
    async with Watching(work) as w:
        await eventually(lambda: state_of(w) == "auth-failed", what="auth-failed")
        assert error_of(w) == ("token endpoint 127.0.0.1: invalid_grant (Token has been "
                               "expired or revoked.); get a new refresh token with "
                               "mailsocketd-oauth2")
        assert w.backoff.auth_failures == 1
    assert len(endpoint.received("token")) == 1


@pytest_twisted.ensureDeferred
async def test_mailsocketd_check_for_an_oauth2_account(mailserver_oauth, endpoint, tmp_path):
    table = oauth2_table(endpoint, tmp_path)
    config = tmp_path / "m.toml"
    config.write_text(account_toml("work", server=f"tls:127.0.0.1:{mailserver_oauth.imaps_port}",
                                   user="alice", ca_file=str(mailserver_oauth.ca_file),
                                   auth="xoauth2")
                      + "[accounts.work.oauth2]\n"
                      + "".join(f"{k} = {toml_value(v)}\n" for k, v in table.items()))

    def check():
        return subprocess.run([sys.executable, "-m", "mailsocketd.check_command", "--config",
                               str(config), "--account", "work"], capture_output=True,
                              text=True, timeout=30, cwd=REPO, stdin=subprocess.DEVNULL,
                              check=False)

    r = await threads.deferToThread(check)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.startswith("IMAP OK - work INBOX: ")
    endpoint.refresh_tokens.clear()
    r = await threads.deferToThread(check)
    assert r.returncode == 3  # UNKNOWN: the check could not get as far as the server
    assert r.stdout.startswith("IMAP UNKNOWN - ")
    assert "token endpoint 127.0.0.1: invalid_grant (Token has been expired or revoked.)" \
        in r.stdout
    assert leaked(endpoint, [r.stdout, r.stderr]) == []
