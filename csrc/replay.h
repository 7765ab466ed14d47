/* Replay set: the 16-byte replay keys of packets accepted within the time
 * window, each with the instant after which the timestamp check alone
 * refuses the packet and the entry may be reused.
 *
 * Open addressing with a bounded probe run.  The keys are MAC output, which
 * an attacker cannot choose without the credential, so the slot index is
 * simply the key's first bytes mixed with a per-process random seed.  An
 * entry is never evicted while it is live: when every slot of a probe run is
 * live the insert fails and the caller refuses the packet.  Refusing a
 * genuine knock under that pressure is the safe failure; forgetting a key
 * would let its packet be replayed.
 */
#ifndef SPA_REPLAY_H
#define SPA_REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spa.h"

#define SPA_REPLAY_PROBES 32

struct spa_replay_slot {
	uint8_t key[SPA_REPLAY_KEY_LEN];
	uint64_t expires_us;		/* 0: never used */
};

struct spa_replay {
	struct spa_replay_slot *slots;
	size_t mask;
	uint64_t seed;
};

enum spa_replay_result {
	SPA_REPLAY_FRESH,	/* *slot is where the key can be stored */
	SPA_REPLAY_SEEN,
	SPA_REPLAY_FULL,
};

int spa_replay_init(struct spa_replay *r, size_t capacity, uint64_t seed);
void spa_replay_destroy(struct spa_replay *r);
enum spa_replay_result spa_replay_find(const struct spa_replay *r,
				       const uint8_t key[SPA_REPLAY_KEY_LEN],
				       uint64_t now_us, size_t *slot);
void spa_replay_store(struct spa_replay *r, size_t slot,
		      const uint8_t key[SPA_REPLAY_KEY_LEN],
		      uint64_t expires_us);

#endif
