/* Benchmark anchor, copied unchanged from the anchor set of issue 5 (../shared/anchors/ beside the repository); only this header comment was added. */
/*
 * loadgen.c - small single-threaded epoll load generator for line protocols.
 *
 *   loadgen HOST PORT CONNS SECONDS [--pipeline K] [--cmd time]
 *           [--newline crlf|lf|none] [--connect-rate] [--idle N]
 *           [--inflight M] [--setup-timeout S] [--stall S] [--warmup W]
 *
 * Default (request/reply) mode: opens CONNS connections (at most M connects in
 * flight, default 16), does one warm-up request on each (so the server has
 * really accepted it), then for SECONDS every connection repeatedly sends K
 * commands in one write and waits for K replies (closed loop).  A reply is
 * complete when a '\n' is received; with --newline none the command is sent
 * without terminator and any received bytes complete the reply (for the seed
 * PHP servers, which answer `time` with no newline; pipelining is impossible
 * there, so K is forced to 1).  Latency = batch send -> reply received.
 *
 * --connect-rate: CONNS workers, each sequentially: connect, send one command,
 *   read the reply, close.  reqs/rps count whole connections; latency is
 *   connect() start -> reply received.
 *
 * --idle N: opens N connections (one warm-up request each, so the server has
 *   accepted and served them), prints an "idle_ready" line, holds them idle for
 *   SECONDS, then closes them and prints the result line.  CONNS is ignored.
 *
 * --warmup W: run the same load W seconds before the measured SECONDS (rr and
 *   connect-rate modes); counters, histogram and CPU samples restart after it.
 *
 * Everything is bounded: setup phase <= --setup-timeout (default 30 s) and
 * gives up after --stall seconds without progress (default 5 s); the measured
 * phase ends after SECONDS.
 *
 * Output (one line, extra fields after the required ones):
 *   conns=.. secs=.. reqs=.. rps=.. p50_us=.. p99_us=.. errors=.. ok=..
 *   setup_ms=.. cpu0=..% cpu1=..% steal=..% mode=..
 * cpu0/cpu1 = busy share of those CPUs during the measured phase, from
 * /proc/stat (the run script pins the server on CPU 0, loadgen on CPU 1);
 * steal = hypervisor steal time, both CPUs (noise indicator).
 *
 * Build: gcc -O2 -o loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { NL_CRLF, NL_LF, NL_NONE };
enum { MODE_RR, MODE_CONNRATE, MODE_IDLE };
enum { S_FREE, S_CONNECTING, S_WARM, S_READY, S_RUN, S_DEAD, S_RETRY };

struct conn {
    int fd;
    int state;
    int outstanding;
    uint64_t tsend;   /* ns */
};

static struct sockaddr_in addr;
static int nlmode = NL_CRLF, mode = MODE_RR, pipeline = 1;
static const char *cmd = "time";
static char req1[256], reqk[8192];
static int req1len, reqklen;
static int epfd;
static uint64_t nerr;
static double warmup = 0; /* seconds of unmeasured load before the measured phase */

/* ---------- latency histogram (log-linear, ~0.2% resolution) ---------- */
#define SUB_BITS 9
#define SUB (1 << SUB_BITS)
#define NBUCKETS ((64 - SUB_BITS) * SUB + SUB)
static uint64_t hist[NBUCKETS];
static uint64_t hcount;

static inline int bidx(uint64_t v) {
    if (v < SUB) return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - SUB_BITS;
    return (shift + 1) * SUB + (int)((v >> shift) - SUB);
}
static double bval(int i) { /* midpoint of bucket */
    if (i < SUB) return i;
    int shift = i / SUB - 1;
    uint64_t lo = (uint64_t)(i % SUB + SUB) << shift;
    return lo + ((1ULL << shift) - 1) / 2.0;
}
static inline void hrec(uint64_t ns) { hist[bidx(ns / 1000)]++; hcount++; }
static double hpct(double p) {
    if (!hcount) return 0;
    uint64_t target = (uint64_t)(p * hcount);
    if (target < 1) target = 1;
    uint64_t c = 0;
    for (int i = 0; i < NBUCKETS; i++) {
        c += hist[i];
        if (c >= target) return bval(i);
    }
    return 0;
}

static void hreset(void) { memset(hist, 0, sizeof hist); hcount = 0; }

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/* ---------- /proc/stat per-CPU busy ---------- */
struct cpus { unsigned long long busy[2], total[2], steal[2]; };
static void read_cpus(struct cpus *c) {
    memset(c, 0, sizeof *c);
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        int id;
        unsigned long long u, n, s, idle, iow, irq, sirq, st;
        if (sscanf(line, "cpu%d %llu %llu %llu %llu %llu %llu %llu %llu", &id, &u, &n, &s,
                   &idle, &iow, &irq, &sirq, &st) == 9 && id >= 0 && id < 2) {
            c->total[id] = u + n + s + idle + iow + irq + sirq + st;
            c->busy[id] = u + n + s + irq + sirq; /* steal (hypervisor) is not our work */
            c->steal[id] = st;
        }
    }
    fclose(f);
}
static double cpu_pct(struct cpus *a, struct cpus *b, int id) {
    unsigned long long t = b->total[id] - a->total[id];
    return t ? 100.0 * (b->busy[id] - a->busy[id]) / t : 0;
}
static double steal_pct(struct cpus *a, struct cpus *b) {
    unsigned long long t = b->total[0] - a->total[0] + b->total[1] - a->total[1];
    return t ? 100.0 * (b->steal[0] - a->steal[0] + b->steal[1] - a->steal[1]) / t : 0;
}

/* ---------- socket helpers ---------- */
static int open_conn(struct conn *c, int idx) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { nerr++; return -1; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int r = connect(fd, (struct sockaddr *)&addr, sizeof addr);
    if (r < 0 && errno != EINPROGRESS) { close(fd); nerr++; return -1; }
    struct epoll_event ev = { .events = EPOLLOUT, .data.u32 = (uint32_t)idx };
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) { close(fd); nerr++; return -1; }
    c->fd = fd;
    c->state = S_CONNECTING;
    c->outstanding = 0;
    c->tsend = now_ns();
    return 0;
}

static void kill_conn(struct conn *c, int err) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->state = S_DEAD;
    if (err) nerr++;
}

static int set_events(struct conn *c, int idx, uint32_t events) {
    struct epoll_event ev = { .events = events, .data.u32 = (uint32_t)idx };
    return epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static int send_buf(struct conn *c, const char *buf, int len) {
    ssize_t w = send(c->fd, buf, len, MSG_NOSIGNAL);
    return w == len ? 0 : -1; /* closed loop, tiny requests: a short write is an error */
}

/* Connection finished connecting (EPOLLOUT): check result, send one command. */
static int on_connected(struct conn *c, int idx) {
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err) return -1;
    if (set_events(c, idx, EPOLLIN) < 0) return -1;
    if (send_buf(c, req1, req1len) < 0) return -1;
    c->outstanding = 1;
    return 0;
}

/* Read what is available; returns number of completed replies, -1 on EOF/error. */
static char rbuf[65536];
static int read_replies(struct conn *c) {
    ssize_t n = recv(c->fd, rbuf, sizeof rbuf, 0);
    if (n == 0) return -1;
    if (n < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
    if (nlmode == NL_NONE) return 1;
    int k = 0;
    char *p = rbuf, *e = rbuf + n;
    while ((p = memchr(p, '\n', e - p)) != NULL) { k++; p++; }
    return k;
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen HOST PORT CONNS SECONDS [--pipeline K] [--cmd time]\n"
            "       [--newline crlf|lf|none] [--connect-rate] [--idle N]\n"
            "       [--inflight M] [--setup-timeout S] [--stall S] [--warmup W]\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 5) usage();
    const char *host = argv[1];
    int port = atoi(argv[2]);
    int nconns = atoi(argv[3]);
    double secs = atof(argv[4]);
    int idle_n = 0, inflight_max = 16;
    double setup_timeout = 30, stall = 5;
    for (int i = 5; i < argc; i++) {
        if (!strcmp(argv[i], "--pipeline") && i + 1 < argc) pipeline = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--cmd") && i + 1 < argc) cmd = argv[++i];
        else if (!strcmp(argv[i], "--newline") && i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(v, "crlf")) nlmode = NL_CRLF;
            else if (!strcmp(v, "lf")) nlmode = NL_LF;
            else if (!strcmp(v, "none")) nlmode = NL_NONE;
            else usage();
        } else if (!strcmp(argv[i], "--connect-rate")) mode = MODE_CONNRATE;
        else if (!strcmp(argv[i], "--idle") && i + 1 < argc) { mode = MODE_IDLE; idle_n = atoi(argv[++i]); }
        else if (!strcmp(argv[i], "--inflight") && i + 1 < argc) inflight_max = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--setup-timeout") && i + 1 < argc) setup_timeout = atof(argv[++i]);
        else if (!strcmp(argv[i], "--stall") && i + 1 < argc) stall = atof(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warmup = atof(argv[++i]);
        else usage();
    }
    if (mode == MODE_IDLE) nconns = idle_n;
    if (nconns < 1 || secs <= 0 || port <= 0 || inflight_max < 1) usage();
    if (pipeline < 1) pipeline = 1;
    if (nlmode == NL_NONE && pipeline > 1) {
        fprintf(stderr, "loadgen: --newline none cannot delimit pipelined replies; using --pipeline 1\n");
        pipeline = 1;
    }

    /* fds: raise soft limit to the hard limit */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) { fprintf(stderr, "bad host %s\n", host); return 2; }

    const char *term = nlmode == NL_CRLF ? "\r\n" : nlmode == NL_LF ? "\n" : "";
    req1len = snprintf(req1, sizeof req1, "%s%s", cmd, term);
    reqklen = 0;
    for (int i = 0; i < pipeline; i++) {
        if (reqklen + req1len > (int)sizeof reqk) { fprintf(stderr, "pipeline too deep\n"); return 2; }
        memcpy(reqk + reqklen, req1, req1len);
        reqklen += req1len;
    }

    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct conn *cs = calloc(nconns, sizeof *cs);
    for (int i = 0; i < nconns; i++) { cs[i].fd = -1; cs[i].state = S_FREE; }
    struct epoll_event evs[1024];

    uint64_t reqs = 0;
    int ok = 0;
    double setup_ms = 0;
    struct cpus c0, c1;
    uint64_t t0, t1;

    if (mode == MODE_RR || mode == MODE_IDLE) {
        /* ---- setup: connect + one warm-up request per connection ---- */
        uint64_t ts = now_ns(), deadline = ts + (uint64_t)(setup_timeout * 1e9);
        uint64_t last_progress = ts;
        int next = 0, inflight = 0, done = 0; /* done = ready + dead */
        while (done < nconns) {
            while (inflight < inflight_max && next < nconns) {
                if (open_conn(&cs[next], next) == 0) inflight++;
                else { cs[next].state = S_DEAD; done++; }
                next++;
            }
            uint64_t now = now_ns();
            if (now >= deadline || now - last_progress > (uint64_t)(stall * 1e9)) break;
            int n = epoll_wait(epfd, evs, 1024, 100);
            for (int i = 0; i < n; i++) {
                int idx = evs[i].data.u32;
                struct conn *c = &cs[idx];
                if (c->state == S_CONNECTING) {
                    if (on_connected(c, idx) < 0) { kill_conn(c, 1); inflight--; done++; last_progress = now_ns(); }
                    else c->state = S_WARM;
                } else if (c->state == S_WARM) {
                    int k = read_replies(c);
                    if (k < 0) { kill_conn(c, 1); inflight--; done++; last_progress = now_ns(); }
                    else if (k > 0) { c->state = S_READY; c->outstanding = 0; inflight--; done++; ok++; last_progress = now_ns(); }
                } else if (c->state == S_READY) {
                    /* unexpected data or EOF while waiting: drain / detect close */
                    int k = read_replies(c);
                    if (k < 0) { kill_conn(c, 1); ok--; }
                }
            }
        }
        /* connections that never completed setup are dropped and counted as errors */
        for (int i = 0; i < nconns; i++)
            if (cs[i].state == S_CONNECTING || cs[i].state == S_WARM) kill_conn(&cs[i], 1);
            else if (cs[i].state == S_FREE) { cs[i].state = S_DEAD; nerr++; }
        setup_ms = (now_ns() - ts) / 1e6;
    }

    if (mode == MODE_IDLE) {
        printf("idle_ready conns=%d ok=%d setup_ms=%.0f errors=%llu\n", nconns, ok, setup_ms,
               (unsigned long long)nerr);
        fflush(stdout);
        read_cpus(&c0);
        t0 = now_ns();
        uint64_t tend = t0 + (uint64_t)(secs * 1e9);
        int dropped = 0;
        for (;;) {
            uint64_t now = now_ns();
            if (now >= tend) break;
            int ms = (int)((tend - now) / 1000000) + 1;
            int n = epoll_wait(epfd, evs, 1024, ms);
            for (int i = 0; i < n; i++) {
                struct conn *c = &cs[evs[i].data.u32];
                if (c->state != S_READY) continue;
                if (read_replies(c) < 0) { kill_conn(c, 1); dropped++; }
            }
        }
        t1 = now_ns();
        read_cpus(&c1);
        for (int i = 0; i < nconns; i++) if (cs[i].fd >= 0) close(cs[i].fd);
        printf("conns=%d secs=%.2f reqs=0 rps=0 p50_us=0 p99_us=0 errors=%llu ok=%d setup_ms=%.0f "
               "cpu0=%.0f%% cpu1=%.0f%% steal=%.1f%% mode=idle dropped=%d\n",
               nconns, (t1 - t0) / 1e9, (unsigned long long)nerr, ok - dropped, setup_ms,
               cpu_pct(&c0, &c1, 0), cpu_pct(&c0, &c1, 1), steal_pct(&c0, &c1), dropped);
        return 0;
    }

    /* measured phase starts after --warmup seconds of identical, unrecorded load */
    int measuring = warmup <= 0;
    uint64_t tstart = now_ns();
    uint64_t twarm = tstart + (uint64_t)(warmup * 1e9);
    uint64_t tend = twarm + (uint64_t)(secs * 1e9);
    t0 = tstart;
    read_cpus(&c0);
#define WARM_CHECK(now)                                                          \
    do {                                                                         \
        if (!measuring && (now) >= twarm) {                                      \
            measuring = 1; hreset(); reqs = 0; read_cpus(&c0); t0 = (now);       \
        }                                                                        \
    } while (0)

    if (mode == MODE_RR) {
        for (int i = 0; i < nconns; i++) {
            struct conn *c = &cs[i];
            if (c->state != S_READY) continue;
            c->tsend = now_ns();
            if (send_buf(c, reqk, reqklen) < 0) { kill_conn(c, 1); continue; }
            c->outstanding = pipeline;
            c->state = S_RUN;
        }
        for (;;) {
            uint64_t now = now_ns();
            if (now >= tend) break;
            WARM_CHECK(now);
            int ms = (int)(((measuring ? tend : twarm) - now) / 1000000) + 1;
            int n = epoll_wait(epfd, evs, 1024, ms);
            for (int i = 0; i < n; i++) {
                struct conn *c = &cs[evs[i].data.u32];
                if (c->state != S_RUN) continue;
                int k = read_replies(c);
                if (k < 0) { kill_conn(c, 1); continue; }
                if (k == 0) continue;
                uint64_t tr = now_ns();
                if (k > c->outstanding) { nerr++; k = c->outstanding; } /* unexpected extra lines */
                for (int j = 0; j < k; j++) hrec(tr - c->tsend);
                reqs += k;
                c->outstanding -= k;
                if (c->outstanding == 0 && tr < tend) {
                    c->tsend = tr;
                    if (send_buf(c, reqk, reqklen) < 0) { kill_conn(c, 1); continue; }
                    c->outstanding = pipeline;
                }
            }
        }
        t1 = now_ns();
        read_cpus(&c1);
        for (int i = 0; i < nconns; i++) if (cs[i].fd >= 0) close(cs[i].fd);
    } else { /* MODE_CONNRATE */
        int nretry = 0;
        for (int i = 0; i < nconns; i++) {
            if (open_conn(&cs[i], i) == 0) ok++;
            else { cs[i].state = S_RETRY; nretry++; }
        }
        for (;;) {
            uint64_t now = now_ns();
            if (now >= tend) break;
            WARM_CHECK(now);
            int ms = (int)(((measuring ? tend : twarm) - now) / 1000000) + 1;
            if (nretry && ms > 1) ms = 1;
            int n = epoll_wait(epfd, evs, 1024, ms);
            for (int i = 0; i < n; i++) {
                int idx = evs[i].data.u32;
                struct conn *c = &cs[idx];
                if (c->state == S_CONNECTING) {
                    if (on_connected(c, idx) < 0) { kill_conn(c, 1); c->state = S_RETRY; nretry++; }
                    else c->state = S_WARM;
                } else if (c->state == S_WARM) {
                    int k = read_replies(c);
                    if (k < 0) { kill_conn(c, 1); c->state = S_RETRY; nretry++; }
                    else if (k > 0) {
                        uint64_t tr = now_ns();
                        hrec(tr - c->tsend);
                        reqs++;
                        close(c->fd);
                        c->fd = -1;
                        c->state = S_RETRY; /* restart below (if time remains) */
                        nretry++;
                    }
                }
            }
            if (nretry && now_ns() < tend) {
                for (int i = 0; i < nconns; i++) {
                    if (cs[i].state != S_RETRY) continue;
                    if (open_conn(&cs[i], i) == 0) nretry--;
                    /* on failure stay in S_RETRY: retried after <=1 ms */
                }
            }
        }
        t1 = now_ns();
        read_cpus(&c1);
        for (int i = 0; i < nconns; i++) if (cs[i].fd >= 0) close(cs[i].fd);
        ok = nconns;
    }

    double el = (t1 - t0) / 1e9;
    printf("conns=%d secs=%.2f reqs=%llu rps=%.0f p50_us=%.0f p99_us=%.0f errors=%llu ok=%d setup_ms=%.0f "
           "cpu0=%.0f%% cpu1=%.0f%% steal=%.1f%% mode=%s\n",
           nconns, el, (unsigned long long)reqs, reqs / el, hpct(0.50), hpct(0.99),
           (unsigned long long)nerr, ok, setup_ms, cpu_pct(&c0, &c1, 0), cpu_pct(&c0, &c1, 1),
           steal_pct(&c0, &c1),
           mode == MODE_RR ? (pipeline > 1 ? "pipeline" : "rr") : "connect-rate");
    return 0;
}
