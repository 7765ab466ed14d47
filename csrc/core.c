/* The packet path and the capture thread.
 *
 * Frame -> parse -> port, length, version -> credential lookup -> timestamp
 * window -> replay set -> tag -> decrypt -> ring.  The cheap checks come
 * first so that a flood of garbage costs a parse and a counter, a flood with
 * unknown credential ids a hash probe, and only packets that carry a known id
 * pay for one keyed BLAKE3 over 139 bytes.  Nothing here allocates, logs or
 * waits for the consumer.
 */
#include "spa.h"

#include <errno.h>
#include <pcap/pcap.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "blake3.h"
#include "parse.h"
#include "replay.h"
#include "ring.h"

#define SPA_EXPORT __attribute__((visibility("default")))
#define SPA_UDP_LEN (8 + SPA_WIRE_LEN)

struct spa_cred {
	uint8_t id[SPA_ID_LEN];
	uint8_t k_mac[SPA_BLAKE3_KEY_LEN];
	uint8_t k_enc[SPA_BLAKE3_KEY_LEN];
};

struct spa_core {
	struct spa_ring ring;
	struct spa_core_cfg cfg;
	_Atomic uint64_t counters[SPA_NCOUNTERS];
	struct spa_cred *creds;		/* index order, cfg.max_creds */
	uint32_t *cred_slots;		/* hash table of index + 1, 0 = empty */
	size_t cred_mask;
	uint32_t ncreds;
	uint64_t cred_seed;
	struct spa_replay replay;
	pcap_t *pcap;
	int linktype;
	bool offline;
	char *filter;			/* BPF program text, heap */
	pthread_t thread;
	bool thread_started;
	_Atomic int stop;
	_Atomic int finished;
	uint64_t capture_ns;		/* wall time of the capture thread */
	uint64_t capture_cpu_ns;	/* its CPU time */
	char error[PCAP_ERRBUF_SIZE];
};

static uint64_t load_be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t now_realtime_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static size_t pow2_at_least(size_t n, size_t floor)
{
	size_t v = floor;

	while (v < n && v < ((size_t)1 << 30))
		v <<= 1;
	return v;
}

static void nap_us(long us)
{
	struct timespec ts = { .tv_sec = 0, .tv_nsec = us * 1000 };

	nanosleep(&ts, NULL);
}

static void wipe(void *p, size_t len)
{
	volatile uint8_t *v = p;

	while (len--)
		*v++ = 0;
}

/* All 32 bytes are compared whatever their values, as four 64-bit words
 * folded with OR; the empty asm makes the folded value opaque, so the
 * compiler can neither exit early nor turn the test into a memcmp. */
static bool tag_equal(const uint8_t *a, const uint8_t *b)
{
	uint64_t wa, wb, acc = 0;

	for (size_t i = 0; i < SPA_TAG_LEN; i += 8) {
		memcpy(&wa, a + i, 8);
		memcpy(&wb, b + i, 8);
		acc |= wa ^ wb;
	}
	__asm__ volatile("" : "+r"(acc));
	return acc == 0;
}

static size_t cred_home(const struct spa_core *c, const uint8_t *id)
{
	uint64_t h = load_be64(id) ^ c->cred_seed;

	h ^= h >> 31;
	h *= 0x9e3779b97f4a7c15ULL;
	h ^= h >> 29;
	return (size_t)h & c->cred_mask;
}

/* The table is at most half full, so an unknown id ends its probe run at an
 * empty slot after a couple of steps; ids are compared with memcmp because
 * they travel in clear and are not secret. */
static const struct spa_cred *cred_lookup(const struct spa_core *c,
					  const uint8_t *id, uint32_t *index)
{
	size_t s = cred_home(c, id);

	for (size_t i = 0; i <= c->cred_mask; i++) {
		uint32_t v = c->cred_slots[(s + i) & c->cred_mask];
		const struct spa_cred *cr;

		if (v == 0)
			return NULL;
		cr = &c->creds[v - 1];
		if (memcmp(cr->id, id, SPA_ID_LEN) == 0) {
			*index = v - 1;
			return cr;
		}
	}
	return NULL;
}

static void count(struct spa_core *c, enum spa_counter k)
{
	atomic_fetch_add_explicit(&c->counters[k], 1, memory_order_relaxed);
}

static enum spa_counter classify(struct spa_core *c, int linktype,
				 const uint8_t *frame, size_t caplen,
				 uint64_t now_us)
{
	struct spa_record rec;
	struct spa_frame f;
	const struct spa_cred *cr;
	const uint8_t *p;
	uint8_t tag[SPA_TAG_LEN];
	uint8_t ks[SPA_BODY_LEN];
	uint64_t ts, window = c->cfg.window_us;
	uint32_t index = 0;
	size_t slot = 0;

	switch (spa_parse_frame(linktype, frame, caplen, &f)) {
	case SPA_PARSE_OK:
		break;
	case SPA_PARSE_LINK:
		return SPA_C_DROP_LINK;
	case SPA_PARSE_FRAGMENT:
		return SPA_C_DROP_FRAGMENT;
	case SPA_PARSE_TRANSPORT:
		return SPA_C_DROP_TRANSPORT;
	default:
		return SPA_C_DROP_NET;
	}
	if (f.dport != c->cfg.port)
		return SPA_C_DROP_PORT;
	if (f.payload_len != SPA_WIRE_LEN)
		return SPA_C_DROP_LENGTH;
	p = f.payload;
	if (p[SPA_OFF_VERSION] != SPA_VERSION)
		return SPA_C_DROP_VERSION;
	cr = cred_lookup(c, p + SPA_OFF_ID, &index);
	if (!cr)
		return SPA_C_DROP_UNKNOWN_ID;

	/* The time check needs no key and tells an attacker nothing he does
	 * not know, so it goes before the MAC: a flood of old captures or of
	 * random headers costs no cryptography. */
	ts = load_be64(p + SPA_OFF_TIME);
	if (ts > now_us ? ts - now_us > window : now_us - ts > window)
		return SPA_C_DROP_STALE;

	/* The replay key is the packet's own tag, so the set can be asked
	 * before the MAC is computed: a flood of replays costs a probe, not a
	 * BLAKE3.  A packet that carries a seen tag is either that replay or a
	 * forgery the MAC would refuse; both are dropped. */
	switch (spa_replay_find(&c->replay, p + SPA_OFF_TAG, now_us, &slot)) {
	case SPA_REPLAY_SEEN:
		return SPA_C_DROP_REPLAY;
	case SPA_REPLAY_FULL:
		return SPA_C_DROP_REPLAY_FULL;
	case SPA_REPLAY_FRESH:
		break;
	}

	spa_blake3_keyed(cr->k_mac, p, SPA_OFF_TAG, tag, sizeof(tag));
	if (!tag_equal(tag, p + SPA_OFF_TAG))
		return SPA_C_DROP_MAC;

	memset(&rec, 0, sizeof(rec));
	rec.ts_us = ts;
	rec.rx_us = now_us;
	rec.cred = index;
	rec.family = f.family;
	memcpy(rec.src, f.src, sizeof(rec.src));
	memcpy(rec.dst, f.dst, sizeof(rec.dst));
	rec.sport = f.sport;
	rec.dport = f.dport;
	memcpy(rec.replay_key, p + SPA_OFF_TAG, SPA_REPLAY_KEY_LEN);
	spa_blake3_keyed(cr->k_enc, p + SPA_OFF_ID, SPA_OFF_BODY - SPA_OFF_ID,
			 ks, sizeof(ks));
	for (size_t i = 0; i < SPA_BODY_LEN; i++)
		rec.body[i] = p[SPA_OFF_BODY + i] ^ ks[i];
	wipe(ks, sizeof(ks));
	while (!spa_ring_push(&c->ring, &rec)) {
		/* Live, the kernel keeps queueing while we wait, so a full
		 * ring is a drop.  Reading a file, nothing is lost by waiting
		 * for the consumer, and a summary that counted drops the
		 * reader caused itself would be wrong. */
		if (!c->offline || atomic_load_explicit(&c->stop,
							memory_order_relaxed)) {
			wipe(&rec, sizeof(rec));
			return SPA_C_DROP_RING_FULL;
		}
		nap_us(50);
	}
	wipe(&rec, sizeof(rec));
	/* Stored only once the request is on its way: a knock dropped for a
	 * full ring may be sent again. */
	spa_replay_store(&c->replay, slot, p + SPA_OFF_TAG, ts + window + 1);
	return SPA_C_ACCEPTED;
}

SPA_EXPORT enum spa_counter spa_core_process(struct spa_core *c, int linktype,
					     const uint8_t *frame,
					     size_t caplen, uint64_t now_us)
{
	enum spa_counter v = classify(c, linktype, frame, caplen, now_us);

	count(c, v);
	return v;
}

SPA_EXPORT void spa_core_default_cfg(struct spa_core_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->port = 62201;
	cfg->window_us = 60ULL * 1000000u;
	cfg->replay_capacity = 65536;
	cfg->ring_capacity = 4096;
	cfg->max_creds = 1024;
	cfg->clock = SPA_CLOCK_REAL;
	cfg->snaplen = 2048;
	cfg->buffer_bytes = 8 << 20;
	cfg->timeout_ms = 1;
	cfg->immediate = 0;
	cfg->dispatch_batch = -1;
	cfg->id_filter = 1;
}

SPA_EXPORT struct spa_core *spa_core_new(const struct spa_core_cfg *cfg)
{
	struct spa_core *c;
	uint64_t seeds[2];
	size_t ncap;

	if (!cfg->max_creds || !cfg->port || !cfg->window_us)
		return NULL;
	if (getrandom(seeds, sizeof(seeds), 0) != sizeof(seeds))
		return NULL;
	c = aligned_alloc(SPA_CACHELINE, (sizeof(*c) + SPA_CACHELINE - 1) &
			  ~(size_t)(SPA_CACHELINE - 1));
	if (!c)
		return NULL;
	memset(c, 0, sizeof(*c));
	c->cfg = *cfg;
	c->cred_seed = seeds[0];
	c->creds = calloc(cfg->max_creds, sizeof(*c->creds));
	ncap = pow2_at_least((size_t)cfg->max_creds * 2, 16);
	c->cred_slots = calloc(ncap, sizeof(*c->cred_slots));
	c->cred_mask = ncap - 1;
	if (!c->creds || !c->cred_slots)
		goto err_free;
	if (spa_replay_init(&c->replay, cfg->replay_capacity, seeds[1]) < 0)
		goto err_free;
	if (spa_ring_init(&c->ring, pow2_at_least(cfg->ring_capacity, 64),
			  sizeof(struct spa_record), true) < 0)
		goto err_replay;
	return c;

err_replay:
	spa_replay_destroy(&c->replay);
err_free:
	free(c->cred_slots);
	free(c->creds);
	free(c);
	return NULL;
}

SPA_EXPORT void spa_core_free(struct spa_core *c)
{
	if (!c)
		return;
	spa_core_stop(c);
	if (c->pcap)
		pcap_close(c->pcap);
	spa_ring_destroy(&c->ring);
	spa_replay_destroy(&c->replay);
	if (c->creds)
		wipe(c->creds, (size_t)c->cfg.max_creds * sizeof(*c->creds));
	free(c->creds);
	free(c->cred_slots);
	free(c->filter);
	free(c);
}

SPA_EXPORT int spa_core_add_cred(struct spa_core *c,
				 const uint8_t id[SPA_ID_LEN],
				 const uint8_t secret[SPA_SECRET_LEN])
{
	struct spa_cred *cr;
	uint32_t dummy;
	size_t s;

	if (c->thread_started)
		return -EBUSY;
	if (cred_lookup(c, id, &dummy))
		return -EEXIST;
	if (c->ncreds >= c->cfg.max_creds)
		return -ENOSPC;
	cr = &c->creds[c->ncreds];
	memcpy(cr->id, id, SPA_ID_LEN);
	spa_blake3_derive_key(SPA_CTX_MAC, secret, SPA_SECRET_LEN, cr->k_mac,
			      sizeof(cr->k_mac));
	spa_blake3_derive_key(SPA_CTX_ENC, secret, SPA_SECRET_LEN, cr->k_enc,
			      sizeof(cr->k_enc));
	s = cred_home(c, id);
	while (c->cred_slots[s])
		s = (s + 1) & c->cred_mask;
	c->cred_slots[s] = c->ncreds + 1;
	return (int)c->ncreds++;
}

SPA_EXPORT int spa_core_replay_seed(struct spa_core *c,
				    const uint8_t key[SPA_REPLAY_KEY_LEN],
				    uint64_t expires_us)
{
	size_t slot;

	if (c->thread_started)
		return -EBUSY;
	switch (spa_replay_find(&c->replay, key, 0, &slot)) {
	case SPA_REPLAY_SEEN:
		return 0;
	case SPA_REPLAY_FULL:
		return -ENOSPC;
	case SPA_REPLAY_FRESH:
		break;
	}
	spa_replay_store(&c->replay, slot, key, expires_us);
	return 0;
}

/* The kernel filter keeps everything but well-formed v1 candidates out of
 * user space: UDP to the port, the one UDP length v1 has, version byte 1,
 * and, for up to SPA_FILTER_MAX_IDS credentials, one of their ids, so that
 * a flood of made-up ids is never even copied to the capture ring.  IPv6
 * with the UDP header right after the fixed header is judged the same way;
 * IPv6 whose first next-header is hop-by-hop, routing or destination
 * options is passed up for the parser to walk, since cBPF cannot loop over
 * extension headers, unless that header is followed by ICMPv6 (the kernel's
 * own multicast listener reports look like that).  The VLAN alternative
 * comes last because libpcap's "vlan" shifts the offsets of everything that
 * follows it; for the same reason the second tag of QinQ is matched by a
 * "vlan" nested inside the first one. */
#define SPA_FILTER_MAX_IDS 64
#define SPA_FILTER_ID_TEXT 64	/* one "(x[a:4] = 0x.. and x[b:4] = 0x..)" */

static uint32_t load_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

/* " and ((P[o:4] = A and P[o+4:4] = B) or ...)", or "" without ids */
static int id_clause(const struct spa_core *c, char *buf, size_t len,
		     const char *proto, unsigned off)
{
	size_t used = 0;
	int n;

	buf[0] = '\0';
	if (!c->ncreds || c->ncreds > SPA_FILTER_MAX_IDS || !c->cfg.id_filter)
		return 0;
	for (uint32_t i = 0; i < c->ncreds; i++) {
		const uint8_t *id = c->creds[i].id;

		n = snprintf(buf + used, len - used,
			     "%s(%s[%u:4] = 0x%08x and %s[%u:4] = 0x%08x)",
			     i ? " or " : " and (", proto, off, load_be32(id),
			     proto, off + 4, load_be32(id + 4));
		if (n < 0 || (size_t)n >= len - used)
			return -ENAMETOOLONG;
		used += (size_t)n;
	}
	n = snprintf(buf + used, len - used, ")");
	return n < 0 || (size_t)n >= len - used ? -ENAMETOOLONG : 0;
}

static int build_filter(struct spa_core *c, bool with_ids)
{
	size_t ids_len = (size_t)SPA_FILTER_MAX_IDS * SPA_FILTER_ID_TEXT + 16;
	size_t base_len = 2 * ids_len + 512, len = 3 * base_len + 64;
	char *ids4 = NULL, *ids6 = NULL, *base = NULL;
	unsigned p = c->cfg.port;
	int n, rc = -ENOMEM;

	free(c->filter);
	c->filter = malloc(len);
	ids4 = malloc(ids_len);
	ids6 = malloc(ids_len);
	base = malloc(base_len);
	if (!c->filter || !ids4 || !ids6 || !base)
		goto out;
	ids4[0] = ids6[0] = '\0';
	if (with_ids) {
		rc = id_clause(c, ids4, ids_len, "udp", 8 + SPA_OFF_ID);
		if (!rc)
			rc = id_clause(c, ids6, ids_len, "ip6", 48 + SPA_OFF_ID);
		if (rc)
			goto out;
	}
	rc = -ENAMETOOLONG;
	n = snprintf(base, base_len,
		     "(ip and udp dst port %u and udp[4:2] = %u and udp[8] = %u%s)"
		     " or (ip6 and ip6[6] = 17 and ip6[42:2] = %u"
		     " and ip6[44:2] = %u and ip6[48] = %u%s)"
		     " or (ip6 and (ip6[6] = 0 or ip6[6] = 43 or ip6[6] = 60)"
		     " and ip6[40] != 58)",
		     p, SPA_UDP_LEN, SPA_VERSION, ids4, p, SPA_UDP_LEN,
		     SPA_VERSION, ids6);
	if (n < 0 || (size_t)n >= base_len)
		goto out;
	if (c->linktype == DLT_EN10MB)
		n = snprintf(c->filter, len,
			     "%s or (vlan and (%s or (vlan and (%s))))", base,
			     base, base);
	else
		n = snprintf(c->filter, len, "%s", base);
	if (n < 0 || (size_t)n >= len)
		goto out;
	rc = 0;
out:
	free(ids4);
	free(ids6);
	free(base);
	return rc;
}

static int compile_filter(struct spa_core *c, bool with_ids,
			  struct bpf_program *prog)
{
	int rc = build_filter(c, with_ids);

	if (rc < 0)
		return rc;
	if (pcap_compile(c->pcap, prog, c->filter, 1,
			 PCAP_NETMASK_UNKNOWN) < 0)
		return -EINVAL;
	return 0;
}

/* The filter with credential ids is tried first; should libpcap refuse it
 * (a program over the kernel's size limit), the filter without them still
 * keeps out everything that is not v1-shaped. */
static int install_filter(struct spa_core *c, char *errbuf)
{
	struct bpf_program prog;
	int rc;

	c->linktype = pcap_datalink(c->pcap);
	rc = compile_filter(c, true, &prog);
	if (rc < 0)
		rc = compile_filter(c, false, &prog);
	if (rc < 0) {
		snprintf(errbuf, PCAP_ERRBUF_SIZE, "%s",
			 rc == -EINVAL ? pcap_geterr(c->pcap) : strerror(-rc));
		return rc;
	}
	rc = pcap_setfilter(c->pcap, &prog);
	pcap_freecode(&prog);
	if (rc < 0) {
		snprintf(errbuf, PCAP_ERRBUF_SIZE, "%s", pcap_geterr(c->pcap));
		return -EINVAL;
	}
	return 0;
}

static int fail_open(struct spa_core *c, char *errbuf, int rc)
{
	if (c->pcap && !errbuf[0])
		snprintf(errbuf, PCAP_ERRBUF_SIZE, "%s", pcap_geterr(c->pcap));
	if (c->pcap)
		pcap_close(c->pcap);
	c->pcap = NULL;
	return rc;
}

SPA_EXPORT int spa_core_open_live(struct spa_core *c, const char *ifname,
				  char *errbuf)
{
	int rc;

	errbuf[0] = '\0';
	if (c->pcap || c->thread_started)
		return -EBUSY;
	c->pcap = pcap_create(ifname, errbuf);
	if (!c->pcap)
		return -ENODEV;
	if (pcap_set_snaplen(c->pcap, c->cfg.snaplen) ||
	    pcap_set_promisc(c->pcap, 0) ||
	    pcap_set_timeout(c->pcap, c->cfg.timeout_ms) ||
	    pcap_set_buffer_size(c->pcap, c->cfg.buffer_bytes) ||
	    pcap_set_immediate_mode(c->pcap, c->cfg.immediate) ||
	    pcap_set_tstamp_precision(c->pcap, PCAP_TSTAMP_PRECISION_MICRO))
		return fail_open(c, errbuf, -EINVAL);
	rc = pcap_activate(c->pcap);
	if (rc < 0) {
		snprintf(errbuf, PCAP_ERRBUF_SIZE, "%s: %s", ifname,
			 pcap_geterr(c->pcap));
		return fail_open(c, errbuf, -EIO);
	}
	if (pcap_setdirection(c->pcap, PCAP_D_IN) < 0)
		return fail_open(c, errbuf, -EINVAL);
	rc = install_filter(c, errbuf);
	if (rc < 0)
		return fail_open(c, errbuf, rc);
	c->offline = false;
	return 0;
}

SPA_EXPORT int spa_core_open_file(struct spa_core *c, const char *path,
				  char *errbuf)
{
	FILE *fp;
	int rc;

	errbuf[0] = '\0';
	if (c->pcap || c->thread_started)
		return -EBUSY;
	/* opened here so that a missing file and a malformed one are told
	 * apart by errno; libpcap takes the FILE and closes it */
	fp = fopen(path, "rb");
	if (!fp) {
		rc = -errno;
		snprintf(errbuf, PCAP_ERRBUF_SIZE, "%s", strerror(-rc));
		return rc;
	}
	c->pcap = pcap_fopen_offline_with_tstamp_precision(
		fp, PCAP_TSTAMP_PRECISION_MICRO, errbuf);
	if (!c->pcap) {
		fclose(fp);
		return -EINVAL;
	}
	rc = install_filter(c, errbuf);
	if (rc < 0)
		return fail_open(c, errbuf, rc);
	c->offline = true;
	return 0;
}

SPA_EXPORT int spa_core_filter_text(const struct spa_core *c, char *buf,
				    size_t len)
{
	int n = snprintf(buf, len, "%s", c->filter ? c->filter : "");

	return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
}

static void on_frame(u_char *user, const struct pcap_pkthdr *h,
		     const u_char *bytes)
{
	struct spa_core *c = (struct spa_core *)user;
	uint64_t now;

	if (c->cfg.clock == SPA_CLOCK_PCAP)
		now = (uint64_t)h->ts.tv_sec * 1000000u +
		      (uint64_t)h->ts.tv_usec;
	else
		now = now_realtime_us();
	spa_core_process(c, c->linktype, bytes, h->caplen, now);
}

static void wake_consumer(struct spa_core *c)
{
	uint64_t one = 1;

	if (c->ring.efd >= 0 && write(c->ring.efd, &one, sizeof(one)) < 0)
		return;	/* EAGAIN: the counter is already non-zero */
}

static uint64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *capture_main(void *arg)
{
	struct spa_core *c = arg;
	int batch = c->cfg.dispatch_batch;
	uint64_t t0 = clock_ns(CLOCK_MONOTONIC);

	if (c->offline && batch <= 0)
		batch = 4096;	/* a whole file per call could not be stopped */
	while (!atomic_load_explicit(&c->stop, memory_order_relaxed)) {
		int n = pcap_dispatch(c->pcap, batch, on_frame, (u_char *)c);

		if (n == PCAP_ERROR_BREAK)
			break;
		if (n == PCAP_ERROR) {
			snprintf(c->error, sizeof(c->error), "%s",
				 pcap_geterr(c->pcap));
			break;
		}
		if (n == 0 && c->offline)
			break;
	}
	c->capture_ns = clock_ns(CLOCK_MONOTONIC) - t0;
	c->capture_cpu_ns = clock_ns(CLOCK_THREAD_CPUTIME_ID);
	atomic_store_explicit(&c->finished, 1, memory_order_release);
	wake_consumer(c);
	return NULL;
}

SPA_EXPORT int spa_core_start(struct spa_core *c)
{
	int rc;

	if (!c->pcap)
		return -EBADF;
	if (c->thread_started)
		return -EBUSY;
	rc = pthread_create(&c->thread, NULL, capture_main, c);
	if (rc)
		return -rc;
	c->thread_started = true;
	return 0;
}

SPA_EXPORT void spa_core_stop(struct spa_core *c)
{
	if (!c->thread_started)
		return;
	atomic_store(&c->stop, 1);
	pcap_breakloop(c->pcap);
	pthread_join(c->thread, NULL);
	c->thread_started = false;
}

SPA_EXPORT int spa_core_eventfd(const struct spa_core *c)
{
	return c->ring.efd;
}

SPA_EXPORT size_t spa_core_pop(struct spa_core *c, struct spa_record *out,
			       size_t max)
{
	return spa_ring_pop(&c->ring, out, max);
}

SPA_EXPORT int spa_core_prepare_sleep(struct spa_core *c)
{
	/* once the thread has ended nothing will write the eventfd again */
	if (atomic_load_explicit(&c->finished, memory_order_acquire))
		return 0;
	return spa_ring_prepare_sleep(&c->ring) ? 1 : 0;
}

SPA_EXPORT void spa_core_clear_wakeup(struct spa_core *c)
{
	spa_ring_clear_wakeup(&c->ring);
}

SPA_EXPORT int spa_core_finished(const struct spa_core *c)
{
	return atomic_load_explicit(&c->finished, memory_order_acquire);
}

SPA_EXPORT int spa_core_capture_times(const struct spa_core *c,
				      uint64_t out[2])
{
	if (!atomic_load_explicit(&c->finished, memory_order_acquire))
		return -EBUSY;
	out[0] = c->capture_ns;
	out[1] = c->capture_cpu_ns;
	return 0;
}

SPA_EXPORT const char *spa_core_error(const struct spa_core *c)
{
	return c->error;
}

SPA_EXPORT void spa_core_counters(const struct spa_core *c,
				  uint64_t out[SPA_NCOUNTERS])
{
	for (int i = 0; i < SPA_NCOUNTERS; i++)
		out[i] = atomic_load_explicit(&c->counters[i],
					      memory_order_relaxed);
}

SPA_EXPORT int spa_core_pcap_stats(struct spa_core *c, uint64_t out[3])
{
	struct pcap_stat st;

	out[0] = out[1] = out[2] = 0;
	if (!c->pcap || c->offline)
		return -EBADF;
	if (pcap_stats(c->pcap, &st) < 0)
		return -EIO;
	out[0] = st.ps_recv;
	out[1] = st.ps_drop;
	out[2] = st.ps_ifdrop;
	return 0;
}
