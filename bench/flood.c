/*
 * flood: UDP flood generator for the spa / fwknopd flood-resistance benchmarks.
 *
 * Two outputs, same payload kinds:
 *
 *   live  flood --send ADDR [--port P] --count N --seconds S [--rate PPS]
 *               --mix KIND=W[,KIND=W...] [--spa-id HEX16] [--replay HEX] [--seed N]
 *         Sends UDP datagrams with sendmmsg() in batches, stops at N packets or
 *         S seconds, whichever comes first.  --rate 0 (the default) sends as
 *         fast as possible; otherwise the rate is paced by a token bucket on
 *         CLOCK_MONOTONIC, sleeping with clock_nanosleep() between batches.
 *
 *   file  flood --pcap FILE --count N --mix ... [--knocks FILE] [--src CIDR]
 *               [--dst ADDR] [--port P] [--ts-start USEC] [--spa-id HEX16]
 *               [--replay HEX] [--seed N]
 *         Writes a classic pcap (microseconds, LINKTYPE_ETHERNET) of N flood
 *         frames (Ethernet + IPv4 + UDP), with the payloads of --knocks (one
 *         "HEX" or "HEX SRCADDR" per line) spread evenly through the flood.
 *
 * Kinds: garbage   random bytes, random length 16..512
 *        spaid     171 bytes, version 1, the --spa-id credential id, a current
 *                  timestamp (send time; frame time in a pcap), rest random:
 *                  spa's expensive case, it passes the id lookup and the time
 *                  window and costs one MAC per packet
 *        spashape  171 bytes, version 1, random id (dropped before any crypto)
 *        b64       fwknop-shaped: base64 alphabet text, length 180..300, never
 *                  starting with "U2FsdGVkX1"
 *        replay    the --replay payload, every time
 *
 * Both outputs print one JSON line on stdout at the end.  Usage errors print
 * one line on stderr and exit 2; run-time failures exit 1.
 */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>

/* ---- limits and constants ---- */

#define MAX_COUNT 100000000ULL
#define MAX_SECONDS 600.0
#define MAX_RATE 100000000.0
#define MAX_WEIGHT 1000000UL
#define MAX_PAYLOAD 65507 /* largest UDP payload over IPv4 */
#define SPA_LEN 171
#define SPA_ID_LEN 8
#define SPA_OFF_TIME 9
#define SPA_OFF_NONCE 17
#define GARBAGE_MIN 16
#define GARBAGE_MAX 512
#define B64_MIN 180
#define B64_MAX 300
#define BATCH 64
#define PACE_QUANTUM_S 1e-3 /* paced: at most this long between batches */
#define PACE_DEPTH_S 10e-3  /* paced: backlog kept after a stall */
#define POOL_SLOTS 256    /* per kind; must exceed BATCH (no slot twice per batch) */
#define SLOT_SIZE 512     /* >= GARBAGE_MAX, B64_MAX, SPA_LEN */
#define SNAPLEN 262144
#define LINKTYPE_ETHERNET 1
#define ETH_HLEN 14
#define IP4_HLEN 20
#define UDP_HLEN 8
#define HDRS_LEN (ETH_HLEN + IP4_HLEN + UDP_HLEN)
#define PCAP_REC_HLEN 16
#define OUTBUF_SIZE (8u << 20)

static const char B64_ALPHABET[64] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char FWKNOP_SALTED_PREFIX[] = "U2FsdGVkX1";

enum kind { K_GARBAGE, K_SPAID, K_SPASHAPE, K_B64, K_REPLAY, K_COUNT };
static const char *const KIND_NAMES[K_COUNT] = {"garbage", "spaid", "spashape",
                                                "b64", "replay"};

static const char USAGE[] =
    "usage: flood --send ADDR [--port 62201] --count N --seconds S [--rate PPS]\n"
    "             --mix KIND=W[,KIND=W...] [--spa-id HEX16] [--replay HEX] [--seed N]\n"
    "       flood --pcap FILE --count N --mix KIND=W[,...] [--knocks FILE]\n"
    "             [--src 10.201.0.0/24] [--dst 10.201.0.1] [--port 62201]\n"
    "             [--ts-start USEC] [--spa-id HEX16] [--replay HEX] [--seed N]\n"
    "kinds: garbage spaid spashape b64 replay; --count <= 100000000, --seconds <= 600,\n"
    "--rate 0 = as fast as possible\n";

/* ---- errors ---- */

__attribute__((noreturn, format(printf, 1, 2))) static void usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("flood: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (see flood --help)\n", stderr);
    exit(2);
}

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...)
{
    va_list ap;
    fputs("flood: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        die("out of memory (%zu bytes)", n);
    return p;
}

/* ---- PRNG: xoshiro256** seeded through splitmix64 ---- */

typedef struct {
    uint64_t s[4];
} rng_t;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void rng_seed(rng_t *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t rng_next(rng_t *r)
{
    uint64_t *s = r->s;
    const uint64_t result = rotl64(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

/* uniform in [0, n), n > 0 (multiply-shift; the bias is negligible here) */
static inline uint64_t rng_below(rng_t *r, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)rng_next(r) * n) >> 64);
}

static void rng_fill(rng_t *r, uint8_t *buf, size_t len)
{
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v = rng_next(r);
        memcpy(buf + i, &v, 8);
    }
    if (i < len) {
        uint64_t v = rng_next(r);
        memcpy(buf + i, &v, len - i);
    }
}

static void rng_fill_b64(rng_t *r, uint8_t *buf, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint64_t v = rng_next(r); /* ten 6-bit symbols per draw */
        for (int k = 0; k < 10 && i < len; k++, v >>= 6)
            buf[i++] = (uint8_t)B64_ALPHABET[v & 63];
    }
}

/* ---- payload kinds ---- */

struct config {
    /* common */
    uint64_t count;
    uint64_t weights[K_COUNT];
    uint64_t weight_total;
    uint8_t spa_id[SPA_ID_LEN];
    bool have_spa_id;
    uint8_t *replay;
    size_t replay_len;
    uint64_t seed;
    bool have_seed;
    uint16_t port;
    bool have_port;
    /* live */
    const char *send_addr;
    double seconds;
    bool have_seconds;
    double rate;
    bool have_rate;
    /* file */
    const char *pcap_path;
    const char *knocks_path;
    uint32_t src_net, src_mask; /* host order */
    bool have_src;
    uint32_t dst_addr; /* host order */
    bool have_dst;
    uint64_t ts_start;
    bool have_ts_start;
};

static void b64_fix_prefix(uint8_t *buf, size_t len)
{
    size_t plen = sizeof FWKNOP_SALTED_PREFIX - 1;
    if (len >= plen && memcmp(buf, FWKNOP_SALTED_PREFIX, plen) == 0)
        buf[0] = 'A';
}

static uint64_t realtime_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

static inline void put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

/* Writes a complete fresh payload of kind k into buf (>= SLOT_SIZE bytes, or
 * the replay length); returns its length.  ts_us: the spaid timestamp. */
static size_t make_payload(const struct config *cfg, rng_t *r, enum kind k, uint8_t *buf,
                           uint64_t ts_us)
{
    size_t len;
    switch (k) {
    case K_GARBAGE:
        len = GARBAGE_MIN + rng_below(r, GARBAGE_MAX - GARBAGE_MIN + 1);
        rng_fill(r, buf, len);
        return len;
    case K_SPAID:
        rng_fill(r, buf, SPA_LEN);
        buf[0] = 1;
        memcpy(buf + 1, cfg->spa_id, SPA_ID_LEN);
        put64(buf + SPA_OFF_TIME, ts_us);
        return SPA_LEN;
    case K_SPASHAPE:
        rng_fill(r, buf, SPA_LEN);
        buf[0] = 1;
        return SPA_LEN;
    case K_B64:
        len = B64_MIN + rng_below(r, B64_MAX - B64_MIN + 1);
        rng_fill_b64(r, buf, len);
        b64_fix_prefix(buf, len);
        return len;
    case K_REPLAY:
    case K_COUNT:
        break;
    }
    memcpy(buf, cfg->replay, cfg->replay_len);
    return cfg->replay_len;
}

/* Cheap per-packet change to a pooled payload so that no two datagrams of a
 * random kind are identical (a receiver's replay cache must not get a free
 * ride): 8 fresh bytes at a place that keeps the kind's shape.  A spaid
 * packet also gets the current time, so that it passes spa's time window. */
static inline void freshen(rng_t *r, enum kind k, uint8_t *buf, uint64_t ts_us)
{
    uint64_t v = rng_next(r);
    switch (k) {
    case K_GARBAGE:
        memcpy(buf, &v, 8);
        break;
    case K_SPAID:
        put64(buf + SPA_OFF_TIME, ts_us);
        memcpy(buf + SPA_OFF_NONCE, &v, 8);
        break;
    case K_SPASHAPE:
        memcpy(buf + 1, &v, 8); /* the credential id */
        break;
    case K_B64:
        for (int i = 0; i < 8; i++, v >>= 6)
            buf[12 + i] = (uint8_t)B64_ALPHABET[v & 63]; /* leaves the prefix alone */
        break;
    case K_REPLAY:
    case K_COUNT:
        break;
    }
}

static inline enum kind pick_kind(const struct config *cfg, rng_t *r)
{
    uint64_t x = rng_below(r, cfg->weight_total);
    for (int k = 0; k < K_COUNT - 1; k++) {
        if (x < cfg->weights[k])
            return (enum kind)k;
        x -= cfg->weights[k];
    }
    return K_REPLAY;
}

/* ---- parsing helpers ---- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes len hex digits; returns false on a non-hex digit or odd length. */
static bool hex_decode(const char *s, size_t len, uint8_t *out)
{
    if (len % 2)
        return false;
    for (size_t i = 0; i < len; i += 2) {
        int hi = hexval((unsigned char)s[i]), lo = hexval((unsigned char)s[i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static uint64_t parse_u64(const char *opt, const char *s, uint64_t max)
{
    char *end;
    if (!*s || *s == '-' || *s == '+')
        usage_error("%s: not a non-negative integer: '%s'", opt, s);
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        usage_error("%s: not a non-negative integer: '%s'", opt, s);
    if (v > max)
        usage_error("%s: %llu is over the limit of %" PRIu64, opt, v, max);
    return v;
}

static double parse_double(const char *opt, const char *s, double max)
{
    char *end;
    if (!*s)
        usage_error("%s: not a number: '%s'", opt, s);
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < 0)
        usage_error("%s: not a non-negative number: '%s'", opt, s);
    if (v > max)
        usage_error("%s: %s is over the limit of %g", opt, s, max);
    return v;
}

static void parse_mix(struct config *cfg, const char *arg)
{
    bool seen[K_COUNT] = {false};
    char *copy = strdup(arg);
    if (!copy)
        die("out of memory");
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq)
            usage_error("--mix: '%s' is not KIND=WEIGHT", item);
        *eq = '\0';
        int k;
        for (k = 0; k < K_COUNT; k++)
            if (strcmp(item, KIND_NAMES[k]) == 0)
                break;
        if (k == K_COUNT)
            usage_error("--mix: unknown kind '%s' (garbage, spaid, spashape, b64, replay)",
                        item);
        if (seen[k])
            usage_error("--mix: kind '%s' given twice", item);
        seen[k] = true;
        cfg->weights[k] = parse_u64("--mix", eq + 1, MAX_WEIGHT);
    }
    free(copy);
    cfg->weight_total = 0;
    for (int k = 0; k < K_COUNT; k++)
        cfg->weight_total += cfg->weights[k];
    if (cfg->weight_total == 0)
        usage_error("--mix: no kind has a positive weight");
}

static void parse_cidr4(struct config *cfg, const char *arg)
{
    char buf[64];
    if (strlen(arg) >= sizeof buf)
        usage_error("--src: not an IPv4 CIDR: '%s'", arg);
    strcpy(buf, arg);
    unsigned long plen = 32;
    char *slash = strchr(buf, '/');
    if (slash) {
        *slash = '\0';
        plen = parse_u64("--src prefix length", slash + 1, 32);
    }
    struct in_addr a;
    if (inet_pton(AF_INET, buf, &a) != 1)
        usage_error("--src: not an IPv4 CIDR: '%s'", arg);
    cfg->src_mask = plen == 0 ? 0 : 0xffffffffu << (32 - plen);
    cfg->src_net = ntohl(a.s_addr) & cfg->src_mask;
    cfg->have_src = true;
}

/* ---- shared output ---- */

struct result {
    uint64_t sent, knocks, errors;
    uint64_t kinds[K_COUNT];
    double seconds, cpu_user, cpu_sys;
};

static double ts_diff(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) * 1e-9;
}

static double tv_seconds(const struct timeval *tv)
{
    return (double)tv->tv_sec + (double)tv->tv_usec * 1e-6;
}

static void print_result(const struct config *cfg, const struct result *res)
{
    double pps = res->seconds > 0 ? (double)(res->sent + res->knocks) / res->seconds : 0.0;
    printf("{\"sent\": %" PRIu64 ", \"knocks\": %" PRIu64
           ", \"seconds\": %.6f, \"pps\": %.1f, \"cpu_user_s\": %.6f, \"cpu_sys_s\": %.6f, "
           "\"kinds\": {",
           res->sent, res->knocks, res->seconds, pps, res->cpu_user, res->cpu_sys);
    bool first = true;
    for (int k = 0; k < K_COUNT; k++) {
        if (!cfg->weights[k])
            continue;
        printf("%s\"%s\": %" PRIu64, first ? "" : ", ", KIND_NAMES[k], res->kinds[k]);
        first = false;
    }
    printf("}, \"errors\": %" PRIu64 "}\n", res->errors);
    if (fflush(stdout) != 0)
        die("writing the result: %s", strerror(errno));
}

struct meter {
    struct timespec wall;
    struct rusage ru;
};

static void meter_start(struct meter *m)
{
    getrusage(RUSAGE_SELF, &m->ru);
    clock_gettime(CLOCK_MONOTONIC, &m->wall);
}

static void meter_stop(const struct meter *m, struct result *res)
{
    struct timespec now;
    struct rusage ru;
    clock_gettime(CLOCK_MONOTONIC, &now);
    getrusage(RUSAGE_SELF, &ru);
    res->seconds = ts_diff(&m->wall, &now);
    res->cpu_user = tv_seconds(&ru.ru_utime) - tv_seconds(&m->ru.ru_utime);
    res->cpu_sys = tv_seconds(&ru.ru_stime) - tv_seconds(&m->ru.ru_stime);
}

/* ---- live mode ---- */

struct pool {
    uint8_t *buf;               /* POOL_SLOTS * SLOT_SIZE */
    uint16_t len[POOL_SLOTS];
    unsigned next;
};

static int open_socket(const char *addr, uint16_t port)
{
    char host[256];
    size_t n = strlen(addr);
    if (n >= sizeof host)
        usage_error("--send: address too long");
    if (n >= 2 && addr[0] == '[' && addr[n - 1] == ']') {
        memcpy(host, addr + 1, n - 2);
        host[n - 2] = '\0';
    } else {
        memcpy(host, addr, n + 1);
    }
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%u", (unsigned)port);
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_protocol = IPPROTO_UDP;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    int rc = getaddrinfo(host, portstr, &hints, &ai);
    if (rc != 0 || !ai)
        usage_error("--send: not a numeric IPv4 or IPv6 address: '%s'", addr);
    int fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, IPPROTO_UDP);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    /* A large send buffer; as root, past wmem_max. */
    int sndbuf = 8 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) != 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    /* Blocking sends (the socket buffer is the flow control), but never for
     * long: a full buffer that does not drain gives EAGAIN after 50 ms. */
    struct timeval tmo = {.tv_sec = 0, .tv_usec = 50000};
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tmo, sizeof tmo);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0)
        die("connect %s port %u: %s", addr, (unsigned)port, strerror(errno));
    freeaddrinfo(ai);
    return fd;
}

/* An error that a connected UDP socket reports for an earlier datagram (an
 * ICMP error received meanwhile): the datagram at hand was not sent, and a
 * retry normally succeeds. */
static bool async_error(int e)
{
    return e == ECONNREFUSED || e == EHOSTUNREACH || e == ENETUNREACH || e == EHOSTDOWN;
}

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static void sleep_until_ns(double t_ns)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(t_ns / 1e9);
    ts.tv_nsec = (long)(t_ns - (double)ts.tv_sec * 1e9);
    if (ts.tv_nsec < 0)
        ts.tv_nsec = 0;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1000000000L;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void run_live(const struct config *cfg, rng_t *r)
{
    int fd = open_socket(cfg->send_addr, cfg->port);

    /* Pools: POOL_SLOTS payloads per random kind, one for replay. */
    struct pool pools[K_COUNT];
    memset(pools, 0, sizeof pools);
    for (int k = 0; k < K_COUNT; k++) {
        if (!cfg->weights[k])
            continue;
        if (k == K_REPLAY) {
            pools[k].buf = cfg->replay;
            continue;
        }
        pools[k].buf = xmalloc((size_t)POOL_SLOTS * SLOT_SIZE);
        for (unsigned i = 0; i < POOL_SLOTS; i++)
            pools[k].len[i] =
                (uint16_t)make_payload(cfg, r, (enum kind)k, pools[k].buf + (size_t)i * SLOT_SIZE,
                                       realtime_us());
    }

    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    enum kind kinds[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }

    /* Pacing: packet i is due at t0 + i * interval (a token bucket refilled
     * continuously).  A batch goes out once `wake` packets are due (1 ms
     * worth, 1..BATCH packets), and in between the sender sleeps with an
     * absolute clock_nanosleep, so oversleeping is made up by the next batch,
     * not lost.  Each wake-up costs ~20 us of CPU in a VM, hence 1 ms rather
     * than finer batches.  After a stall the backlog (the bucket depth) is
     * capped at `depth` packets, 10 ms worth. */
    const bool paced = cfg->rate > 0;
    const double interval_ns = paced ? 1e9 / cfg->rate : 0;
    uint64_t wake = 1, depth = BATCH;
    if (paced) {
        double w = cfg->rate * PACE_QUANTUM_S;
        wake = w < 1 ? 1 : w > BATCH ? BATCH : (uint64_t)w;
        double d = cfg->rate * PACE_DEPTH_S;
        depth = d < 2 * BATCH ? 2 * BATCH : (uint64_t)d;
        (void)prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    }

    struct result res;
    memset(&res, 0, sizeof res);
    uint64_t attempted = 0; /* sent + failed */
    struct meter m;
    meter_start(&m);
    const double start_ns = now_ns();
    const double deadline_ns = start_ns + cfg->seconds * 1e9;
    double t0_ns = start_ns; /* pacing origin */

    while (attempted < cfg->count) {
        double now = now_ns();
        if (now >= deadline_ns)
            break;
        uint64_t n = BATCH;
        if (paced) {
            double due_f = (now - t0_ns) / interval_ns + 1.0 - (double)attempted;
            if (due_f > (double)depth) { /* stalled: forget the excess backlog */
                t0_ns = now - ((double)(attempted + depth) - 1.0) * interval_ns;
                due_f = (double)depth;
            }
            uint64_t due = due_f > 0 ? (uint64_t)due_f : 0;
            if (due < wake && due < cfg->count - attempted) {
                uint64_t want = wake;
                if (want > cfg->count - attempted)
                    want = cfg->count - attempted;
                double at = t0_ns + ((double)(attempted + want) - 1.0) * interval_ns;
                sleep_until_ns(at < deadline_ns ? at : deadline_ns);
                continue;
            }
            n = due < BATCH ? due : BATCH;
        }
        if (n > cfg->count - attempted)
            n = cfg->count - attempted;
        const uint64_t batch_us = cfg->weights[K_SPAID] ? realtime_us() : 0;

        for (uint64_t i = 0; i < n; i++) {
            enum kind k = pick_kind(cfg, r);
            struct pool *p = &pools[k];
            uint8_t *buf;
            size_t len;
            if (k == K_REPLAY) {
                buf = p->buf;
                len = cfg->replay_len;
            } else {
                unsigned slot = p->next;
                p->next = (slot + 1) % POOL_SLOTS;
                buf = p->buf + (size_t)slot * SLOT_SIZE;
                len = p->len[slot];
                freshen(r, k, buf, batch_us);
            }
            kinds[i] = k;
            iov[i].iov_base = buf;
            iov[i].iov_len = len;
        }

        uint64_t done = 0;
        bool retried = false;
        while (done < n) {
            int rc = sendmmsg(fd, msgs + done, (unsigned)(n - done), 0);
            if (rc > 0) {
                for (int i = 0; i < rc; i++)
                    res.kinds[kinds[done + i]]++;
                res.sent += (uint64_t)rc;
                done += (uint64_t)rc;
                retried = false;
                continue;
            }
            int e = errno;
            if (rc < 0 && e == EINTR)
                continue;
            if (rc < 0 && async_error(e) && !retried) {
                retried = true; /* reported for an earlier datagram: try again once */
                continue;
            }
            /* EAGAIN (buffer full past the timeout), ENOBUFS, EPERM, a
             * repeated error: this datagram counts as failed, go on. */
            res.errors++;
            done++;
            retried = false;
            if (now_ns() >= deadline_ns)
                break;
        }
        attempted += done;
    }
    meter_stop(&m, &res);
    close(fd);
    for (int k = 0; k < K_COUNT; k++)
        if (k != K_REPLAY)
            free(pools[k].buf);
    print_result(cfg, &res);
}

/* ---- file mode ---- */

struct knock {
    uint8_t *payload;
    size_t len;
    uint32_t src; /* host order */
    bool have_src;
};

static struct knock *read_knocks(const char *path, size_t *count)
{
    FILE *f = fopen(path, "r");
    if (!f)
        usage_error("--knocks: cannot open '%s': %s", path, strerror(errno));
    struct knock *ks = NULL;
    size_t n = 0, cap = 0, lineno = 0;
    char *line = NULL;
    size_t linecap = 0;
    ssize_t got;
    while ((got = getline(&line, &linecap, f)) >= 0) {
        lineno++;
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        size_t hexlen = strcspn(s, " \t\r\n");
        if (hexlen == 0)
            continue; /* blank line */
        char *rest = s + hexlen;
        while (*rest == ' ' || *rest == '\t')
            rest++;
        size_t srclen = strcspn(rest, " \t\r\n");
        char *tail = rest + srclen;
        while (*tail == ' ' || *tail == '\t' || *tail == '\r' || *tail == '\n')
            tail++;
        if (*tail)
            usage_error("--knocks %s:%zu: expected 'HEX' or 'HEX SRCADDR'", path, lineno);
        if (hexlen / 2 > MAX_PAYLOAD)
            usage_error("--knocks %s:%zu: payload over %d bytes", path, lineno, MAX_PAYLOAD);
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            ks = realloc(ks, cap * sizeof *ks);
            if (!ks)
                die("out of memory");
        }
        struct knock *k = &ks[n];
        memset(k, 0, sizeof *k);
        k->len = hexlen / 2;
        k->payload = xmalloc(k->len ? k->len : 1);
        if (!hex_decode(s, hexlen, k->payload))
            usage_error("--knocks %s:%zu: not an even-length hex string", path, lineno);
        if (srclen) {
            char addr[64];
            struct in_addr a;
            if (srclen >= sizeof addr)
                usage_error("--knocks %s:%zu: bad source address", path, lineno);
            memcpy(addr, rest, srclen);
            addr[srclen] = '\0';
            if (inet_pton(AF_INET, addr, &a) != 1)
                usage_error("--knocks %s:%zu: not an IPv4 source address: '%s'", path,
                            lineno, addr);
            k->src = ntohl(a.s_addr);
            k->have_src = true;
        }
        n++;
    }
    if (ferror(f))
        die("reading %s: %s", path, strerror(errno));
    free(line);
    fclose(f);
    *count = n;
    return ks;
}

static inline void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void put32le(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4); /* pcap headers are written in host order (magic tells) */
}

struct writer {
    FILE *f;
    const char *path;
    uint8_t *buf;
    size_t used;
};

static void writer_flush(struct writer *w)
{
    if (w->used && fwrite(w->buf, 1, w->used, w->f) != w->used)
        die("writing %s: %s", w->path, strerror(errno));
    w->used = 0;
}

/* Reserves room for one record of `len` bytes in the output buffer. */
static inline uint8_t *writer_reserve(struct writer *w, size_t len)
{
    if (w->used + len > OUTBUF_SIZE)
        writer_flush(w);
    uint8_t *p = w->buf + w->used;
    w->used += len;
    return p;
}

static const uint8_t MAC_DST[6] = {0x02, 0x00, 0x0a, 0xc9, 0x00, 0x01};
static const uint8_t MAC_SRC[6] = {0x02, 0x00, 0x0a, 0xc9, 0x00, 0xfe};

/* Writes one pcap record: Ethernet + IPv4 + UDP headers for `plen` payload
 * bytes already at rec + PCAP_REC_HLEN + HDRS_LEN. */
static void finish_frame(uint8_t *rec, size_t plen, uint64_t ts_us, uint32_t src,
                         uint32_t dst, uint16_t sport, uint16_t dport, uint16_t ip_id)
{
    uint32_t caplen = (uint32_t)(HDRS_LEN + plen);
    put32le(rec, (uint32_t)(ts_us / 1000000));
    put32le(rec + 4, (uint32_t)(ts_us % 1000000));
    put32le(rec + 8, caplen);
    put32le(rec + 12, caplen);

    uint8_t *eth = rec + PCAP_REC_HLEN;
    memcpy(eth, MAC_DST, 6);
    memcpy(eth + 6, MAC_SRC, 6);
    put16(eth + 12, 0x0800);

    uint8_t *ip = eth + ETH_HLEN;
    ip[0] = 0x45;
    ip[1] = 0;
    put16(ip + 2, (uint16_t)(IP4_HLEN + UDP_HLEN + plen));
    put16(ip + 4, ip_id);
    put16(ip + 6, 0x4000); /* DF, offset 0 */
    ip[8] = 64;
    ip[9] = 17;
    put16(ip + 10, 0);
    put32(ip + 12, src);
    put32(ip + 16, dst);
    uint32_t sum = 0;
    for (int i = 0; i < IP4_HLEN; i += 2)
        sum += (uint32_t)ip[i] << 8 | ip[i + 1];
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    put16(ip + 10, (uint16_t)~sum);

    uint8_t *udp = ip + IP4_HLEN;
    put16(udp, sport);
    put16(udp + 2, dport);
    put16(udp + 4, (uint16_t)(UDP_HLEN + plen));
    put16(udp + 6, 0);
}

static void run_pcap(const struct config *cfg, rng_t *r)
{
    size_t nknocks = 0;
    struct knock *knocks = cfg->knocks_path ? read_knocks(cfg->knocks_path, &nknocks) : NULL;

    struct writer w = {.path = cfg->pcap_path};
    w.f = fopen(cfg->pcap_path, "wb");
    if (!w.f)
        die("cannot create %s: %s", cfg->pcap_path, strerror(errno));
    (void)setvbuf(w.f, NULL, _IONBF, 0); /* writer_flush does the buffering */
    w.buf = xmalloc(OUTBUF_SIZE);

    uint8_t *gh = writer_reserve(&w, 24);
    put32le(gh, 0xa1b2c3d4);
    uint16_t vmaj = 2, vmin = 4;
    memcpy(gh + 4, &vmaj, 2);
    memcpy(gh + 6, &vmin, 2);
    put32le(gh + 8, 0);  /* thiszone */
    put32le(gh + 12, 0); /* sigfigs */
    put32le(gh + 16, SNAPLEN);
    put32le(gh + 20, LINKTYPE_ETHERNET);

    uint64_t ts = cfg->have_ts_start ? cfg->ts_start : realtime_us();
    const uint32_t host_mask = ~cfg->src_mask;
    uint16_t ip_id = (uint16_t)rng_next(r);

    struct result res;
    memset(&res, 0, sizeof res);
    struct meter m;
    meter_start(&m);
    /* Knock j goes just before flood frame floor((j+1) * N / (K+1)). */
    size_t kj = 0;
    uint64_t next_knock_at =
        nknocks ? (uint64_t)((unsigned __int128)cfg->count * 1 / (nknocks + 1)) : UINT64_MAX;
    for (uint64_t i = 0; i <= cfg->count; i++) {
        while (kj < nknocks && next_knock_at == i) {
            const struct knock *k = &knocks[kj];
            uint8_t *rec = writer_reserve(&w, PCAP_REC_HLEN + HDRS_LEN + k->len);
            memcpy(rec + PCAP_REC_HLEN + HDRS_LEN, k->payload, k->len);
            uint32_t src =
                k->have_src ? k->src : cfg->src_net | ((uint32_t)rng_next(r) & host_mask);
            finish_frame(rec, k->len, ts++, src, cfg->dst_addr,
                         (uint16_t)(1024 + rng_below(r, 65536 - 1024)), cfg->port, ip_id++);
            res.knocks++;
            kj++;
            next_knock_at = kj < nknocks ? (uint64_t)((unsigned __int128)cfg->count * (kj + 1) /
                                                      (nknocks + 1))
                                         : UINT64_MAX;
        }
        if (i == cfg->count)
            break;
        enum kind kd = pick_kind(cfg, r);
        size_t maxlen = kd == K_REPLAY ? cfg->replay_len : SLOT_SIZE;
        uint8_t *rec = writer_reserve(&w, PCAP_REC_HLEN + HDRS_LEN + maxlen);
        size_t plen = make_payload(cfg, r, kd, rec + PCAP_REC_HLEN + HDRS_LEN, ts);
        w.used -= maxlen - plen; /* give back what the payload did not use */
        uint32_t src = cfg->src_net | ((uint32_t)rng_next(r) & host_mask);
        finish_frame(rec, plen, ts++, src, cfg->dst_addr,
                     (uint16_t)(1024 + rng_below(r, 65536 - 1024)), cfg->port, ip_id++);
        res.kinds[kd]++;
        res.sent++;
    }
    writer_flush(&w);
    if (fclose(w.f) != 0)
        die("closing %s: %s", cfg->pcap_path, strerror(errno));
    meter_stop(&m, &res);
    free(w.buf);
    for (size_t j = 0; j < nknocks; j++)
        free(knocks[j].payload);
    free(knocks);
    print_result(cfg, &res);
}

/* ---- main ---- */

enum {
    O_SEND = 256, O_PCAP, O_PORT, O_COUNT, O_SECONDS, O_RATE, O_MIX, O_SPA_ID, O_REPLAY,
    O_SEED, O_KNOCKS, O_SRC, O_DST, O_TS_START, O_HELP
};

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"send", required_argument, NULL, O_SEND},
        {"pcap", required_argument, NULL, O_PCAP},
        {"port", required_argument, NULL, O_PORT},
        {"count", required_argument, NULL, O_COUNT},
        {"seconds", required_argument, NULL, O_SECONDS},
        {"rate", required_argument, NULL, O_RATE},
        {"mix", required_argument, NULL, O_MIX},
        {"spa-id", required_argument, NULL, O_SPA_ID},
        {"replay", required_argument, NULL, O_REPLAY},
        {"seed", required_argument, NULL, O_SEED},
        {"knocks", required_argument, NULL, O_KNOCKS},
        {"src", required_argument, NULL, O_SRC},
        {"dst", required_argument, NULL, O_DST},
        {"ts-start", required_argument, NULL, O_TS_START},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    struct config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.port = 62201;
    bool have_count = false, have_mix = false;
    const char *knocks_opt = NULL;

    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case O_SEND:
            cfg.send_addr = optarg;
            break;
        case O_PCAP:
            cfg.pcap_path = optarg;
            break;
        case O_PORT:
            cfg.port = (uint16_t)parse_u64("--port", optarg, 65535);
            if (!cfg.port)
                usage_error("--port: must be 1..65535");
            cfg.have_port = true;
            break;
        case O_COUNT:
            cfg.count = parse_u64("--count", optarg, MAX_COUNT);
            if (!cfg.count)
                usage_error("--count: must be at least 1");
            have_count = true;
            break;
        case O_SECONDS:
            cfg.seconds = parse_double("--seconds", optarg, MAX_SECONDS);
            if (cfg.seconds <= 0)
                usage_error("--seconds: must be positive");
            cfg.have_seconds = true;
            break;
        case O_RATE:
            cfg.rate = parse_double("--rate", optarg, MAX_RATE);
            cfg.have_rate = true;
            break;
        case O_MIX:
            parse_mix(&cfg, optarg);
            have_mix = true;
            break;
        case O_SPA_ID:
            if (strlen(optarg) != 2 * SPA_ID_LEN || !hex_decode(optarg, 2 * SPA_ID_LEN, cfg.spa_id))
                usage_error("--spa-id: want 16 hex digits, got '%s'", optarg);
            cfg.have_spa_id = true;
            break;
        case O_REPLAY: {
            size_t n = strlen(optarg);
            if (n == 0 || n % 2 || n / 2 > MAX_PAYLOAD)
                usage_error("--replay: want an even-length hex string of 1..%d bytes",
                            MAX_PAYLOAD);
            free(cfg.replay);
            cfg.replay = xmalloc(n / 2);
            if (!hex_decode(optarg, n, cfg.replay))
                usage_error("--replay: not a hex string");
            cfg.replay_len = n / 2;
            break;
        }
        case O_SEED:
            cfg.seed = parse_u64("--seed", optarg, UINT64_MAX);
            cfg.have_seed = true;
            break;
        case O_KNOCKS:
            knocks_opt = optarg;
            break;
        case O_SRC:
            parse_cidr4(&cfg, optarg);
            break;
        case O_DST: {
            struct in_addr a;
            if (inet_pton(AF_INET, optarg, &a) != 1)
                usage_error("--dst: not an IPv4 address: '%s'", optarg);
            cfg.dst_addr = ntohl(a.s_addr);
            cfg.have_dst = true;
            break;
        }
        case O_TS_START:
            cfg.ts_start = parse_u64("--ts-start", optarg, (uint64_t)UINT32_MAX * 1000000u);
            cfg.have_ts_start = true;
            break;
        case 'h':
        case O_HELP:
            fputs(USAGE, stdout);
            return 0;
        case ':':
            usage_error("option %s needs a value", argv[optind - 1]);
        default:
            if (optopt)
                usage_error("unknown option '-%c'", optopt);
            usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        usage_error("unexpected argument '%s'", argv[optind]);
    if (!!cfg.send_addr == !!cfg.pcap_path)
        usage_error("give exactly one of --send ADDR or --pcap FILE");
    if (!have_count)
        usage_error("--count N is required");
    if (!have_mix)
        usage_error("--mix KIND=W[,KIND=W...] is required");
    if (cfg.weights[K_SPAID] && !cfg.have_spa_id)
        usage_error("kind spaid needs --spa-id HEX16");
    if (cfg.weights[K_REPLAY] && !cfg.replay)
        usage_error("kind replay needs --replay HEXPAYLOAD");
    if (cfg.send_addr) {
        if (!cfg.have_seconds)
            usage_error("--send needs --seconds S (at most 600)");
        if (knocks_opt || cfg.have_src || cfg.have_dst || cfg.have_ts_start)
            usage_error("--knocks, --src, --dst and --ts-start go with --pcap only");
    } else {
        if (cfg.have_seconds || cfg.have_rate)
            usage_error("--seconds and --rate go with --send only");
        cfg.knocks_path = knocks_opt;
        if (!cfg.have_src) {
            cfg.src_net = 0x0ac90000u; /* 10.201.0.0/24 */
            cfg.src_mask = 0xffffff00u;
        }
        if (!cfg.have_dst)
            cfg.dst_addr = 0x0ac90001u; /* 10.201.0.1 */
    }
    if (!cfg.have_seed && getrandom(&cfg.seed, sizeof cfg.seed, 0) != sizeof cfg.seed)
        cfg.seed = realtime_us() ^ ((uint64_t)getpid() << 32);

    rng_t r;
    rng_seed(&r, cfg.seed);
    if (cfg.send_addr)
        run_live(&cfg, &r);
    else
        run_pcap(&cfg, &r);
    free(cfg.replay);
    return 0;
}
