#!/usr/bin/env bash
# courier.sh - a throw-away REAL Courier-IMAP 5.0 (Debian 12) on loopback for the integration
# tests: authdaemond (userdb), couriertcpd + imaplogin + imapd for IMAP with STARTTLS, and
# couriertcpd + couriertls for IMAPS. Config, test CA, Maildirs, logs and pids live in DIR,
# on 127.0.0.1 high ports.
#
# Debian's courier-imap "Conflicts: imap-server" (Dovecot's dovecot-imapd provides it), so
# its imapd and imaplogin run from the copy that scripts/system-packages.sh unpacks into
# TEST_PKG_CACHE/courier-imap; the rest (couriertcpd, couriertls, authdaemond, userdb) is
# installed. This script installs nothing. Needs root.
#
# ONE INSTANCE AT A TIME on a machine: Courier's authentication has paths compiled in, so
# while an instance runs it changes system files, and "stop" puts them back:
#   /etc/courier/authdaemonrc   authmodulelist="authuserdb" (the original is kept beside it
#                               as authdaemonrc.mailsocketd-test and restored)
#   /etc/courier/userdb         the test users are added (and removed again)
#   /run/courier/authdaemon/    authdaemond's socket; /run/courier/mailsocketd-test.owner
#                               names the DIR of the running instance ("start" refuses a second)
# and the Maildirs belong to a system user, mailsocketd-test (made once; gamin, behind IDLE,
# needs a named user: with a bare uid every command stalls 1.2 s).
#
# Usage: courier.sh COMMAND DIR [ARGS]
#   start DIR                  configure (first time: users and Maildirs), start, wait for IMAP
#   stop DIR                   stop everything it started (SIGTERM), restore the system files
#   kill DIR                   crash it: SIGKILL to every process it started, sessions included
#   status DIR                 exit 0 if it runs
#   deliver DIR USER [MBOX]    drop the message on stdin into the Maildir's new/ (as a local
#                              delivery agent does)
# DIR: private, at most 70 characters: $(mktemp -d /tmp/msd.XXXXXX). After start,
# DIR/server.env holds KEY=VALUE lines (ports, CA, users, namespace) for the tests.
#
# Environment, read by "start" the first time (kept in DIR/instance.env for the rest):
#   IMAP_PORT=10143 IMAPS_PORT=10993   on 127.0.0.1: IMAP (STARTTLS), implicit TLS
#   MAIL_USERS="alice:pw bob:pw"       each gets INBOX and INBOX.Trash, INBOX.Work, INBOX.Fresh
#   NO_IDLE=0         1: IDLE taken out of IMAP_CAPABILITY
#   NO_UIDPLUS=0      1: UIDPLUS taken out of IMAP_CAPABILITY (a supported setting)
#   ENHANCEDIDLE=0    Debian's default 0: during IDLE imapd looks for new mail only every
#                     IMAP_IDLE_TIMEOUT (60) s; 1: at once (FAM/gamin)
#   TRACE=1           imapd behind courier_trace.py: DIR/protolog/imap-PID.log, both directions
# As Debian configures it: the INBOX. namespace with "." as the separator; no MOVE, no
# SPECIAL-USE; UIDVALIDITY of a folder nobody opened read-write changes with the clock.
# Exit status: 0 ok, 1 error, 3 a port is already in use.
set -euo pipefail

PROG=${0##*/}
SERVER=courier
MAX_DIR=70
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=imapserver-common.sh
. "$HERE/imapserver-common.sh"

ROOT=$TEST_PKG_CACHE/courier-imap
RC=/etc/courier/authdaemonrc
RC_SAVED=$RC.mailsocketd-test
OWNER=/run/courier/mailsocketd-test.owner
MAIL_USER=mailsocketd-test
AUTHDAEMOND=/usr/lib/courier/courier-authlib/authdaemond
DAEMONS=(imap imaps authdaemond)

instance_defaults() { # for load_settings (imapserver-common.sh)
    ENHANCEDIDLE=${ENHANCEDIDLE:-0} TRACE=${TRACE:-1}
    INSTANCE_SETTINGS=(ENHANCEDIDLE TRACE)
}

check_binaries() {
    local f missing=()
    for f in "$ROOT/usr/bin/imapd" "$ROOT/usr/lib/courier/courier/imaplogin" "$ROOT/etc/courier/imapd" \
        /usr/sbin/couriertcpd /usr/bin/couriertls "$AUTHDAEMOND" /usr/sbin/userdb /usr/sbin/userdbpw \
        /usr/sbin/makeuserdb /usr/bin/maildirmake.courier /usr/bin/openssl "$PYTHON" "$RC"; do
        [ -e "$f" ] || missing+=("$f")
    done
    [ ${#missing[@]} = 0 ] || die "missing ${missing[*]}: install them with scripts/system-packages.sh (as root)"
}

# claim: refuse to start while another instance (another DIR) runs; else name DIR the owner
claim() {
    local other
    mkdir -p /run/courier
    other=$(cat "$OWNER" 2>/dev/null || true)
    if [ -n "$other" ] && [ "$other" != "$D" ] && [ -d "$other" ]; then
        if (D=$other; daemon_runs authdaemond || daemon_runs imap || daemon_runs imaps); then
            die "another test Courier runs (from $other): only one at a time on a machine"
        fi
    fi
    echo "$D" >"$OWNER"
}

make_users() {
    local entry user home
    getent passwd "$MAIL_USER" >/dev/null || useradd --system --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin --user-group "$MAIL_USER"
    MAIL_UID=$(id -u "$MAIL_USER") MAIL_GID=$(id -g "$MAIL_USER")
    mkdir -p "$D/home"
    for entry in $MAIL_USERS; do
        user=${entry%%:*} home=$D/home/$user
        if [ ! -d "$home/Maildir" ]; then
            mkdir -p "$home"
            maildirmake.courier "$home/Maildir"
            for box in Trash Work Fresh; do maildirmake.courier -f "$box" "$home/Maildir"; done
            printf 'INBOX.Trash\nINBOX.Work\nINBOX.Fresh\n' >"$home/Maildir/courierimapsubscribed"
            chown -R "$MAIL_UID:$MAIL_GID" "$home"
        fi
        userdb "$user" set "uid=$MAIL_UID" "gid=$MAIL_GID" "home=$home" "mail=$home/Maildir"
        # the password on stdin, never on a command line
        printf '%s\n%s\n' "${entry#*:}" "${entry#*:}" | userdbpw -md5 | userdb "$user" set systempw
    done
    makeuserdb
    chmod 755 "$D" "$D/home"
}

remove_users() {
    local entry changed=0
    for entry in $MAIL_USERS; do
        if grep -qs "^${entry%%:*}	" /etc/courier/userdb; then
            userdb "${entry%%:*}" del && changed=1
        fi
    done
    [ $changed = 0 ] || makeuserdb
}

start_authdaemond() {
    [ -f "$RC_SAVED" ] || cp -p "$RC" "$RC_SAVED"
    sed -i 's/^authmodulelist=.*/authmodulelist="authuserdb"/' "$RC"
    install -d -o courier -g courier -m 750 /run/courier/authdaemon
    rm -f /run/courier/authdaemon/socket
    launch authdaemond /bin/sh -c "set -a; . '$RC'; exec '$AUTHDAEMOND'"
    local deadline=$(($(now_ms) + START_TIMEOUT * 1000))
    until [ -S /run/courier/authdaemon/socket ]; do
        [ "$(now_ms)" -lt "$deadline" ] || die "authdaemond made no socket: $(tail -n 5 "$D/log/authdaemond.log")"
        sleep 0.02
    done
}

write_imapd_env() {
    local caps
    caps=$( (set +u; . "$ROOT/etc/courier/imapd"; echo "$IMAP_CAPABILITY") )
    [ "$NO_UIDPLUS" = 1 ] && caps=${caps/ UIDPLUS/}
    [ "$NO_IDLE" = 1 ] && caps=${caps/ IDLE/}
    CAPABILITY=$caps
    cat "$D/tls/server.key" "$D/tls/server.pem" >"$D/tls/imapd.pem"
    chown courier "$D/tls/imapd.pem"; chmod 600 "$D/tls/imapd.pem"
    cat >"$D/imapd.env" <<EOF
# generated by courier.sh: Debian's settings from the package, then the test's
. "$ROOT/etc/courier/imapd"
. "$ROOT/etc/courier/imapd-ssl"
ADDRESS=127.0.0.1
IMAP_CAPABILITY="$caps"
IMAP_CAPABILITY_TLS="\$IMAP_CAPABILITY AUTH=PLAIN"
IMAP_ENHANCEDIDLE=$ENHANCEDIDLE
IMAP_STARTTLS=YES
TLS_CERTFILE=$D/tls/imapd.pem
TLS_DHPARAMS=/etc/courier/dhparams.pem
TLS_CACHEFILE=
IMAPACCESSFILE=
EOF
}

start_imapd() {
    local imapd=$ROOT/usr/bin/imapd login=$ROOT/usr/lib/courier/courier/imaplogin post
    post=$imapd
    if [ "$TRACE" = 1 ]; then
        # imaplogin takes exactly two arguments (the imapd program and the Maildir): a wrapper;
        # the trace runs as the mail user, who may not read this checkout: a copy in DIR
        mkdir -p "$D/protolog"; chmod 1777 "$D/protolog"
        install -m 644 "$HERE/courier_trace.py" "$D/courier_trace.py"
        printf '#!/bin/sh\nexec %s %s %s %s "$@"\n' "$PYTHON" "$D/courier_trace.py" "$D/protolog" "$imapd" >"$D/imapd-traced"
        chmod 755 "$D/imapd-traced"
        post=$D/imapd-traced
    fi
    local tcpd="exec /usr/sbin/couriertcpd -address=127.0.0.1 -maxprocs=100 -maxperip=100 -nodnslookup -noidentlookup"
    launch imap env -i /bin/sh -c "set -a; PATH=/usr/sbin:/usr/bin:/sbin:/bin; . '$D/imapd.env'; \
        $tcpd $IMAP_PORT '$login' '$post' Maildir"
    launch imaps env -i /bin/sh -c "set -a; PATH=/usr/sbin:/usr/bin:/sbin:/bin; . '$D/imapd.env'; IMAP_TLS=1; \
        $tcpd $IMAPS_PORT /usr/bin/couriertls -server -tcpd '$login' '$post' Maildir"
    wait_ready "$IMAP_PORT" "$D/log/imap.log"
    wait_ready "$IMAPS_PORT" "$D/log/imaps.log" tls
}

# stop_all SIGNAL: the daemons, then the sessions they left (and the gam_server libgamin
# started for them): every process of the dedicated mail user, by pid
stop_all() {
    local pid
    stop_daemons "$1" imap imaps
    if getent passwd "$MAIL_USER" >/dev/null; then
        for pid in $(ps -u "$MAIL_USER" -o pid=); do kill "-$1" "$pid" 2>/dev/null || true; done
    fi
    stop_daemons "$1" authdaemond
}

cmd_start() {
    load_settings "${1:-}" start
    check_binaries
    for name in "${DAEMONS[@]}"; do daemon_runs "$name" && die "already running ($name, pid $D_PID)"; done
    check_ports "$IMAP_PORT" "$IMAPS_PORT"
    claim
    make_tls
    make_users
    start_authdaemond
    write_imapd_env
    start_imapd
    write_server_env
    log "Courier on 127.0.0.1:$IMAP_PORT (STARTTLS) and :$IMAPS_PORT (TLS); capabilities: $CAPABILITY"
}

cmd_stop() { # SIGNAL DIR
    load_settings "${2:-}"
    stop_all "$1"
    if [ "$(cat "$OWNER" 2>/dev/null || true)" = "$D" ]; then
        remove_users
        [ -f "$RC_SAVED" ] && mv -f "$RC_SAVED" "$RC"
        rm -f "$OWNER"
    fi
}

write_server_env() {
    SERVER_VERSION="Courier-IMAP $(cat "$TEST_PKG_CACHE/courier-imap/.version")"
    NAMESPACE_PREFIX=INBOX. DELIMITER=. CA=$D/tls/ca.pem OTHER_CA=$D/tls/other-ca.pem
    PROTOCOL_LOG=$D/protolog LOG=$D/log/imap.log MAILDIRS=$D/home
    save_env "$D/server.env" SERVER SERVER_VERSION IMAP_PORT IMAPS_PORT CA OTHER_CA MAIL_USERS \
        NAMESPACE_PREFIX DELIMITER NO_IDLE NO_UIDPLUS ENHANCEDIDLE CAPABILITY PROTOCOL_LOG LOG \
        MAILDIRS MAIL_USER
}

cmd_deliver() {
    [ $# -ge 2 ] || die "usage: $PROG deliver DIR USER [MAILBOX] <MESSAGE"
    load_settings "$1"
    local maildir=$D/home/$2/Maildir box=${3:-INBOX}
    [ -d "$maildir" ] || die "unknown user $2"
    # Maildir++: INBOX.Work is the folder .Work
    case $box in INBOX) ;; INBOX.*) maildir=$maildir/.${box#INBOX.} ;; *) die "no such mailbox: $box" ;; esac
    [ -d "$maildir/new" ] || die "no such mailbox: $box"
    # the message comes on descriptor 3 (standard input is this script)
    "$PYTHON" - "$maildir" "$(id -u "$MAIL_USER")" "$(id -g "$MAIL_USER")" 3<&0 <<'EOF'
import os, socket, sys, time
maildir, uid, gid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(3, "rb") as message:
    data = message.read().replace(b"\r\n", b"\n")  # a Maildir file has LF line ends
name = f"{time.time_ns()}.P{os.getpid()}.{socket.gethostname()},S={len(data)}"
tmp = os.path.join(maildir, "tmp", name)
fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
os.write(fd, data)
os.fchown(fd, uid, gid)
os.close(fd)
os.rename(tmp, os.path.join(maildir, "new", name))  # the Maildir protocol: tmp/, then new/
EOF
}

cmd_status() {
    load_settings "${1:-}"
    local rc=0 name
    for name in "${DAEMONS[@]}"; do
        if daemon_runs "$name"; then echo "$name: running (pid $D_PID)"; else echo "$name: not running"; rc=1; fi
    done
    return $rc
}

case ${1:-} in
    start) shift; cmd_start "$@" ;;
    stop) cmd_stop TERM "${2:-}" ;;
    kill) load_settings "${2:-}"; stop_all KILL ;;
    status) shift; cmd_status "$@" ;;
    deliver) shift; cmd_deliver "$@" ;;
    *) sed -n '2,/^set -e/{/^#/s/^# \{0,1\}//p}' "$0" >&2; exit 2 ;;
esac
