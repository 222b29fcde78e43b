"""Accounts that log in with OAuth2 access tokens, against the REAL Dovecot (MAIL_OAUTH=1).

XOAUTH2 and OAUTHBEARER over STARTTLS and implicit TLS, tokens from a file and from a
command; an expired token followed by a fresh one (recovered on the same connection, no
backoff); a token that stays refused (a clear error, the long backoff); another user's token;
no token ever sent without TLS; the token in no status line, log event or error; and
``mailsocketd-check --account`` for such accounts.  Tokens are minted with the test server's
own key (``tokens.py``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from checkrig import DovecotLog
from daemon import running_daemon
from logrig import global_log_events
from mailrig import account_toml, parsed_account, write_password
from test_checker import Watching, error_of, eventually, state_of
from test_mail_daemon import wait_for_status
from tokens import mint
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import formatEvent

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(60)

# Prints the next line of DIR/tokens at each run (the last one again once all were given),
# as an external token helper prints its current token.
HELPER_SCRIPT = """
import pathlib, sys
d = pathlib.Path(sys.argv[1])
tokens = (d / "tokens").read_text().split()
n = int((d / "count").read_text()) if (d / "count").exists() else 0
(d / "count").write_text(str(n + 1))
print(tokens[min(n, len(tokens) - 1)])
"""


def token_command(tmp_path: Path, *tokens: str) -> list[str]:
    """A password_command giving ``tokens`` one after the other."""
    (tmp_path / "tokens").write_text("\n".join(tokens) + "\n")
    (tmp_path / "tokens").chmod(0o600)
    (tmp_path / "helper.py").write_text(HELPER_SCRIPT)
    return [sys.executable, str(tmp_path / "helper.py"), str(tmp_path)]


def runs_of(tmp_path: Path) -> int:
    return int((tmp_path / "count").read_text())


def oauth_account(mailserver, tmp_path, auth="xoauth2", **keys):
    keys.setdefault("server", f"tls:127.0.0.1:{mailserver.imaps_port}")
    keys.setdefault("user", "alice")
    keys.setdefault("ca_file", str(mailserver.ca_file))
    if not any(k.startswith("password_") for k in keys):
        keys["password_file"] = write_password(tmp_path, mint(mailserver, "alice"), "token")
    return parsed_account("work", auth=auth, **keys)


def leaks(token: str, texts: list[str]) -> list[str]:
    """The texts that show the token, or its signature (the part that makes it a token)."""
    signature = token.rsplit(".", 1)[1]
    return [t for t in texts if token in t or signature[:16] in t]


@pytest.mark.parametrize("auth", ["xoauth2", "oauthbearer"])
@pytest.mark.parametrize("scheme", ["tls", "tcp"])
@pytest_twisted.ensureDeferred
async def test_both_mechanisms_log_in(mailserver_oauth, tmp_path, auth, scheme):
    port = mailserver_oauth.imaps_port if scheme == "tls" else mailserver_oauth.imap_port
    dovecot = DovecotLog(mailserver_oauth.dovecot_log)
    account = oauth_account(mailserver_oauth, tmp_path, auth,
                            server=f"{scheme}:localhost:{port}")
    async with Watching(account) as w:
        await eventually(lambda: w.state.mailboxes["INBOX"].counts is not None,
                         what="the first check")
        assert w.session.client.encrypted
        assert w.backoff.failures == 0 and w.backoff.auth_failures == 0
    log = dovecot.wait_for(f"method={auth.upper()}")
    assert "user=<alice>" in log


@pytest.mark.parametrize("auth", ["xoauth2", "oauthbearer"])
@pytest_twisted.ensureDeferred
async def test_an_expired_token_is_followed_by_a_fresh_one_without_backoff(
        mailserver_oauth, tmp_path, auth):
    expired = mint(mailserver_oauth, "alice", expired=True)
    fresh = mint(mailserver_oauth, "alice")
    account = oauth_account(mailserver_oauth, tmp_path, auth,
                            password_command=token_command(tmp_path, expired, fresh))
    dovecot = DovecotLog(mailserver_oauth.dovecot_log)
    with global_log_events() as events:
        async with Watching(account) as w:
            await eventually(lambda: w.state.mailboxes["INBOX"].counts is not None,
                             what="the first check")
            assert error_of(w) == "-"
            assert w.backoff.failures == 0 and w.backoff.auth_failures == 0
            lines = w.state.status_lines()
    assert runs_of(tmp_path) == 2  # the command was asked again, once
    refused = [e for e in events if e.get("event") == "token_refused"]
    challenge = ("XOAUTH2: status 401, schemes bearer, scope mail" if auth == "xoauth2"
                 else "OAUTHBEARER: status invalid_token")
    assert [e["error"] for e in refused] == [
        f"access token refused for user alice ({challenge}): "
        "NO [AUTHENTICATIONFAILED] Authentication failed."]
    assert not [e for e in events if e.get("event") == "connection_failed"]
    log = dovecot.wait_for(f"method={auth.upper()}")
    assert "Token has expired" in log
    texts = lines + [formatEvent(e) for e in events] + [repr(e) for e in events]
    assert leaks(expired, texts) == [] and leaks(fresh, texts) == []


@pytest.mark.parametrize(("auth", "challenge"), [
    ("xoauth2", "XOAUTH2: status 401, schemes bearer, scope mail"),
    ("oauthbearer", "OAUTHBEARER: status invalid_token"),
])
@pytest_twisted.ensureDeferred
async def test_a_token_that_stays_refused_backs_off(mailserver_oauth, tmp_path, auth, challenge):
    bad = mint(mailserver_oauth, "alice", wrong_key=True)
    account = oauth_account(mailserver_oauth, tmp_path, auth,
                            password_command=token_command(tmp_path, bad))
    dovecot = DovecotLog(mailserver_oauth.dovecot_log)
    with global_log_events() as events:
        async with Watching(account) as w:
            await eventually(lambda: state_of(w) == "auth-failed", what="auth-failed")
            assert error_of(w) == (
                f"access token refused for user alice, a fresh one too ({challenge}): "
                "NO [AUTHENTICATIONFAILED] Authentication failed.")
            await deferLater(reactor, 1.0)
            assert w.backoff.auth_failures == 1 and state_of(w) == "auth-failed"
            lines = w.state.status_lines()
    assert runs_of(tmp_path) == 2  # once, then once fresh: no loop
    failed = [e for e in events if e.get("event") == "connection_failed"]
    assert len(failed) == 1 and failed[0]["state"] == "auth-failed"
    assert 225 <= failed[0]["retry_in"] <= 375  # the long backoff of a refused password
    assert dovecot.wait_for("Incorrect JWT signature").count("Incorrect JWT signature") == 2
    texts = lines + [formatEvent(e) for e in events] + [repr(e) for e in events]
    assert leaks(bad, texts) == []


@pytest_twisted.ensureDeferred
async def test_another_users_token_is_refused(mailserver_oauth, tmp_path):
    token = mint(mailserver_oauth, "bob")
    account = oauth_account(mailserver_oauth, tmp_path, "oauthbearer",
                            password_file=write_password(tmp_path, token, "token"))
    dovecot = DovecotLog(mailserver_oauth.dovecot_log)
    async with Watching(account) as w:
        await eventually(lambda: state_of(w) == "auth-failed", what="auth-failed")
        assert error_of(w).startswith("access token refused for user alice, a fresh one too ")
    assert "Username 'alice' did not match 'bob'" in dovecot.wait_for("did not match")


@pytest_twisted.ensureDeferred
async def test_no_token_without_tls_whatever_allow_cleartext_says(mailserver_notls, tmp_path):
    dovecot = DovecotLog(mailserver_notls.dovecot_log)
    account = parsed_account("work", server=f"tcp:127.0.0.1:{mailserver_notls.imap_port}",
                             user="alice", auth="xoauth2", allow_cleartext=True,
                             password_file=write_password(tmp_path, "a.b.c", "token"))
    async with Watching(account) as w:
        await eventually(lambda: state_of(w) == "auth-failed", what="auth-failed")
        assert error_of(w) == ("the server offers no STARTTLS: an access token is never sent "
                               "in clear, whatever allow_cleartext says (use a tls: server)")
    assert "no auth attempts" in dovecot.wait_for("Disconnected")


def test_the_daemon_shows_oauth_accounts_in_status_and_logs_no_token(mailserver_oauth,
                                                                     tmp_path):
    server = mailserver_oauth
    expired = mint(server, "alice", expired=True)
    good = mint(server, "alice")
    bad = mint(server, "bob", wrong_key=True)
    (tmp_path / "fresh").mkdir()
    config = "".join([
        "[log]\nformat = \"json\"\n",
        account_toml("fresh", server=f"tls:127.0.0.1:{server.imaps_port}", user="alice",
                     auth="oauthbearer", ca_file=str(server.ca_file),
                     password_command=token_command(tmp_path / "fresh", expired, good)),
        account_toml("refused", server=f"tcp:localhost:{server.imap_port}", user="bob",
                     auth="xoauth2", ca_file=str(server.ca_file),
                     password_file=write_password(tmp_path, bad, "bad")),
    ])
    with running_daemon(tmp_path, config_toml=config) as daemon:
        text = wait_for_status(daemon, r"^account fresh INBOX: state=idling .* error=-$")
        text = wait_for_status(daemon, r"^account refused INBOX: state=auth-failed ")
        assert ("error=access token refused for user bob, a fresh one too (XOAUTH2: status 401, "
                "schemes bearer, scope mail): NO [AUTHENTICATIONFAILED] Authentication failed."
                in text)
        log = daemon.wait_log(r'"event": "connection_failed"')
        assert '"event": "token_refused"' in log
    assert leaks(expired, [text, log]) == [] and leaks(good, [text, log]) == []
    assert leaks(bad, [text, log]) == []


def check(config: Path, *args: str) -> tuple[int, str]:
    r = subprocess.run([sys.executable, "-m", "mailsocketd.check_command", "--config",
                        str(config), *args], capture_output=True, text=True, timeout=30,
                       cwd=REPO, stdin=subprocess.DEVNULL, check=False)
    assert r.stderr == "", r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.stdout
    return r.returncode, lines[0]


def test_mailsocketd_check_with_tokens(mailserver_oauth, tmp_path):
    server = mailserver_oauth
    imaps, ca = server.imaps_port, str(server.ca_file)
    good = mint(server, "alice")
    expired = mint(server, "alice", expired=True)
    bad = mint(server, "alice", wrong_key=True)
    (tmp_path / "fresh").mkdir()
    config = tmp_path / "mailsocketd.toml"
    config.write_text("".join([
        account_toml("token", server=f"tls:127.0.0.1:{imaps}", user="alice", auth="xoauth2",
                     ca_file=ca, password_file=write_password(tmp_path, good, "good")),
        account_toml("fresh", server=f"tcp:localhost:{server.imap_port}", user="alice",
                     auth="oauthbearer", ca_file=ca,
                     password_command=token_command(tmp_path / "fresh", expired, good)),
        account_toml("refused", server=f"tls:127.0.0.1:{imaps}", user="alice",
                     auth="xoauth2", ca_file=ca,
                     password_file=write_password(tmp_path, bad, "bad")),
    ]))
    code, line = check(config, "--account", "token")
    assert code == 0 and line.startswith("IMAP OK - token INBOX: "), line
    code, line = check(config, "--account", "fresh")
    assert code == 0 and line.startswith("IMAP OK - fresh INBOX: "), line
    assert runs_of(tmp_path / "fresh") == 2
    code, line = check(config, "--account", "refused")
    assert (code, line) == (2, "IMAP CRITICAL - refused: access token refused for user alice, "
                               "a fresh one too (XOAUTH2: status 401, schemes bearer, scope "
                               f"mail): NO [AUTHENTICATIONFAILED] Authentication failed. "
                               f"(127.0.0.1 port {imaps})")
    assert leaks(bad, [line]) == []
