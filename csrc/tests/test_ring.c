/* Stress and unit test of the SPSC ring (csrc/ring.c).
 *
 * usage: test_ring [records]		(default 10000000)
 *
 * First some single-thread checks of the API, then two threads: a producer
 * pushes numbered records, each carrying check words derived from its
 * number, and a consumer pops them in batches of random size and demands
 * every number exactly once and in order.  The consumer sleeps on the
 * eventfd whenever the ring is empty; a sleep that outlasts the timeout
 * before the producer is done means a wake-up was lost.  Prints one summary
 * line and exits 0 only when everything held.
 */
#include "../ring.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REC_SIZE	32
#define STRESS_CAP	1024
#define MAX_BATCH	64
#define SLEEP_MS	1000
#define SHORT_GAP	256	/* records between drain pauses, mostly */
#define LONG_GAP	(8 * STRESS_CAP)	/* now and then: fill it */

static int failures;

#define CHECK(cond)							\
	do {								\
		if (!(cond)) {						\
			fprintf(stderr, "%s:%d: check failed: %s\n",	\
				__FILE__, __LINE__, #cond);		\
			failures++;					\
		}							\
	} while (0)

struct rec {
	uint64_t seq;
	uint64_t check;
	uint64_t inv;
	uint64_t check_inv;
};

_Static_assert(sizeof(struct rec) == REC_SIZE, "record is 32 bytes");

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

static uint64_t xorshift64(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

static void make_rec(void *out, uint64_t seq)
{
	struct rec r = {
		.seq = seq,
		.check = mix64(seq),
		.inv = ~seq,
		.check_inv = mix64(~seq),
	};

	memcpy(out, &r, sizeof(r));
}

/* 0 if the record holds seq with intact check words, 1 on a bad checksum,
 * 2 on a sequence break. */
static int check_rec(const void *in, uint64_t seq)
{
	struct rec r;

	memcpy(&r, in, sizeof(r));
	if (r.check != mix64(r.seq) || r.inv != ~r.seq ||
	    r.check_inv != mix64(r.inv))
		return 1;
	return r.seq == seq ? 0 : 2;
}

static uint64_t rec_seq(const void *in)
{
	struct rec r;

	memcpy(&r, in, sizeof(r));
	return r.seq;
}

static int readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- single-thread checks ---- */

static void test_init_errors(void)
{
	static const size_t bad_caps[] = { 0, 3, 6, 12, 1000, 65535 };
	struct spa_ring r;
	size_t i;

	for (i = 0; i < sizeof(bad_caps) / sizeof(bad_caps[0]); i++) {
		CHECK(spa_ring_init(&r, bad_caps[i], REC_SIZE, true) ==
		      -EINVAL);
		spa_ring_destroy(&r);	/* safe after a failed init */
	}
	CHECK(spa_ring_init(&r, 8, 0, false) == -EINVAL);
	spa_ring_destroy(&r);
	CHECK(spa_ring_init(&r, (size_t)1 << (sizeof(size_t) * 8 - 1), 4,
			    false) == -EINVAL);
	spa_ring_destroy(&r);

	CHECK(spa_ring_init(&r, 1, REC_SIZE, false) == 0);
	{
		uint8_t a[REC_SIZE], b[REC_SIZE];

		make_rec(a, 7);
		CHECK(spa_ring_push(&r, a));
		CHECK(!spa_ring_push(&r, a));
		CHECK(spa_ring_pop(&r, b, 4) == 1);
		CHECK(check_rec(b, 7) == 0);
		CHECK(spa_ring_push(&r, a));
	}
	spa_ring_destroy(&r);
}

static void test_full_and_wrap(void)
{
	uint8_t rec[REC_SIZE], out[MAX_BATCH * REC_SIZE];
	struct spa_ring r;
	uint64_t next_push = 0, next_pop = 0, rng = 0x9e3779b97f4a7c15ULL;
	size_t i, n;

	CHECK(spa_ring_init(&r, 8, REC_SIZE, true) == 0);
	CHECK(r.efd >= 0);
	CHECK(spa_ring_count(&r) == 0);
	CHECK(spa_ring_pop(&r, out, MAX_BATCH) == 0);

	for (i = 0; i < 8; i++) {
		make_rec(rec, next_push++);
		CHECK(spa_ring_push(&r, rec));
	}
	make_rec(rec, 999);
	CHECK(!spa_ring_push(&r, rec));		/* full */
	CHECK(spa_ring_count(&r) == 8);

	CHECK(spa_ring_pop(&r, out, 3) == 3);
	for (i = 0; i < 3; i++)
		CHECK(check_rec(out + i * REC_SIZE, next_pop++) == 0);
	for (i = 0; i < 3; i++) {		/* slots 0..2 again */
		make_rec(rec, next_push++);
		CHECK(spa_ring_push(&r, rec));
	}
	CHECK(!spa_ring_push(&r, rec));
	n = spa_ring_pop(&r, out, MAX_BATCH);	/* wraps: 3..7 then 0..2 */
	CHECK(n == 8);
	for (i = 0; i < n; i++)
		CHECK(check_rec(out + i * REC_SIZE, next_pop++) == 0);
	CHECK(spa_ring_count(&r) == 0);

	/* random pushes and batch pops against a counter model */
	for (i = 0; i < 200000 && !failures; i++) {
		size_t k = xorshift64(&rng) % 11, j;

		for (j = 0; j < k; j++) {
			make_rec(rec, next_push);
			if (spa_ring_push(&r, rec))
				next_push++;
			else
				CHECK(next_push - next_pop == 8);
		}
		k = xorshift64(&rng) % 12;
		n = spa_ring_pop(&r, out, k);
		CHECK(n == (k < next_push - next_pop ? k :
			    next_push - next_pop));
		for (j = 0; j < n; j++)
			CHECK(check_rec(out + j * REC_SIZE, next_pop++) == 0);
		CHECK(spa_ring_count(&r) == next_push - next_pop);
	}
	spa_ring_destroy(&r);
	CHECK(r.efd == -1 && r.slots == NULL);
}

static void test_wakeups(void)
{
	uint8_t rec[REC_SIZE], out[REC_SIZE * 4];
	struct spa_ring r;

	CHECK(spa_ring_init(&r, 4, REC_SIZE, true) == 0);
	CHECK(!readable(r.efd));
	spa_ring_clear_wakeup(&r);		/* empty eventfd: no block */

	/* busy ring: no eventfd traffic */
	make_rec(rec, 0);
	CHECK(spa_ring_push(&r, rec));
	CHECK(spa_ring_push(&r, rec));
	CHECK(!readable(r.efd));

	/* records waiting: refuse to sleep and leave the flag down */
	CHECK(!spa_ring_prepare_sleep(&r));
	CHECK(atomic_load(&r.sleeping) == 0);
	CHECK(spa_ring_pop(&r, out, 4) == 2);

	/* empty: sleep; the next push wakes exactly once */
	CHECK(spa_ring_prepare_sleep(&r));
	CHECK(atomic_load(&r.sleeping) == 1);
	CHECK(!readable(r.efd));
	CHECK(spa_ring_push(&r, rec));
	CHECK(readable(r.efd));
	CHECK(atomic_load(&r.sleeping) == 0);
	spa_ring_clear_wakeup(&r);
	CHECK(!readable(r.efd));
	CHECK(spa_ring_push(&r, rec));		/* awake: no write */
	CHECK(!readable(r.efd));
	CHECK(spa_ring_pop(&r, out, 4) == 2);
	spa_ring_destroy(&r);

	/* without an eventfd everything but the wake-up works */
	CHECK(spa_ring_init(&r, 4, REC_SIZE, false) == 0);
	CHECK(r.efd == -1);
	CHECK(spa_ring_prepare_sleep(&r));
	CHECK(spa_ring_push(&r, rec));
	spa_ring_clear_wakeup(&r);
	CHECK(!spa_ring_prepare_sleep(&r));
	CHECK(spa_ring_pop(&r, out, 4) == 1);
	spa_ring_destroy(&r);
}

/* ---- two-thread stress ---- */

static struct spa_ring ring;
static uint64_t n_records;
static atomic_bool producer_done;
static atomic_bool stop;		/* consumer failed: producer gives up */
static uint64_t full_spins;		/* producer's own, read after join */
static uint64_t pauses;			/* likewise */

static uint64_t pause_gap(uint64_t *rng)
{
	uint64_t r = xorshift64(rng);

	return 1 + (r >> 8) % (r % 32 ? SHORT_GAP : LONG_GAP);
}

/* Every so often the producer stops until the consumer has drained the
 * ring.  The push before such a pause is the last for a while, so if it
 * failed to wake a sleeping consumer the ring never drains and the
 * consumer's poll times out: without these pauses the next push would
 * quietly repair most lost wake-ups. */
static void *producer(void *arg)
{
	uint8_t rec[REC_SIZE];
	uint64_t seq, pause_at, rng = 0x853c49e6748fea9bULL;

	(void)arg;
	pause_at = pause_gap(&rng);
	for (seq = 0; seq < n_records; seq++) {
		make_rec(rec, seq);
		while (!spa_ring_push(&ring, rec)) {
			if (atomic_load_explicit(&stop, memory_order_relaxed))
				return NULL;
			full_spins++;
			sched_yield();
		}
		if (seq + 1 != pause_at)
			continue;
		pauses++;
		while (spa_ring_count(&ring) != 0) {
			if (atomic_load_explicit(&stop, memory_order_relaxed))
				return NULL;
			sched_yield();
		}
		pause_at += pause_gap(&rng);
	}
	atomic_store_explicit(&producer_done, true, memory_order_release);
	return NULL;
}

struct consumer_stats {
	uint64_t received;
	uint64_t batches;
	uint64_t sleeps;	/* prepare_sleep said yes, we polled */
	uint64_t sleeps_refused;	/* prepare_sleep found records */
	uint64_t spurious;	/* woke, popped nothing */
	int failed;
};

static int sleep_on_eventfd(struct consumer_stats *st)
{
	struct pollfd p = { .fd = ring.efd, .events = POLLIN };
	int rc;

	do
		rc = poll(&p, 1, SLEEP_MS);
	while (rc < 0 && errno == EINTR);
	if (rc < 0) {
		perror("poll");
		return -1;
	}
	if (rc == 0) {
		size_t waiting = spa_ring_count(&ring);
		bool done = atomic_load(&producer_done);

		if (waiting || !done)
			fprintf(stderr, "LOST WAKE-UP: no wake-up for %d ms "
				"with %zu records waiting, producer %s, "
				"after %" PRIu64 " records\n", SLEEP_MS,
				waiting, done ? "done" : "not done",
				st->received);
		else
			fprintf(stderr, "producer done but only %" PRIu64
				" of %" PRIu64 " records arrived\n",
				st->received, n_records);
		return -1;
	}
	spa_ring_clear_wakeup(&ring);
	return 0;
}

static void consume(struct consumer_stats *st)
{
	uint8_t buf[MAX_BATCH * REC_SIZE];
	uint64_t rng = 0x2545f4914f6cdd1dULL;
	size_t n, i;
	int bad;

	while (st->received < n_records) {
		n = spa_ring_pop(&ring, buf, 1 + xorshift64(&rng) % MAX_BATCH);
		if (n == 0) {
			if (!spa_ring_prepare_sleep(&ring)) {
				st->sleeps_refused++;
				continue;
			}
			st->sleeps++;
			if (sleep_on_eventfd(st) < 0) {
				st->failed = 1;
				return;
			}
			if (spa_ring_count(&ring) == 0)
				st->spurious++;
			continue;
		}
		st->batches++;
		for (i = 0; i < n; i++) {
			bad = check_rec(buf + i * REC_SIZE, st->received);
			if (bad) {
				fprintf(stderr, "record %" PRIu64 ": %s "
					"(got seq %" PRIu64 ")\n",
					st->received, bad == 1 ?
					"bad checksum" : "out of sequence",
					rec_seq(buf + i * REC_SIZE));
				st->failed = 1;
				return;
			}
			st->received++;
		}
	}
	/* the producer has nothing more: the ring must stay empty */
	if (spa_ring_pop(&ring, buf, MAX_BATCH) != 0) {
		fprintf(stderr, "records beyond the last one\n");
		st->failed = 1;
	}
}

static int stress(void)
{
	struct consumer_stats st = { 0 };
	pthread_t tid;
	double t0, dt;
	int err;

	err = spa_ring_init(&ring, STRESS_CAP, REC_SIZE, true);
	if (err) {
		fprintf(stderr, "spa_ring_init: %s\n", strerror(-err));
		return 1;
	}
	t0 = now_s();
	err = pthread_create(&tid, NULL, producer, NULL);
	if (err) {
		fprintf(stderr, "pthread_create: %s\n", strerror(err));
		spa_ring_destroy(&ring);
		return 1;
	}
	consume(&st);
	if (st.failed)
		atomic_store(&stop, true);
	pthread_join(tid, NULL);
	dt = now_s() - t0;
	spa_ring_destroy(&ring);

	printf("test_ring: %s records=%" PRIu64 " batches=%" PRIu64
	       " sleeps=%" PRIu64 " sleeps_refused=%" PRIu64
	       " spurious_wakeups=%" PRIu64 " full_spins=%" PRIu64
	       " pauses=%" PRIu64 " seconds=%.2f\n",
	       st.failed || failures ? "FAIL" : "PASS", st.received,
	       st.batches, st.sleeps, st.sleeps_refused, st.spurious,
	       full_spins, pauses, dt);
	return st.failed;
}

int main(int argc, char **argv)
{
	char *end;

	n_records = 10000000;
	if (argc > 1) {
		errno = 0;
		n_records = strtoull(argv[1], &end, 10);
		if (errno || *end || end == argv[1] || n_records == 0) {
			fprintf(stderr, "usage: %s [records]\n", argv[0]);
			return 2;
		}
	}
	test_init_errors();
	test_full_and_wrap();
	test_wakeups();
	if (failures) {
		fprintf(stderr, "test_ring: %d unit check(s) failed\n",
			failures);
		printf("test_ring: FAIL records=0\n");
		return 1;
	}
	return stress() || failures ? 1 : 0;
}
