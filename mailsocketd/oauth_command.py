"""``mailsocketd-oauth2``: get an account's first refresh token.

Reads the daemon's TOML configuration, takes the account's ``[accounts.NAME.oauth2]`` table,
and runs one of two grants:

* by default the device authorization grant (RFC 8628, ``mail.oauth.device``): prints where to
  go and which code to enter, and waits while the user approves in a browser on any device;
* with ``--browser`` the authorization code grant with PKCE and a loopback redirect
  (``mail.oauth.browser``), for providers that refuse the mail scope in the device grant
  (Google): prints a URL to open in a browser on this machine (or through ``ssh -L``).

Either way the refresh token is written to ``refresh_token_file`` with mode 0600::

    $ mailsocketd-oauth2 --config /etc/mailsocketd.toml --account work
    To let mailsocketd read the mail of account work (alice@example.org):
      open   https://microsoft.com/devicelogin
      enter  WDJB-MJHT
    Waiting for the approval (the code is valid for 15 minutes)...
    mailsocketd-oauth2: account work: refresh token written to /etc/mailsocketd/work.refresh-token

Exit status: 0 the token is written; 1 the grant failed (denied, expired, the endpoint failed or
refused; one line on stderr saying which); 2 a usage or configuration error.  Nothing secret is
ever printed: not the refresh token, not the client secret.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred

from mailsocketd.clean import clean
from mailsocketd.config import ConfigError, load_config
from mailsocketd.mail.accounts.config import AccountConfig
from mailsocketd.mail.errors import MailError
from mailsocketd.mail.oauth.browser import WAIT, browser_grant
from mailsocketd.mail.oauth.config import OAuth2Config
from mailsocketd.mail.oauth.device import device_grant
from mailsocketd.mail.oauth.messages import DeviceAuthorization

__all__ = ["FAILED", "OK", "USAGE", "choose_oauth2_account", "main"]

OK, FAILED, USAGE = 0, 1, 2
PROG = "mailsocketd-oauth2"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"{PROG}: {message}", file=sys.stderr)
        raise SystemExit(USAGE)


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = _Parser(prog=PROG, description=(
        "Get the first OAuth2 refresh token of an account of a mailsocketd configuration "
        "with the device authorization grant (RFC 8628: prints a URL and a code to enter "
        "there, waits for the approval) or, with --browser, a browser sign-in on this "
        "machine; writes the account's refresh_token_file (mode 0600). "
        "Exit status: 0 written, 1 the grant failed, 2 usage or configuration error."))
    parser.add_argument("--config", "-c", required=True, help="the TOML configuration file")
    parser.add_argument("--account", "-a", required=True,
                        help="the account ([accounts.NAME] with an [accounts.NAME.oauth2] table)")
    parser.add_argument("--browser", action="store_true", help=(
        "sign in with a browser on this machine (the authorization code grant with a "
        "redirect to 127.0.0.1) instead of entering a code on any device; needed for Gmail"))
    parser.add_argument("--port", type=_port, default=0, help=(
        "with --browser: the 127.0.0.1 port to wait on for the browser (default: any free "
        "one); fix it to forward it with ssh -L"))
    return parser.parse_args(argv)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return int(text)


def choose_oauth2_account(accounts: Sequence[AccountConfig], name: str
                          ) -> tuple[AccountConfig, OAuth2Config]:
    """The account and its [oauth2] table; ConfigError naming the key when there is none."""
    for account in accounts:
        if account.name == name:
            if account.oauth2 is None:
                raise ConfigError(f"accounts.{name}.oauth2", "is missing: this account does "
                                  "not refresh its tokens itself (see docs/mail-checks.md)")
            return account, account.oauth2
    known = ", ".join(a.name for a in accounts) or "none"
    raise ConfigError("accounts", f"no account named {name!r} (configured: {known})")


def _check_writable(config: OAuth2Config, account: str) -> None:
    """Refuse before the user is sent to a browser if the token could not be written."""
    directory = os.path.dirname(config.refresh_token_file)
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"accounts.{account}.oauth2.refresh_token_file",
                          f"cannot write into {directory} (missing, or not writable by this "
                          "user)")


def show_prompt(account: AccountConfig, out: TextIO) -> Any:
    """What the user is told: the URL, the code, for how long (server text cleaned)."""
    def show(authorization: DeviceAuthorization) -> None:
        minutes = max(1, round(authorization.expires_in / 60))
        print(f"To let mailsocketd read the mail of account {account.name} "
              f"({clean(account.user, limit=100)}):", file=out)
        print(f"  open   {clean(authorization.verification_uri, limit=300)}", file=out)
        print(f"  enter  {clean(authorization.user_code, limit=64)}", file=out)
        if authorization.verification_uri_complete:
            print("  (or open "
                  f"{clean(authorization.verification_uri_complete, limit=400)})", file=out)
        print(f"Waiting for the approval (the code is valid for {minutes} minutes)...",
              file=out, flush=True)
    return show


def show_browser_prompt(account: AccountConfig, out: TextIO) -> Any:
    """What the user of --browser is told: the URL to open, and how to reach the port."""
    def show(url: str, port: int) -> None:
        print(f"To let mailsocketd read the mail of account {account.name} "
              f"({clean(account.user, limit=100)}), open this URL in a browser on this "
              "machine and sign in:", file=out)
        print(f"  {clean(url)}", file=out)  # unbounded: a cut URL would not work
        print(f"The browser is then sent to http://127.0.0.1:{port}/ (from another machine, "
              f"forward that port first: ssh -L {port}:127.0.0.1:{port} THIS-HOST).", file=out)
        print(f"Waiting for the sign-in (for up to {WAIT / 60:g} minutes)...", file=out,
              flush=True)
    return show


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """The console script: run the grant, return the exit status."""
    out = out or sys.stdout
    try:
        args = parse_arguments(sys.argv[1:] if argv is None else argv)
        account, config = choose_oauth2_account(load_config(args.config).accounts, args.account)
        _check_writable(config, account.name)
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else USAGE
    except ConfigError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return USAGE
    outcome: list[int] = []

    async def run(reactor: Any) -> None:
        try:
            if args.browser:
                await browser_grant(config, reactor, show_browser_prompt(account, out),
                                    port=args.port)
            else:
                await device_grant(config, reactor, show_prompt(account, out))
        except MailError as e:
            print(f"{PROG}: account {account.name}: {e}", file=sys.stderr)
            outcome.append(FAILED)
            return
        print(f"{PROG}: account {account.name}: refresh token written to "
              f"{config.refresh_token_file}", file=out)
        outcome.append(OK)

    def start(reactor: Any) -> Deferred[None]:
        return ensureDeferred(run(reactor))

    with contextlib.suppress(SystemExit):  # react() always exits; we print and return
        task.react(start)
    if not outcome:  # interrupted (Ctrl-C), or a bug of ours (react printed its traceback)
        print(f"{PROG}: account {account.name}: stopped before a refresh token was written",
              file=sys.stderr)
        return FAILED
    return outcome[0]


if __name__ == "__main__":
    sys.exit(main())
