#!/usr/bin/env bash
# system-packages.sh - install the Debian packages the integration tests need.
#
# Usage: scripts/system-packages.sh [--check] [EXTRA-PACKAGE ...]
#   (as root)  installs what is missing with apt-get; a no-op taking well under
#              a second when everything is already there.
#   --check    only report: exit 0 if everything is installed, else print the
#              missing packages on one line and exit 1 (never installs).
#   Not root and something is missing: one line naming the packages, exit 1.
#
# The packages must not start system daemons (a system Postfix on :25, Dovecot
# on :143/:993) or configure a system Postfix: a temporary /usr/sbin/policy-rc.d
# ("exit 101") keeps the init scripts from starting anything (removed again only
# if this script created it), and debconf's "No configuration" answer keeps
# Postfix from writing /etc/postfix/main.cf. The tests run their own private
# instances (tests/integration/mailserver.sh).
set -euo pipefail

PROG=${0##*/}
PACKAGES=(
    dovecot-core dovecot-imapd dovecot-lmtpd # IMAP, IMAPS, LMTP, doveadm
    postfix                                  # SMTP, delivers to Dovecot over LMTP
    openssl                                  # test CA + server certificate
    python3 python3-venv                     # populate helper, project venv
    netcat-openbsd telnet                    # manual testing of the line service
    logrotate systemd                        # contrib/logrotate and contrib/systemd checks
    acl                                      # setfacl: a systemd credential's ACL
    prometheus                               # promtool: checks /metrics and the alert rules
)
check=
if [ "${1:-}" = --check ]; then check=1; shift; fi
PACKAGES+=("$@")  # what a caller needs besides the tests' packages (the benchmarks: PHP, gcc)

missing_packages() {
    local -A ok=()
    local name status
    # one dpkg-query for all; it exits 1 when some package is unknown to dpkg
    while read -r name status; do
        [ "$status" = ii ] && ok[$name]=1
    done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${PACKAGES[@]}" 2>/dev/null || true)
    for name in "${PACKAGES[@]}"; do
        [ -n "${ok[$name]:-}" ] || printf '%s\n' "$name"
    done
}

mapfile -t missing < <(missing_packages)
if [ ${#missing[@]} -eq 0 ]; then
    echo "$PROG: all packages installed (${PACKAGES[*]})"
    exit 0
fi
if [ -n "$check" ]; then
    echo "$PROG: missing Debian packages: ${missing[*]}" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "$PROG: missing Debian packages: ${missing[*]} - run this script as root (sudo $0) or: apt-get install ${missing[*]}" >&2
    exit 1
fi

guard=
cleanup() {
    if [ -n "$guard" ]; then rm -f /usr/sbin/policy-rc.d; fi
    if [ -n "${alog:-}" ]; then rm -f "$alog"; fi
}
trap cleanup EXIT
if [ ! -e /usr/sbin/policy-rc.d ]; then
    guard=1
    printf '#!/bin/sh\n# temporary, from %s: do not start services\nexit 101\n' "$PROG" >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
fi
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections

echo "$PROG: installing ${missing[*]}"
alog=$(mktemp /tmp/system-packages-apt.XXXXXX)
apt_opts=(-q -o DPkg::Lock::Timeout=300)
if ! apt-get "${apt_opts[@]}" update >>"$alog" 2>&1 ||
    ! DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y --no-install-recommends \
        "${missing[@]}" >>"$alog" 2>&1; then
    tail -n 25 "$alog" >&2
    echo "$PROG: apt-get failed installing ${missing[*]}" >&2
    exit 1
fi

mapfile -t missing < <(missing_packages)
if [ ${#missing[@]} -ne 0 ]; then
    echo "$PROG: still missing after apt-get: ${missing[*]}" >&2
    exit 1
fi
echo "$PROG: installed; all packages present"
