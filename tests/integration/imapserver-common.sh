# imapserver-common.sh - what cyrus.sh and courier.sh share (sourced, not run): messages,
# ports, the test CA, and starting/stopping daemons by the pid they were started with.
#
# A daemon is started in a session (and process group) of its own with setsid; DIR/run/NAME.id
# holds its pid and kernel start time, so a reused pid is never signalled, and stopping it
# waits for its whole process group (the sessions it forked included). Never by name.
# shellcheck shell=bash

PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
PYTHON=/usr/bin/python3
TEST_PKG_CACHE=${TEST_PKG_CACHE:-/var/cache/mailsocketd-tests}  # see scripts/system-packages.sh
START_TIMEOUT=${START_TIMEOUT:-20}

die() { echo "$PROG: error: $*" >&2; exit 1; }
log() { echo "$PROG: $*" >&2; }
now_ms() { local t=${EPOCHREALTIME//[!0-9]/}; echo $((10#$t / 1000)); }

proc_stat() { # PID -> P_STATE P_PGRP P_START (start time, clock ticks)
    local s f
    { read -r s <"/proc/$1/stat"; } 2>/dev/null || return 1
    read -ra f <<<"${s##*) }"
    P_STATE=${f[0]} P_PGRP=${f[2]} P_START=${f[19]}
}

# launch NAME COMMAND...: run COMMAND in a new session (its own process group), output to
# DIR/log/NAME.log, and record it in DIR/run/NAME.id
launch() {
    local name=$1 pid
    shift
    setsid "$@" </dev/null >>"$D/log/$name.log" 2>&1 &
    pid=$!
    # setsid forks only when its caller leads a process group; here it execs in place
    proc_stat "$pid" || die "$name exited at once: $(tail -n 5 "$D/log/$name.log")"
    echo "$pid $P_START" >"$D/run/$name.id"
}

# daemon_pid NAME: D_PID = the recorded pid if it still is our process (same start time)
# or a process group of that number may remain; D_RUNS=1 if it runs (a zombie is gone)
daemon_pid() {
    local start
    D_PID='' D_RUNS=0
    { read -r D_PID start <"$D/run/$1.id"; } 2>/dev/null || return 1
    if proc_stat "$D_PID"; then
        [ "$P_START" = "$start" ] || { D_PID=; return 1; }
        [ "$P_STATE" = Z ] || D_RUNS=1
    fi
}
daemon_runs() { daemon_pid "$1" && [ "$D_RUNS" = 1 ]; }

group_alive() { # PGID: is any process of the group left (zombies aside)?
    local f s a
    for f in /proc/[0-9]*/stat; do
        { read -r s <"$f"; } 2>/dev/null || continue
        read -ra a <<<"${s##*) }"
        [ "${a[2]}" = "$1" ] && [ "${a[0]}" != Z ] && return 0
    done
    return 1
}

# stop_daemons SIGNAL NAME...: signal each daemon, wait until it and its process group are
# gone; SIGKILL to the group when it outlives a SIGTERM by 5 s (at once after SIGKILL)
stop_daemons() {
    local sig=$1 name pg t0 grace=5000 todo=()
    shift
    [ "$sig" = KILL ] && grace=0
    for name in "$@"; do
        daemon_pid "$name" || { rm -f "$D/run/$name.id"; continue; }
        todo+=("$name:$D_PID")
        if [ "$D_RUNS" = 1 ]; then kill "-$sig" "$D_PID" 2>/dev/null || true; fi
        [ "$sig" = KILL ] && kill -KILL -- "-$D_PID" 2>/dev/null || true
    done
    for name in "${todo[@]}"; do
        pg=${name#*:} name=${name%%:*} t0=$(now_ms)
        while group_alive "$pg"; do
            if [ $(($(now_ms) - t0)) -ge $grace ]; then
                kill -KILL -- "-$pg" 2>/dev/null || true
                [ $(($(now_ms) - t0)) -lt $((grace + 10000)) ] || die "process group $pg ($name) does not die"
            fi
            sleep 0.01
        done
        rm -f "$D/run/$name.id"
    done
}

# check_ports PORT...: exit 3 unless all can be bound on 127.0.0.1
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
    [ -z "$busy" ] || { log "port(s) ${busy% } on 127.0.0.1 already in use"; exit 3; }
}

# imap_greets PORT: the server on PORT sends its "* OK" greeting
imap_greets() {
    local fd line
    { exec {fd}<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    if read -r -t 2 line <&"$fd" && [[ $line == "* OK"* ]]; then
        printf 'g1 LOGOUT\r\n' >&"$fd"
        exec {fd}>&-
        return 0
    fi
    exec {fd}>&-
    return 1
}
# port_open PORT: something accepts connections on PORT (an IMAPS port says nothing first)
port_open() {
    local fd
    { exec {fd}<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    exec {fd}>&-
}
# wait_ready PORT LOGFILE [tls]: IMAP greets (with tls: the port accepts) within START_TIMEOUT
wait_ready() {
    local deadline=$(($(now_ms) + START_TIMEOUT * 1000)) probe=imap_greets
    [ "${3:-}" = tls ] && probe=port_open
    until "$probe" "$1"; do
        [ "$(now_ms)" -lt "$deadline" ] || { tail -n 20 "$2" >&2; die "no IMAP greeting on port $1 after ${START_TIMEOUT}s"; }
        sleep 0.02
    done
}

# make_tls: a test CA and a server certificate (EC P-256; SAN localhost, 127.0.0.1, ::1)
# in DIR/tls, as mailserver.sh makes them; and other-ca.pem, a CA that signed nothing here
make_tls() {
    local t=$D/tls
    [ -s "$t/server.pem" ] && [ -s "$t/ca.pem" ] && return 0
    mkdir -p "$t"
    (
        cd "$t"
        umask 077
        openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
            -keyout ca.key -out ca.pem -days 3650 -subj "/CN=mailsocketd test CA ($SERVER)" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" -addext "subjectKeyIdentifier=hash"
        openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
            -keyout other-ca.key -out other-ca.pem -days 3650 -subj "/CN=another test CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" -addext "subjectKeyIdentifier=hash"
        openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
            -keyout server.key -out server.csr -subj "/CN=localhost"
        # these extensions pass Python's VERIFY_X509_STRICT (on by default from 3.13)
        printf '%s\n' "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
            "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
            "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid,issuer" >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -days 825 -sha256 -extfile server.ext -out server.pem
        rm -f server.csr server.ext ca.srl
        chmod 644 ca.pem other-ca.pem server.pem
    ) >/dev/null 2>"$D/log/openssl.log" || { cat "$D/log/openssl.log" >&2; die "openssl failed"; }
}

# setup_dir DIR [start]: D = the absolute DIR (made by start), at most MAX_DIR characters
setup_dir() {
    [ -n "${1:-}" ] || die "missing DIR (usage: $PROG COMMAND DIR ...)"
    [ "$(id -u)" = 0 ] || die "must run as root"
    if [ "${2:-}" = start ]; then mkdir -p "$1"; fi
    [ -d "$1" ] || die "no such directory: $1"
    D=$(cd "$1" && pwd -P)
    [ ${#D} -le "$MAX_DIR" ] || die "DIR too long (${#D} > $MAX_DIR chars, unix socket paths): use \$(mktemp -d /tmp/msd.XXXXXX)"
    mkdir -p "$D/run" "$D/log"
}

# load_settings DIR [start]: D = DIR, and the instance's settings: those saved in
# DIR/instance.env, or (a first start) the defaults, the common ones here and the server's own
# (its instance_defaults function, which names them in INSTANCE_SETTINGS), saved there
load_settings() {
    setup_dir "$@"
    if [ "${2:-}" != start ] || [ -s "$D/instance.env" ]; then
        [ -s "$D/instance.env" ] || die "$D was not set up by $PROG start"
        # shellcheck source=/dev/null
        . "$D/instance.env"
        return 0
    fi
    IMAP_PORT=${IMAP_PORT:-10143} IMAPS_PORT=${IMAPS_PORT:-10993}
    MAIL_USERS=${MAIL_USERS:-"alice:pw bob:pw"}
    NO_IDLE=${NO_IDLE:-0} NO_UIDPLUS=${NO_UIDPLUS:-0}
    INSTANCE_SETTINGS=()
    instance_defaults
    save_env "$D/instance.env" IMAP_PORT IMAPS_PORT MAIL_USERS NO_IDLE NO_UIDPLUS \
        "${INSTANCE_SETTINGS[@]}"
    chmod 600 "$D/instance.env"
}

# save_env FILE VAR...: the variables as KEY=VALUE lines (read back by ". FILE")
save_env() {
    local file=$1 v
    shift
    for v in "$@"; do printf '%s=%q\n' "$v" "${!v}"; done >"$file.tmp"
    mv "$file.tmp" "$file"
}
