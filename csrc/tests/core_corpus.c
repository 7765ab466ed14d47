/* Run spa_core_process (the whole packet path) over a corpus of frames.
 *
 * usage: core_corpus corpus.bin
 *
 * The corpus (all integers little-endian) starts with a header:
 *	u32 ncreds, then ncreds times: id[8] secret[32]
 *	u64 window_us, u64 now_us
 * and continues with records:
 *	u32 linktype, u32 len, u8 expect, len bytes of frame
 * where expect is an enum spa_counter value, or 255 for "any outcome"
 * (mutated frames: memory safety and the invariants below only).
 *
 * One core is made with the credentials (in order: credential i has index
 * i), the window and the default port; every frame is copied into a heap
 * buffer of exactly its length, so that a sanitizer sees any read past the
 * capture, and processed at now_us.  After each frame the ring is drained:
 * an accepted frame must leave exactly one record, any other outcome none,
 * and exactly the returned counter must have grown by one.  Each record is
 * checked (family, address padding, port, clock, credential index, padding
 * bytes zero) and printed as
 *	acc INDEX CRED FAMILY SRC DST SPORT DPORT TS_US RX_US KEY BODY
 * (addresses as 32 hex digits, KEY and BODY in hex) for the caller to judge
 * against its oracle.  At the end it prints
 *	counters C0 C1 ... (enum spa_counter order)
 *	frames=N mismatches=M
 * and exits 1 if M > 0, 2 on a bad corpus or a failed setup call.
 */
#include "../spa.h"
#include "corpus.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CRED_LEN	(SPA_ID_LEN + SPA_SECRET_LEN)

struct corpus {
	const uint8_t *data;
	size_t size;
	size_t records_off;	/* first record */
	uint32_t ncreds;
	uint64_t window_us;
	uint64_t now_us;
};

static bool parse_header(struct corpus *c)
{
	size_t off = 4;

	if (c->size < 4)
		return false;
	c->ncreds = load_le32(c->data);
	if ((c->size - off) / CRED_LEN < c->ncreds)
		return false;
	off += (size_t)c->ncreds * CRED_LEN;
	if (c->size - off < 16)
		return false;
	c->window_us = load_le64(c->data + off);
	c->now_us = load_le64(c->data + off + 8);
	c->records_off = off + 16;
	return true;
}

/* Walks the records once: checks their framing and counts the frames that
 * may be accepted, to size the replay set. */
static bool scan_records(const struct corpus *c, size_t *may_accept)
{
	size_t off = c->records_off;
	struct corpus_record r;

	*may_accept = 0;
	while (off < c->size) {
		if (!next_record(c->data, c->size, &off, &r))
			return false;
		if (r.expect == SPA_C_ACCEPTED || r.expect == EXPECT_ANY)
			(*may_accept)++;
	}
	return true;
}

static struct spa_core *make_core(const struct corpus *c, size_t may_accept)
{
	struct spa_core_cfg cfg;
	struct spa_core *core;
	size_t cap = 1024;

	/* far more room than accepted knocks, so no probe run ever fills */
	while (cap < may_accept * 8 && cap < ((size_t)1 << 24))
		cap <<= 1;
	spa_core_default_cfg(&cfg);
	cfg.window_us = c->window_us;
	cfg.replay_capacity = (uint32_t)cap;
	cfg.ring_capacity = 64;		/* drained after every frame */
	cfg.max_creds = c->ncreds ? c->ncreds : 1;
	core = spa_core_new(&cfg);
	if (!core) {
		fprintf(stderr, "spa_core_new failed\n");
		return NULL;
	}
	for (uint32_t i = 0; i < c->ncreds; i++) {
		const uint8_t *e = c->data + 4 + (size_t)i * CRED_LEN;
		int rc = spa_core_add_cred(core, e, e + SPA_ID_LEN);

		if (rc != (int)i) {
			fprintf(stderr, "spa_core_add_cred(%u) = %d\n", i, rc);
			spa_core_free(core);
			return NULL;
		}
	}
	return core;
}

/* The promises an accepted record keeps; NULL if kept. */
static const char *check_record(const struct corpus *c,
				const struct spa_record *r)
{
	uint64_t age;

	if (r->family != 4 && r->family != 6)
		return "family";
	if (r->family == 4 &&
	    (!all_zero(r->src + 4, 12) || !all_zero(r->dst + 4, 12)))
		return "IPv4 address padding";
	if (r->cred >= c->ncreds)
		return "credential index";
	if (r->rx_us != c->now_us)
		return "rx_us is not the verification clock";
	age = r->ts_us > c->now_us ? r->ts_us - c->now_us :
				     c->now_us - r->ts_us;
	if (age > c->window_us)
		return "timestamp outside the window";
	if (!all_zero(r->pad0, sizeof(r->pad0)) ||
	    !all_zero(r->pad1, sizeof(r->pad1)))
		return "padding bytes not zero";
	return NULL;
}

static void print_record(size_t index, const struct spa_record *r)
{
	printf("acc %zu %u %u", index, r->cred, r->family);
	print_hex(r->src, sizeof(r->src));
	print_hex(r->dst, sizeof(r->dst));
	printf(" %u %u %" PRIu64 " %" PRIu64, r->sport, r->dport, r->ts_us,
	       r->rx_us);
	print_hex(r->replay_key, sizeof(r->replay_key));
	print_hex(r->body, sizeof(r->body));
	putchar('\n');
}

/* Everything one frame must satisfy; NULL if it did. */
static const char *run_frame(struct spa_core *core, const struct corpus *c,
			     size_t index, int linktype, const uint8_t *buf,
			     size_t len, int *verdict)
{
	uint64_t before[SPA_NCOUNTERS], after[SPA_NCOUNTERS];
	struct spa_record out[2];
	const char *broken;
	enum spa_counter v;
	size_t n;

	spa_core_counters(core, before);
	v = spa_core_process(core, linktype, buf, len, c->now_us);
	*verdict = (int)v;
	spa_core_counters(core, after);
	n = spa_core_pop(core, out, 2);
	if ((int)v < 0 || v >= SPA_NCOUNTERS)
		return "verdict out of range";
	for (int i = 0; i < SPA_NCOUNTERS; i++)
		if (after[i] - before[i] != (i == (int)v ? 1u : 0u))
			return "counters moved other than by one for the verdict";
	if (v != SPA_C_ACCEPTED)
		return n ? "record pushed for a dropped frame" : NULL;
	if (n != 1)
		return "accepted frame did not leave exactly one record";
	broken = check_record(c, &out[0]);
	if (!broken)
		print_record(index, &out[0]);
	return broken;
}

int main(int argc, char **argv)
{
	struct corpus c = {0};
	struct spa_core *core;
	uint64_t counters[SPA_NCOUNTERS];
	size_t off, frames = 0, mismatches = 0, may_accept;
	struct corpus_record rec;
	const char *broken;
	uint8_t *corpus, *buf;
	int got;

	if (argc != 2) {
		fprintf(stderr, "usage: %s corpus\n", argv[0]);
		return 2;
	}
	corpus = read_file(argv[1], &c.size);
	if (!corpus)
		return 2;
	c.data = corpus;
	if (!parse_header(&c)) {
		fprintf(stderr, "corpus: bad header\n");
		free(corpus);
		return 2;
	}
	if (!scan_records(&c, &may_accept)) {
		free(corpus);
		return 2;
	}
	core = make_core(&c, may_accept);
	if (!core) {
		free(corpus);
		return 2;
	}

	off = c.records_off;
	/* scan_records has checked every record's framing */
	while (off < c.size && next_record(corpus, c.size, &off, &rec)) {
		buf = malloc(rec.len ? rec.len : 1);
		if (!buf) {
			perror("malloc");
			spa_core_free(core);
			free(corpus);
			return 2;
		}
		memcpy(buf, rec.frame, rec.len);
		/* an empty frame is handed over as the end of a 1-byte
		 * buffer, so that reading any byte of it is an overflow */
		broken = run_frame(core, &c, frames, (int)rec.linktype,
				   rec.len ? buf : buf + 1, rec.len, &got);
		if (broken || (rec.expect != EXPECT_ANY && got != rec.expect)) {
			mismatches++;
			printf("mismatch index=%zu linktype=%u expected=%u "
			       "got=%d%s%s\n", frames, rec.linktype, rec.expect,
			       got, broken ? " broken=" : "",
			       broken ? broken : "");
		}
		free(buf);
		frames++;
	}

	spa_core_counters(core, counters);
	printf("counters");
	for (int i = 0; i < SPA_NCOUNTERS; i++)
		printf(" %" PRIu64, counters[i]);
	putchar('\n');
	spa_core_free(core);
	free(corpus);
	printf("frames=%zu mismatches=%zu\n", frames, mismatches);
	return mismatches ? 1 : 0;
}
