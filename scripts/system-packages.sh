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
# instances (tests/integration/mailserver.sh, cyrus.sh, courier.sh).
#
# Cyrus IMAP and Courier IMAP: their IMAP servers, cyrus-imapd and courier-imap,
# both "Conflict: imap-server", which dovecot-imapd provides; installing either would
# remove Dovecot. So only their non-conflicting packages are installed (libraries,
# tools, Courier's authdaemon) and the two conflicting .debs are downloaded with
# "apt-get download" and unpacked (dpkg -x, nothing runs) into a cache that only
# root can write, TEST_PKG_CACHE (default /var/cache/mailsocketd-tests):
# TEST_PKG_CACHE/cyrus-imapd/usr/lib/cyrus/bin/imapd, TEST_PKG_CACHE/courier-imap/usr/bin/imapd.
# They are unpacked again when the installed cyrus-common / courier-base changes
# version. Remove the directory to take them away.
set -euo pipefail

PROG=${0##*/}
PACKAGES=(
    dovecot-core dovecot-imapd dovecot-lmtpd # IMAP, IMAPS, LMTP, doveadm
    postfix                                  # SMTP, delivers to Dovecot over LMTP
    openssl                                  # test CA + server certificate
    python3 python3-venv                     # populate helper, project venv
    netcat-openbsd telnet                    # manual testing of the line service
    util-linux                               # prlimit: the open-file limit test
    logrotate systemd                        # contrib/logrotate and contrib/systemd checks
    acl                                      # setfacl: a systemd credential's ACL
    prometheus                               # promtool: checks /metrics and the alert rules
    cyrus-common sasl2-bin libsasl2-modules  # Cyrus: master, lmtpd, deliver; saslpasswd2
    libwrap0 libcom-err2                     # Cyrus: the libraries of the unpacked imapd
    courier-base courier-authdaemon          # Courier: couriertcpd, couriertls, authdaemond
    courier-authlib-userdb                   # Courier: userdb, userdbpw, makeuserdb
    gamin libgamin0 libidn12 libgdbm6        # Courier: the unpacked imapd's IDLE and libraries
)
# The system daemons among them, PACKAGE:UNIT[,UNIT]: Debian enables a daemon's units when it
# installs the package, so after the next boot a Dovecot would take system logins on :143,
# Prometheus listen on :9090 and so on, on every interface. The tests run their own private
# instances, so the units of the packages this script installs are disabled at boot (and listed
# in CACHE/disabled-at-boot); a daemon that was installed before is left as it was.
DAEMONS=(dovecot-core:dovecot.service,dovecot.socket postfix:postfix.service
         prometheus:prometheus.service cyrus-common:cyrus-imapd.service
         courier-authdaemon:courier-authdaemon.service sasl2-bin:saslauthd.service)
# unpacked, not installed (see above): PACKAGE:THE INSTALLED PACKAGE OF THE SAME VERSION
UNPACKED=(cyrus-imapd:cyrus-common courier-imap:courier-base)
CACHE=${TEST_PKG_CACHE:-/var/cache/mailsocketd-tests}
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

# stale_unpacked: the packages of UNPACKED whose unpacked copy is missing or was made for
# another version of its installed sibling (CACHE/PACKAGE/.sibling-version)
stale_unpacked() {
    local entry pkg sibling want have
    for entry in "${UNPACKED[@]}"; do
        pkg=${entry%%:*} sibling=${entry#*:}
        want=$(dpkg-query -W -f='${Version}' "$sibling" 2>/dev/null || true)
        have=$(cat "$CACHE/$pkg/.sibling-version" 2>/dev/null || true)
        [ -n "$want" ] && [ "$want" = "$have" ] || printf '%s\n' "$pkg"
    done
}

# unpack PACKAGE...: apt-get download each .deb (the candidate version, which is the
# installed sibling's right after apt-get install) and dpkg -x it into CACHE/PACKAGE
unpack() {
    local pkg sibling entry tmp deb
    install -d -m 755 "$CACHE"
    for pkg in "$@"; do
        for entry in "${UNPACKED[@]}"; do [ "${entry%%:*}" = "$pkg" ] && sibling=${entry#*:}; done
        tmp=$(mktemp -d "$CACHE/.unpack.XXXXXX")
        if ! (cd "$tmp" && apt-get -q -o APT::Sandbox::User=root download "$pkg" >>"$alog" 2>&1); then
            rm -rf "$tmp"
            tail -n 25 "$alog" >&2
            echo "$PROG: apt-get download $pkg failed" >&2
            exit 1
        fi
        deb=$(echo "$tmp"/*.deb)
        mkdir "$tmp/root"
        dpkg -x "$deb" "$tmp/root"
        dpkg-query -W -f='${Version}' "$sibling" >"$tmp/root/.sibling-version"
        dpkg-deb -f "$deb" Version >"$tmp/root/.version"
        chmod 755 "$tmp/root"
        rm -rf "${CACHE:?}/$pkg"
        mv "$tmp/root" "$CACHE/$pkg"
        rm -rf "$tmp"
        echo "$PROG: unpacked $pkg $(cat "$CACHE/$pkg/.version") into $CACHE/$pkg (not installed: it conflicts with dovecot-imapd)"
    done
}

# disable_at_boot PACKAGE...: disable the DAEMONS units of these (just installed) packages
disable_at_boot() {
    local pkg entry unit units
    command -v systemctl >/dev/null || return 0
    for pkg in "$@"; do
        for entry in "${DAEMONS[@]}"; do
            [ "${entry%%:*}" = "$pkg" ] || continue
            IFS=, read -ra units <<<"${entry#*:}"
            for unit in "${units[@]}"; do
                if systemctl disable --quiet "$unit" >>"$alog" 2>&1; then
                    install -d -m 755 "$CACHE"
                    grep -qxF "$unit" "$CACHE/disabled-at-boot" 2>/dev/null ||
                        echo "$unit" >>"$CACHE/disabled-at-boot"
                else
                    echo "$PROG: warning: could not disable $unit at boot (systemctl disable $unit)" >&2
                fi
            done
            echo "$PROG: $pkg: disabled at boot: ${units[*]} (the tests need no system instance)"
        done
    done
}

mapfile -t missing < <(missing_packages)
mapfile -t stale < <(stale_unpacked)
if [ ${#missing[@]} -eq 0 ] && [ ${#stale[@]} -eq 0 ]; then
    echo "$PROG: all packages installed (${PACKAGES[*]}); unpacked in $CACHE: ${UNPACKED[*]%%:*}"
    exit 0
fi
if [ -n "$check" ]; then
    echo "$PROG: missing Debian packages: ${missing[*]} ${stale[*]}" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "$PROG: missing Debian packages: ${missing[*]} ${stale[*]} - run this script as root (sudo $0)" >&2
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

alog=$(mktemp /tmp/system-packages-apt.XXXXXX)
apt_opts=(-q -o DPkg::Lock::Timeout=300)
if ! apt-get "${apt_opts[@]}" update >>"$alog" 2>&1; then
    tail -n 25 "$alog" >&2
    echo "$PROG: apt-get update failed" >&2
    exit 1
fi
if [ ${#missing[@]} -ne 0 ]; then
    echo "$PROG: installing ${missing[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y --no-install-recommends \
        "${missing[@]}" >>"$alog" 2>&1; then
        tail -n 25 "$alog" >&2
        echo "$PROG: apt-get failed installing ${missing[*]}" >&2
        exit 1
    fi
    disable_at_boot "${missing[@]}"
fi
mapfile -t stale < <(stale_unpacked)
[ ${#stale[@]} -eq 0 ] || unpack "${stale[@]}"

mapfile -t missing < <(missing_packages)
mapfile -t stale < <(stale_unpacked)
if [ ${#missing[@]} -ne 0 ] || [ ${#stale[@]} -ne 0 ]; then
    echo "$PROG: still missing after apt-get: ${missing[*]} ${stale[*]}" >&2
    exit 1
fi
echo "$PROG: installed; all packages present"
