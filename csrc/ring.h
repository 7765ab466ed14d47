/* Lock-free single-producer/single-consumer ring of fixed-size records.
 *
 * head and tail only grow; a slot is (index & mask).  The producer publishes
 * a record by storing head with release order after the copy, the consumer
 * frees it by storing tail with release order after its copy; each side reads
 * the other's index with acquire order.  Both indices sit on cache lines of
 * their own so the two cores do not fight over one line.  The producer never
 * waits: a full ring is the caller's drop.  An eventfd wakes the consumer; it
 * is written only when the consumer has said it is about to sleep, so a busy
 * ring costs no system calls.
 */
#ifndef SPA_RING_H
#define SPA_RING_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SPA_CACHELINE 64

struct spa_ring {
	alignas(SPA_CACHELINE) _Atomic size_t head;	/* producer writes */
	alignas(SPA_CACHELINE) _Atomic size_t tail;	/* consumer writes */
	alignas(SPA_CACHELINE) size_t mask;
	size_t rec_size;
	int efd;			/* eventfd, or -1 */
	_Atomic int sleeping;		/* consumer waits on efd */
	uint8_t *slots;			/* (mask + 1) * rec_size bytes */
};

/* capacity must be a power of two; rec_size > 0.  Returns 0 or -errno.
 * with_eventfd: create a non-blocking eventfd for wake-ups. */
int spa_ring_init(struct spa_ring *r, size_t capacity, size_t rec_size,
		  bool with_eventfd);
void spa_ring_destroy(struct spa_ring *r);

/* Producer side.  Copies rec_size bytes; false when the ring is full. */
bool spa_ring_push(struct spa_ring *r, const void *rec);

/* Consumer side.  Copies up to max records into out (max * rec_size bytes),
 * returns how many.  Never blocks. */
size_t spa_ring_pop(struct spa_ring *r, void *out, size_t max);

/* Consumer: announce a sleep on the eventfd.  Returns false if records are
 * already waiting (do not sleep then).  After waking, read the eventfd to
 * clear it (spa_ring_clear_wakeup) and pop. */
bool spa_ring_prepare_sleep(struct spa_ring *r);
void spa_ring_clear_wakeup(struct spa_ring *r);
size_t spa_ring_count(const struct spa_ring *r);

#endif
