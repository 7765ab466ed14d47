/* Lock-free SPSC ring; see ring.h for the layout and ordering.
 *
 * No lost wake-up.  The consumer stores sleeping = 1 and then loads head;
 * the producer stores head and then loads sleeping.  This is the
 * store-then-load-the-other-variable pattern that plain acquire/release does
 * not order, so both sides go through the single total order of seq_cst
 * operations: the consumer's store and its re-check of head are seq_cst,
 * and the producer puts a seq_cst fence between its head store and its
 * load of sleeping.  In that order either the fence comes first, and then
 * the consumer's re-check must see the new head and it does not sleep, or
 * the consumer's store comes first, and then the producer's load after the
 * fence must see sleeping == 1 and it writes the eventfd.  Both may happen;
 * neither missing is impossible.  The price is one fence per push; the
 * eventfd write, the only syscall, happens only while the consumer sleeps.
 */
#include "ring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

static inline int is_pow2(size_t n)
{
	return n && !(n & (n - 1));
}

static inline uint8_t *slot(const struct spa_ring *r, size_t index)
{
	return r->slots + (index & r->mask) * r->rec_size;
}

int spa_ring_init(struct spa_ring *r, size_t capacity, size_t rec_size,
		  bool with_eventfd)
{
	void *mem = NULL;
	int err;

	r->slots = NULL;
	r->efd = -1;
	r->mask = 0;
	r->rec_size = 0;
	atomic_init(&r->head, 0);
	atomic_init(&r->tail, 0);
	atomic_init(&r->sleeping, 0);
	if (!is_pow2(capacity) || rec_size == 0 ||
	    capacity > SIZE_MAX / rec_size)
		return -EINVAL;
	err = posix_memalign(&mem, SPA_CACHELINE, capacity * rec_size);
	if (err)
		return -err;
	if (with_eventfd) {
		r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (r->efd < 0) {
			err = errno;
			free(mem);
			return -err;
		}
	}
	r->slots = mem;
	r->mask = capacity - 1;
	r->rec_size = rec_size;
	return 0;
}

void spa_ring_destroy(struct spa_ring *r)
{
	if (r->efd >= 0)
		close(r->efd);
	r->efd = -1;
	free(r->slots);
	r->slots = NULL;
}

/* Producer, after publishing head. */
static void wake_consumer(struct spa_ring *r)
{
	uint64_t one = 1;
	ssize_t n;

	if (r->efd < 0)
		return;
	atomic_thread_fence(memory_order_seq_cst);
	if (!atomic_load_explicit(&r->sleeping, memory_order_relaxed))
		return;
	if (!atomic_exchange_explicit(&r->sleeping, 0, memory_order_relaxed))
		return;
	/* can only fail if the counter would overflow: it is awake anyway */
	n = write(r->efd, &one, sizeof(one));
	(void)n;
}

bool spa_ring_push(struct spa_ring *r, const void *rec)
{
	size_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
	size_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);

	if (head - tail > r->mask)
		return false;
	memcpy(slot(r, head), rec, r->rec_size);
	atomic_store_explicit(&r->head, head + 1, memory_order_release);
	wake_consumer(r);
	return true;
}

size_t spa_ring_pop(struct spa_ring *r, void *out, size_t max)
{
	size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
	size_t head = atomic_load_explicit(&r->head, memory_order_acquire);
	size_t n = head - tail, first, run;
	uint8_t *dst = out;

	if (n > max)
		n = max;
	if (n == 0)
		return 0;
	first = tail & r->mask;
	run = r->mask + 1 - first;
	if (run > n)
		run = n;
	memcpy(dst, slot(r, tail), run * r->rec_size);
	if (n > run)
		memcpy(dst + run * r->rec_size, r->slots,
		       (n - run) * r->rec_size);
	atomic_store_explicit(&r->tail, tail + n, memory_order_release);
	return n;
}

bool spa_ring_prepare_sleep(struct spa_ring *r)
{
	size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);

	atomic_store_explicit(&r->sleeping, 1, memory_order_seq_cst);
	if (atomic_load_explicit(&r->head, memory_order_seq_cst) != tail) {
		atomic_store_explicit(&r->sleeping, 0, memory_order_relaxed);
		return false;
	}
	return true;
}

void spa_ring_clear_wakeup(struct spa_ring *r)
{
	uint64_t count;
	ssize_t n;

	if (r->efd < 0)
		return;
	/* EAGAIN: nothing was written, which is fine */
	n = read(r->efd, &count, sizeof(count));
	(void)n;
}

size_t spa_ring_count(const struct spa_ring *r)
{
	size_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
	size_t head = atomic_load_explicit(&r->head, memory_order_acquire);

	return head - tail;
}
