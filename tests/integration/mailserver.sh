#!/usr/bin/env bash
# mailserver.sh - a throw-away REAL mail server on loopback for the integration tests:
# Dovecot 2.3 (IMAP, IMAPS, LMTP) + Postfix 3.7 (SMTP, SMTPS) delivering into Dovecot
# over LMTP. Config, test CA, queue, Maildirs, logs, sockets and pids all live in DIR;
# nothing in /etc is read or written and no standard port is used, so instances can
# run side by side. Needs root (Postfix's master(8) refuses other users) and the
# Debian packages from scripts/system-packages.sh (this script installs nothing).
#
# Usage: mailserver.sh COMMAND DIR [ARGS]
#   start DIR                   write config, start both, wait until IMAP LOGIN and SMTP answer
#   stop DIR                    stop both, wait until every process they started is gone
#   status DIR                  what runs (exit 0 only if Dovecot and Postfix both run)
#   populate DIR USER N [MBOX]  write N messages into USER's Maildir (default INBOX), index them
#   clear DIR USER [MBOX]       expunge every message of the mailbox (Dovecot must run)
#   dovecot-stop DIR            stop Dovecot alone (SIGTERM), wait until its processes are gone
#   dovecot-kill DIR            crash Dovecot: SIGKILL its master, then its leftover processes
#   dovecot-start DIR           start Dovecot again, same config and ports; wait until LOGIN works
#   postfix-stop DIR            stop Postfix alone (SIGTERM), wait until its processes are gone
#   postfix-start DIR           start Postfix again, same config and ports; wait for the banner
# DIR: private, at most 70 characters (unix socket paths), e.g. $(mktemp -d /tmp/msd.XXXXXX).
# After start, DIR/mail.env holds KEY=VALUE lines (ports, MAIL_CA, users, logs) for tests.
#
# Environment, read by "start" (saved in DIR/etc/instance.env for the other commands):
#   PORT_BASE=10000   IMAP base+143, IMAPS base+993, SMTP base+25, SMTPS base+465 (127.0.0.1)
#   MAIL_TLS=1        1: test CA; STARTTLS on IMAP and SMTP, IMAPS and SMTPS (plaintext
#                     LOGIN still allowed).  0: no TLS at all: no STARTTLS, no IMAPS/SMTPS.
#   MAIL_USERS="alice:pw bob:pw"  MAIL_DOMAIN=example.test  MAIL_UID=MAIL_GID=65534 (Maildirs)
#   START_TIMEOUT=20  seconds to wait for readiness
#   MAIL_OAUTH=0      1: Dovecot ALSO accepts SASL XOAUTH2 and OAUTHBEARER (IMAP, and SMTP AUTH
#                     through Postfix) with a JWT it validates locally (oauth2 passdb,
#                     introspection_mode = local, HMAC key DIR/etc/oauth2-keys/default/ALG/KID,
#                     kept across restarts); password logins keep working. mail.env gets OAUTH_*.
#   OAUTH_ALG=HS256 (or HS384, HS512)   OAUTH_KID=mailtest   OAUTH_USER_CLAIM=email
#   OAUTH_ISSUER=https://auth.example.test   the "iss" a token must have
# Exit status: 0 ok, 1 error, 3 a port is already in use (choose another PORT_BASE).
# Processes are signalled only by the pid recorded when this script started them
# (DIR/run/NAME.id: pid + kernel start time, so a reused pid is never hit) and by that
# pid's process group (both masters are session leaders); never by name.
set -euo pipefail

PROG=${0##*/}
PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
die() { echo "$PROG: error: $*" >&2; exit 1; }
log() { echo "$PROG: $*" >&2; }
now_ms() { local t=${EPOCHREALTIME//[!0-9]/}; echo $((10#$t / 1000)); }

PORT_BASE=${PORT_BASE:-10000}
MAIL_TLS=${MAIL_TLS:-1}
MAIL_USERS=${MAIL_USERS:-"alice:pw bob:pw"}
MAIL_DOMAIN=${MAIL_DOMAIN:-example.test}
MUID=${MAIL_UID:-65534} MGID=${MAIL_GID:-65534}
START_TIMEOUT=${START_TIMEOUT:-20}
MAIL_OAUTH=${MAIL_OAUTH:-0}
OAUTH_ALG=${OAUTH_ALG:-HS256}
OAUTH_KID=${OAUTH_KID:-mailtest}
OAUTH_ISSUER=${OAUTH_ISSUER:-https://auth.example.test}
OAUTH_USER_CLAIM=${OAUTH_USER_CLAIM:-email}
PF_MASTER=/usr/lib/postfix/sbin/master
PYTHON=/usr/bin/python3   # stdlib only; starts in ~10 ms (a pyenv shim takes ~100)
LAUNCHED=()               # daemons this invocation launched (taken down again if it fails)

# ---------------------------------------------------------------- processes
proc_stat() { # PID -> P_STATE P_PGRP P_START (start time, clock ticks)
    local s f
    { read -r s <"/proc/$1/stat"; } 2>/dev/null || return 1
    read -ra f <<<"${s##*) }"
    P_STATE=${f[0]} P_PGRP=${f[2]} P_START=${f[19]}
}

pid_file() { if [ "$1" = dovecot ]; then echo "$D/run/dovecot/master.pid"; else echo "$D/postfix/spool/pid/master.pid"; fi; }

# record_master NAME: remember the master just started, from its own pid file. Wait for
# that: "dovecot" returns as soon as it has forked, and under load the daemon writes its
# pid file only later.
record_master() {
    local pid='' deadline=$(($(now_ms) + START_TIMEOUT * 1000))
    until { read -r pid <"$(pid_file "$1")"; } 2>/dev/null && [[ $pid =~ ^\ *[0-9]+$ ]]; do
        [ "$(now_ms)" -lt "$deadline" ] || die "$1 wrote no pid file in ${START_TIMEOUT}s"
        sleep 0.005
    done
    pid=${pid// /}   # Postfix pads it with spaces
    proc_stat "$pid" || die "$1 master (pid $pid) is not running"
    [ "$P_PGRP" = "$pid" ] || die "$1 master (pid $pid) does not lead its own process group"
    echo "$pid $P_START" >"$D/run/$1.id"
}

# master_of NAME: M_PID = the recorded pid, if it can only mean our master or group: it is
# our master (same start time) or no process has it (Linux does not reuse a pid while a
# process group of that number exists). M_RUNS=1 if our master still runs; a zombie
# counts as gone (some container inits reap orphans only every second or two).
master_of() {
    local start
    M_PID='' M_RUNS=0
    { read -r M_PID start <"$D/run/$1.id"; } 2>/dev/null || return 1
    if proc_stat "$M_PID"; then
        [ "$P_START" = "$start" ] || { M_PID=; return 1; }
        [ "$P_STATE" = Z ] || M_RUNS=1
    fi
}
runs() { master_of "$1" && [ "$M_RUNS" = 1 ]; }

group_alive() { # PGID: is any process of the group left (zombies aside)?
    local f s a
    for f in /proc/[0-9]*/stat; do
        { read -r s <"$f"; } 2>/dev/null || continue
        read -ra a <<<"${s##*) }"
        [ "${a[2]}" = "$1" ] && [ "${a[0]}" != Z ] && return 0
    done
    return 1
}

# stop_services SIGNAL NAME...: signal the masters, wait until each and its whole process
# group are gone. SIGKILL to the group if a master ignores SIGTERM for 10 s, if children
# outlive it by 2 s, and at once after SIGKILL (a crash: a killed Dovecot master leaves
# its log, auth and stats processes running for good).
stop_services() {
    local sig=$1 name pg t0 grace=2000 todo=()
    shift
    [ "$sig" = KILL ] && grace=0
    for name in "$@"; do
        master_of "$name" || { rm -f "$D/run/$name.id"; continue; }
        todo+=("$name:$M_PID")
        if [ "$M_RUNS" = 1 ]; then kill "-$sig" "$M_PID" 2>/dev/null || true; fi
    done
    for name in "${todo[@]}"; do
        pg=${name#*:} name=${name%%:*} t0=$(now_ms)
        while runs "$name"; do
            [ $(($(now_ms) - t0)) -lt 10000 ] || { log "$name (pid $pg) ignored SIG$sig for 10 s"; break; }
            sleep 0.01
        done
        t0=$(now_ms)
        while group_alive "$pg"; do
            if [ $(($(now_ms) - t0)) -ge $grace ]; then
                kill -KILL -- "-$pg" 2>/dev/null || true
                [ $(($(now_ms) - t0)) -lt $((grace + 10000)) ] || die "process group $pg ($name) does not die"
            fi
            sleep 0.01
        done
        rm -f "$D/run/$name.id" "$(pid_file "$name")"   # Postfix leaves its pid file behind
    done
}

# ---------------------------------------------------------------- probes
# check_ports PORT...: exit 3 unless all can be bound on 127.0.0.1 (a bind also sees
# sockets that are bound but not listening)
check_ports() {
    local busy
    busy=$("$PYTHON" -c 'import socket, sys
for port in sys.argv[1:]:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the daemons do
        try:
            s.bind(("127.0.0.1", int(port)))
        except OSError:
            print(port, end=" ")' "$@")
    [ -z "$busy" ] || { log "port(s) ${busy% } on 127.0.0.1 already in use (choose another PORT_BASE)"; exit 3; }
}
dovecot_ports() { echo "$IMAP_PORT"; [ "$MAIL_TLS" = 0 ] || echo "$IMAPS_PORT"; }
postfix_ports() { echo "$SMTP_PORT"; [ "$MAIL_TLS" = 0 ] || echo "$SMTPS_PORT"; }

imap_login_ok() { # PORT USER PW -> 0 LOGIN OK, 2 LOGIN refused, 1 not answering yet
    local fd line
    # NB: "exec {fd}<>... 2>/dev/null" would silence the whole script's stderr for good
    { exec {fd}<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    if read -r -t 2 line <&"$fd" && [[ $line == "* OK"* ]]; then
        printf 'r1 LOGIN "%s" "%s"\r\nr2 LOGOUT\r\n' "$2" "$3" >&"$fd"
        while read -r -t 2 line <&"$fd"; do
            case $line in
                "r1 OK"*) exec {fd}>&-; return 0 ;;
                "r1 "*) exec {fd}>&-; return 2 ;;
            esac
        done
    fi
    exec {fd}>&-
    return 1
}

smtp_banner_ok() { # PORT
    local fd line rc=1
    { exec {fd}<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    if read -r -t 2 line <&"$fd" && [[ $line == 220* ]]; then
        printf 'QUIT\r\n' >&"$fd"; read -r -t 2 line <&"$fd" || true; rc=0
    fi
    exec {fd}>&-
    return $rc
}

# ---------------------------------------------------------------- configuration
setup() { # DIR [start]
    [ -n "${1:-}" ] || die "missing DIR (usage: $PROG COMMAND DIR ...)"
    [ "$(id -u)" = 0 ] || die "must run as root (Postfix's master(8) refuses other users)"
    if [ "${2:-}" = start ]; then mkdir -p "$1"; fi
    [ -d "$1" ] || die "no such directory: $1"
    D=$(cd "$1" && pwd -P)
    # the longest unix socket is DIR/run/dovecot/token-login/imap-urlauth (DIR + 37)
    [ ${#D} -le 70 ] || die "DIR too long (${#D} > 70 chars, unix socket paths): use \$(mktemp -d /tmp/msd.XXXXXX)"
    DCONF=$D/etc/dovecot.conf
    # shellcheck source=/dev/null
    if [ "${2:-}" != start ] && [ -s "$D/etc/instance.env" ]; then . "$D/etc/instance.env"; fi
    if ! [[ $PORT_BASE =~ ^[0-9]+$ ]] || [ "$PORT_BASE" -lt 1024 ] || [ "$PORT_BASE" -gt 64500 ]; then
        die "PORT_BASE must be a number in 1024..64500"
    fi
    [ "$MAIL_TLS" = 0 ] || [ "$MAIL_TLS" = 1 ] || die "MAIL_TLS must be 0 or 1"
    [ "$MAIL_OAUTH" = 0 ] || [ "$MAIL_OAUTH" = 1 ] || die "MAIL_OAUTH must be 0 or 1"
    IMAP_PORT=$((PORT_BASE + 143)) IMAPS_PORT=$((PORT_BASE + 993))
    SMTP_PORT=$((PORT_BASE + 25)) SMTPS_PORT=$((PORT_BASE + 465))
}

check_binaries() {
    local f missing=()
    for f in /usr/sbin/dovecot /usr/bin/doveadm /usr/lib/dovecot/{imap,imap-login,lmtp} \
        "$PF_MASTER" /usr/sbin/postqueue /usr/bin/openssl /usr/bin/setpriv "$PYTHON"; do
        [ -x "$f" ] || missing+=("$f")
    done
    [ ${#missing[@]} = 0 ] || die "missing ${missing[*]}: install the Debian packages with scripts/system-packages.sh (as root)"
    if ! getent passwd postfix dovecot dovenull >/dev/null || ! getent group postdrop >/dev/null; then
        die "users postfix/dovecot/dovenull or group postdrop missing: reinstall with scripts/system-packages.sh"
    fi
}

make_tls() { # test CA + server cert: EC P-256, SAN localhost/127.0.0.1/::1
    local t=$D/tls
    [ -s "$t/server.pem" ] && [ -s "$t/ca.pem" ] && return 0
    mkdir -p "$t"
    (
        cd "$t"
        umask 077
        openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
            -keyout ca.key -out ca.pem -days 3650 -subj "/CN=mailsocketd test CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" -addext "subjectKeyIdentifier=hash"
        openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
            -keyout server.key -out server.csr -subj "/CN=localhost"
        # these extensions pass Python's VERIFY_X509_STRICT (on by default from 3.13)
        printf '%s\n' "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
            "subjectAltName=DNS:localhost,DNS:mail.$MAIL_DOMAIN,IP:127.0.0.1,IP:::1" \
            "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid,issuer" >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -days 825 -sha256 -extfile server.ext -out server.pem
        rm -f server.csr server.ext ca.srl
        chmod 644 ca.pem server.pem
    ) >/dev/null 2>"$D/log/openssl.log" || { cat "$D/log/openssl.log" >&2; die "openssl failed"; }
}

write_users() { # passwd-file for Dovecot, recipient table for Postfix
    local entry u
    : >"$D/etc/users.tmp"
    : >"$D/etc/vmailbox"
    for entry in $MAIL_USERS; do
        u=${entry%%:*}
        # user:password:uid:gid:gecos:home:shell:extra
        printf '%s:{PLAIN}%s:%s:%s::%s::\n' "$u" "${entry#*:}" "$MUID" "$MGID" "$D/mail/$u" >>"$D/etc/users.tmp"
        printf '%s@%s x\n%s@localhost x\n' "$u" "$MAIL_DOMAIN" "$u" >>"$D/etc/vmailbox"
        mkdir -p "$D/mail/$u"
        chown "$MUID:$MGID" "$D/mail/$u"; chmod 700 "$D/mail/$u"
    done
    # Dovecot's auth process runs as user dovecot, not root
    chgrp dovecot "$D/etc/users.tmp"; chmod 640 "$D/etc/users.tmp"; mv "$D/etc/users.tmp" "$D/etc/users"
}

write_oauth() { # MAIL_OAUTH=1: the HMAC key for Dovecot's local JWT validation, oauth2 passdb args
    case $OAUTH_ALG in HS256 | HS384 | HS512) ;; *) die "OAUTH_ALG must be HS256, HS384 or HS512" ;; esac
    [[ $OAUTH_KID =~ ^[A-Za-z0-9_-][A-Za-z0-9._-]*$ ]] || die "OAUTH_KID: letters, digits, '.', '_', '-' only"
    [[ $OAUTH_ISSUER =~ ^[^[:space:]\"\']+$ ]] || die "OAUTH_ISSUER must not contain spaces or quotes"
    [[ $OAUTH_USER_CLAIM =~ ^[A-Za-z0-9_.:-]+$ ]] || die "OAUTH_USER_CLAIM: a plain claim name"
    # Dovecot 2.3 looks the key up in local_validation_key_dict under
    # shared/<azp claim, or "default">/<alg>/<kid, or "default">, which dict fs:posix maps to
    # the file <prefix><azp>/<alg>/<kid>, holding the base64 of the raw HMAC secret. Kept
    # across restarts of the same DIR, so tokens minted earlier stay valid.
    local kd=$D/etc/oauth2-keys
    OAUTH_KEY_FILE=$kd/default/$OAUTH_ALG/$OAUTH_KID
    if [ ! -s "$OAUTH_KEY_FILE" ]; then
        mkdir -p "${OAUTH_KEY_FILE%/*}"
        openssl rand -base64 64 | tr -d '\n' >"$OAUTH_KEY_FILE.tmp" || die "openssl rand failed"
        mv "$OAUTH_KEY_FILE.tmp" "$OAUTH_KEY_FILE"
    fi
    # Dovecot's auth process (user dovecot) reads the key
    chgrp -R dovecot "$kd"
    find "$kd" -type d -exec chmod 750 {} +
    chmod 640 "$OAUTH_KEY_FILE"
    cat >"$D/etc/dovecot-oauth2.conf.ext" <<EOF
# generated by mailserver.sh (MAIL_OAUTH=1): oauth2 passdb, JWT validated locally, no network
introspection_mode = local
local_validation_key_dict = fs:posix:prefix=$kd/
issuers = $OAUTH_ISSUER
username_attribute = $OAUTH_USER_CLAIM
# "alice" (the SASL user, after auth_username_format) and "alice@$MAIL_DOMAIN" (the claim) match
username_format = %Ln
EOF
    chgrp dovecot "$D/etc/dovecot-oauth2.conf.ext"; chmod 640 "$D/etc/dovecot-oauth2.conf.ext"
}

write_dovecot_conf() {
    local ssl="ssl = no" imaps_port=0 mechs="plain login" pw_mechs="" oauth_passdb=""
    if [ "$MAIL_OAUTH" = 1 ]; then
        # two passdbs, each for its own SASL mechanisms: a token is never compared with a
        # password nor the other way round ("none": lookups without one, doveadm auth lookup);
        # auth_verbose logs why a token was refused ("Local validation failed: Token has expired")
        mechs="plain login oauthbearer xoauth2
auth_verbose = yes"
        pw_mechs="
  mechanisms = plain login none"
        oauth_passdb="
passdb {
  driver = oauth2
  mechanisms = oauthbearer xoauth2
  args = $D/etc/dovecot-oauth2.conf.ext
}"
    fi
    if [ "$MAIL_TLS" = 1 ]; then
        imaps_port=$IMAPS_PORT
        ssl="ssl = yes
ssl_cert = <$D/tls/server.pem
ssl_key = <$D/tls/server.key
ssl_min_protocol = TLSv1.2"
    fi
    cat >"$DCONF" <<EOF
# generated by mailserver.sh - standalone, does not read /etc/dovecot
instance_name = mailtest-$(printf '%s' "$D" | cksum | cut -d' ' -f1)
base_dir = $D/run/dovecot
state_dir = $D/state/dovecot
protocols = imap lmtp
listen = 127.0.0.1
hostname = mail.$MAIL_DOMAIN
log_path = $D/log/dovecot.log
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = 1
$ssl
disable_plaintext_auth = no
auth_mechanisms = $mechs
# alice@$MAIL_DOMAIN (an LMTP recipient) and alice are the same user
auth_username_format = %Ln
auth_failure_delay = 0
# mailsocketd forwards its line clients' addresses with ID (x-originating-ip): believed from here
login_trusted_networks = 127.0.0.0/8
mail_location = maildir:~/Maildir
mail_fsync = never
mail_max_userip_connections = 1000
default_process_limit = 1000
default_client_limit = 4000
passdb {
  driver = passwd-file
  args = $D/etc/users$pw_mechs
}$oauth_passdb
userdb {
  driver = passwd-file
  args = $D/etc/users
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $imaps_port
    ssl = yes
  }
  # reuse login processes instead of one fork per connection
  service_count = 0
  process_min_avail = 1
}
service lmtp {
  unix_listener lmtp {
    mode = 0600
    user = postfix
  }
}
service auth {
  unix_listener auth-postfix {
    mode = 0600
    user = postfix
  }
}
# anvil's auth penalty delays every login from an IP that recently failed one
# (2, 4, 8 .. 15 s), good ones included: an unusable socket disables it
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
EOF
}

write_postfix_conf() {
    local pf=$D/postfix tls="" smtps=""
    if [ "$MAIL_TLS" = 1 ]; then
        tls="smtpd_tls_cert_file = $D/tls/server.pem
smtpd_tls_key_file = $D/tls/server.key
smtpd_tls_security_level = may"
        smtps="127.0.0.1:$SMTPS_PORT inet n - n - - smtpd -o smtpd_tls_wrappermode=yes"
    fi
    mkdir -p "$pf/etc"
    cat >"$pf/etc/main.cf" <<EOF
# generated by mailserver.sh - standalone Postfix instance (master -c $pf/etc)
compatibility_level = 3.6
queue_directory = $pf/spool
data_directory = $pf/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mail.$MAIL_DOMAIN
mydomain = $MAIL_DOMAIN
myorigin = \$mydomain
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_peername_lookup = no
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
virtual_mailbox_domains = $MAIL_DOMAIN localhost
virtual_mailbox_maps = texthash:$D/etc/vmailbox
virtual_transport = lmtp:unix:$D/run/dovecot/lmtp
local_transport = error:local delivery disabled
default_transport = error:outbound delivery disabled
relay_transport = error:outbound delivery disabled
alias_maps =
alias_database =
biff = no
smtputf8_enable = no
in_flow_delay = 0s
# mail deferred while Dovecot is down is retried every second
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = $D/run/dovecot/auth-postfix
# Postfix reports errors only to a tty or syslog: log to a file
maillog_file = $D/log/postfix.log
maillog_file_prefixes = $D/log
$tls
EOF
    cat >"$pf/etc/master.cf" <<EOF
# generated by mailserver.sh - no chroot, loopback only
127.0.0.1:$SMTP_PORT inet n - n - - smtpd
$smtps
pickup     unix  n - n 60    1 pickup
cleanup    unix  n - n -     0 cleanup
qmgr       unix  n - n 300   1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n -     - trivial-rewrite
bounce     unix  - - n -     0 bounce
defer      unix  - - n -     0 bounce
trace      unix  - - n -     0 bounce
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -     - proxymap
error      unix  - - n -     - error
retry      unix  - - n -     - error
lmtp       unix  - - n -     - lmtp
anvil      unix  - - n -     1 anvil
scache     unix  - - n -     1 scache
postlog    unix-dgram n - n - 1 postlogd
EOF
    # Postfix will not read a main.cf/master.cf/texthash table younger than ~1 s (it
    # sleeps and re-reads: +1.8 s per start): backdate what was just written
    touch -d "@$((EPOCHSECONDS - 10))" "$pf/etc/main.cf" "$pf/etc/master.cf" "$D/etc/vmailbox"
    # queue layout as "postfix post-install create-missing" makes it, so that master(8)
    # can be started directly (~20 ms, against ~1.7 s for "postfix start")
    local q=$pf/spool qd
    qd=("$q"/{active,bounce,corrupt,defer,deferred,flush,hold,incoming,private,saved,trace})
    mkdir -p "$q/pid" "$q/maildrop" "$q/public" "$pf/data" "${qd[@]}"
    chown root:root "$q" "$q/pid"; chmod 755 "$q" "$q/pid"
    chown postfix:root "${qd[@]}"; chmod 700 "${qd[@]}" "$pf/data"
    chown postfix:postdrop "$q/maildrop" "$q/public"; chmod 730 "$q/maildrop"; chmod 710 "$q/public"
    chown postfix:postfix "$pf/data"
}

# ---------------------------------------------------------------- starting
# The daemons must not inherit our stdout/stderr: a caller capturing this script's output
# (subprocess.run(capture_output=True), $(...)) would wait for EOF forever.
start_dovecot() { # returns once a real LOGIN works
    local deadline rc u=${MAIL_USERS%% *}
    rm -f "$D/run/dovecot/master.pid"   # stale: Dovecot refuses to start if that pid is alive
    LAUNCHED+=(dovecot)
    # shellcheck disable=SC2046
    dovecot -c "$DCONF" </dev/null >"$D/log/dovecot-startup.log" 2>&1 || {
        check_ports $(dovecot_ports)
        tail -n 20 "$D/log/dovecot-startup.log" >&2
        die "dovecot failed to start (log: $D/log/dovecot.log)"
    }
    record_master dovecot
    deadline=$(($(now_ms) + START_TIMEOUT * 1000))
    while :; do
        rc=0; imap_login_ok "$IMAP_PORT" "${u%%:*}" "${u#*:}" || rc=$?
        [ $rc = 0 ] && break
        [ $rc = 2 ] && die "IMAP LOGIN refused for ${u%%:*}: see $D/log/dovecot.log"
        [ "$(now_ms)" -lt "$deadline" ] || { tail -n 20 "$D/log/dovecot.log" >&2; die "IMAP not ready after ${START_TIMEOUT}s"; }
        sleep 0.005
    done
}

start_postfix() { # returns once the SMTP banner comes
    local deadline
    rm -f "$(pid_file postfix)"
    LAUNCHED+=(postfix)
    # -w: wait until the daemon has initialised; the exit status tells success
    # shellcheck disable=SC2046
    "$PF_MASTER" -c "$D/postfix/etc" -w </dev/null >"$D/log/postfix-startup.log" 2>&1 || {
        check_ports $(postfix_ports)   # master's own errors go to syslog only
        die "postfix master failed to start (for its message: script -qc '$PF_MASTER -c $D/postfix/etc -d' /dev/null)"
    }
    record_master postfix
    deadline=$(($(now_ms) + START_TIMEOUT * 1000))
    until smtp_banner_ok "$SMTP_PORT"; do
        [ "$(now_ms)" -lt "$deadline" ] || { tail -n 20 "$D/log/postfix.log" >&2; die "SMTP not ready after ${START_TIMEOUT}s"; }
        sleep 0.005
    done
}

# A failed or interrupted (SIGTERM) start takes down what it had launched, recorded or
# not yet: the pid files were removed before the launch, so what they name is ours.
on_exit() {
    local rc=$? name
    if [ $rc != 0 ] && [ ${#LAUNCHED[@]} != 0 ]; then
        for name in "${LAUNCHED[@]}"; do
            [ -s "$D/run/$name.id" ] || (START_TIMEOUT=5 record_master "$name") >/dev/null 2>&1 || true
        done
        (stop_services KILL "${LAUNCHED[@]}") >/dev/null 2>&1 || true
    fi
    exit $rc
}
catch_exits() { trap on_exit EXIT; trap 'exit 143' TERM INT HUP; }

cmd_start() {
    setup "${1:-}" start
    check_binaries
    local t0 name; t0=$(now_ms)
    for name in dovecot postfix; do
        ! runs "$name" || die "$name for $D already runs (pid $M_PID): '$PROG stop $D' first"
    done
    stop_services KILL dovecot postfix   # leftovers of a crash
    mkdir -p "$D/etc" "$D/run" "$D/log" "$D/mail" "$D/state/dovecot"
    printf 'PORT_BASE=%q MAIL_TLS=%q MAIL_USERS=%q MAIL_DOMAIN=%q MUID=%q MGID=%q MAIL_OAUTH=%q\n' \
        "$PORT_BASE" "$MAIL_TLS" "$MAIL_USERS" "$MAIL_DOMAIN" "$MUID" "$MGID" "$MAIL_OAUTH" >"$D/etc/instance.env"
    # shellcheck disable=SC2046
    check_ports $(dovecot_ports) $(postfix_ports)
    chmod 711 "$D"   # the mail uid and postfix must traverse DIR (mktemp -d makes it 0700)
    setpriv --reuid="$MUID" --regid="$MGID" --clear-groups -- test -x "$D" ||
        die "uid $MUID cannot reach $D: every parent directory needs o+x (use a DIR under /tmp)"
    if [ "$MAIL_TLS" = 1 ]; then make_tls; else rm -rf "$D/tls"; fi
    write_users
    if [ "$MAIL_OAUTH" = 1 ]; then write_oauth; fi
    write_dovecot_conf
    write_postfix_conf
    local t_cfg; t_cfg=$(now_ms)
    catch_exits
    start_dovecot
    start_postfix
    {
        echo "MAIL_DIR=$D"
        echo "MAIL_HOST=127.0.0.1"
        echo "PORT_BASE=$PORT_BASE"
        echo "MAIL_TLS=$MAIL_TLS"
        echo "IMAP_PORT=$IMAP_PORT"
        echo "SMTP_PORT=$SMTP_PORT"
        [ "$MAIL_TLS" = 0 ] || printf '%s\n' "IMAPS_PORT=$IMAPS_PORT" "SMTPS_PORT=$SMTPS_PORT" "MAIL_CA=$D/tls/ca.pem"
        echo "MAIL_DOMAIN=$MAIL_DOMAIN"
        echo "MAIL_USERS=\"$MAIL_USERS\""
        echo "DOVECOT_CONF=$DCONF"
        echo "DOVECOT_LOG=$D/log/dovecot.log"
        echo "POSTFIX_CONF_DIR=$D/postfix/etc"
        echo "POSTFIX_LOG=$D/log/postfix.log"
        if [ "$MAIL_OAUTH" = 1 ]; then
            printf '%s\n' "MAIL_OAUTH=1" "OAUTH_KEY_FILE=$OAUTH_KEY_FILE" "OAUTH_ALG=$OAUTH_ALG" \
                "OAUTH_KID=$OAUTH_KID" "OAUTH_ISSUER=$OAUTH_ISSUER" "OAUTH_USER_CLAIM=$OAUTH_USER_CLAIM"
        fi
    } >"$D/mail.env"
    log "started in $D: IMAP :$IMAP_PORT SMTP :$SMTP_PORT$([ "$MAIL_TLS" = 0 ] || echo " IMAPS :$IMAPS_PORT SMTPS :$SMTPS_PORT")$([ "$MAIL_OAUTH" = 0 ] || echo " +XOAUTH2/OAUTHBEARER") (config $((t_cfg - t0)) ms, daemons $(($(now_ms) - t_cfg)) ms)"
}

cmd_dovecot_start() {
    setup "$@"
    check_binaries
    [ -s "$DCONF" ] || die "$D is not set up: '$PROG start $D' first"
    ! runs dovecot || die "dovecot for $D already runs (pid $M_PID)"
    stop_services KILL dovecot   # leftovers of a crash (log/auth/stats keep running)
    # shellcheck disable=SC2046
    check_ports $(dovecot_ports)
    local t0; t0=$(now_ms)
    catch_exits
    start_dovecot
    # mail deferred while Dovecot was down: deliver it now, not at Postfix's next retry
    if runs postfix; then postqueue -c "$D/postfix/etc" -f >/dev/null 2>&1 || true; fi
    log "dovecot started in $(($(now_ms) - t0)) ms"
}

cmd_postfix_start() {
    setup "$@"
    check_binaries
    [ -d "$D/postfix/etc" ] || die "$D is not set up: '$PROG start $D' first"
    ! runs postfix || die "postfix for $D already runs (pid $M_PID)"
    stop_services KILL postfix   # leftovers
    # shellcheck disable=SC2046
    check_ports $(postfix_ports)
    local t0; t0=$(now_ms)
    catch_exits
    start_postfix
    log "postfix started in $(($(now_ms) - t0)) ms"
}

cmd_stop() { # SIGNAL DIR NAME...  (Postfix first: nothing is handed to a dying LMTP)
    local sig=$1 t0
    setup "$2"
    shift 2
    t0=$(now_ms)
    stop_services "$sig" "$@"
    log "$* stopped (SIG$sig) in $(($(now_ms) - t0)) ms"
}

cmd_status() {
    setup "$@"
    local name rc=0
    for name in dovecot postfix; do
        if runs "$name"; then echo "$name: running (pid $M_PID)"; continue; fi
        rc=1
        if [ -n "$M_PID" ] && group_alive "$M_PID"; then
            echo "$name: not running, leftover processes in group $M_PID"
        else
            echo "$name: not running"
        fi
    done
    return $rc
}

cmd_clear() {
    [ $# -ge 2 ] || die "usage: $PROG clear DIR USER [MAILBOX]"
    setup "$1"
    runs dovecot || die "dovecot for $D is not running"
    doveadm -c "$DCONF" expunge -u "$2" mailbox "${3:-INBOX}" all
}

cmd_populate() {
    [ $# -ge 3 ] || die "usage: $PROG populate DIR USER N [MAILBOX]"
    setup "$1"
    local user=$2 n=$3 mbox=${4:-INBOX} maildir t0 t1 msg
    [[ $n =~ ^[0-9]+$ ]] || die "N must be a number"
    grep -qs "^$user:" "$D/etc/users" || die "unknown user $user (or $D not set up)"
    maildir=$D/mail/$user/Maildir
    [ "$mbox" = INBOX ] || maildir=$maildir/.$mbox   # Maildir++ layout, '.' separator
    t0=$(now_ms)
    "$PYTHON" - "$maildir" "$n" "$user@$MAIL_DOMAIN" "$MUID" "$MGID" <<'EOF'
import os, sys, time
from email.utils import formatdate
maildir, n, rcpt, uid, gid = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
for d in (os.path.dirname(maildir), maildir, *(os.path.join(maildir, s) for s in ("tmp", "new", "cur"))):
    os.makedirs(d, mode=0o700, exist_ok=True)
    os.chown(d, uid, gid)
if os.path.basename(maildir).startswith("."):  # a folder (not INBOX)
    fd = os.open(os.path.join(maildir, "maildirfolder"), os.O_CREAT | os.O_WRONLY, 0o600)
    os.fchown(fd, uid, gid)
    os.close(fd)
pid, base = os.getpid(), int(time.time()) - n - 1
body = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\n" * 12
for i in range(1, n + 1):
    ts = base + i  # increasing: UID order is message order
    data = (f"Return-Path: <sender{i % 97}@example.org>\nFrom: Sender {i % 97} <sender{i % 97}@example.org>\n"
            f"To: <{rcpt}>\nSubject: Test message {i} of {n}\nDate: {formatdate(ts)}\n"
            f"Message-ID: <populate-{pid}-{base}-{i}@mailserver.sh>\nMIME-Version: 1.0\n"
            f"Content-Type: text/plain; charset=us-ascii\n\nMessage {i}\n{body}").encode()
    # S= size, W= size with CRLF line ends (spares Dovecot the size scans); ":2," = unseen
    name = f"{ts}.M{i}P{pid}Q{i}.populate,S={len(data)},W={len(data) + data.count(10)}:2,"
    fd = os.open(os.path.join(maildir, "tmp", name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, data)
    os.fchown(fd, uid, gid)
    os.close(fd)
    # the Maildir protocol: write in tmp/, then an atomic rename into cur/
    os.rename(os.path.join(maildir, "tmp", name), os.path.join(maildir, "cur", name))
EOF
    t1=$(now_ms)
    msg="wrote $n messages to $user/$mbox in $((t1 - t0)) ms"
    if runs dovecot; then   # let Dovecot sync and index them now, not at the first SELECT
        msg="$msg; doveadm: $(doveadm -c "$DCONF" -f flow mailbox status -u "$user" messages "$mbox") in $(($(now_ms) - t1)) ms"
    fi
    log "$msg"
}

case ${1:-} in
    start) shift; cmd_start "$@" ;;
    stop) cmd_stop TERM "${2:-}" postfix dovecot ;;
    status) shift; cmd_status "$@" ;;
    populate) shift; cmd_populate "$@" ;;
    clear) shift; cmd_clear "$@" ;;
    dovecot-stop) cmd_stop TERM "${2:-}" dovecot ;;
    dovecot-kill) cmd_stop KILL "${2:-}" dovecot ;;
    dovecot-start) shift; cmd_dovecot_start "$@" ;;
    postfix-stop) cmd_stop TERM "${2:-}" postfix ;;
    postfix-start) shift; cmd_postfix_start "$@" ;;
    *) sed -n '2,/^set -e/{/^#/s/^# \{0,1\}//p}' "$0" >&2; exit 2 ;;
esac
