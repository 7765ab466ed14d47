#include "replay.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static uint64_t load_le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static size_t slot_of(const struct spa_replay *r, const uint8_t *key)
{
	uint64_t h = load_le64(key) ^ r->seed;

	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return (size_t)h & r->mask;
}

int spa_replay_init(struct spa_replay *r, size_t capacity, uint64_t seed)
{
	size_t n = 1024;

	while (n < capacity && n < ((size_t)1 << 30))
		n <<= 1;
	r->slots = calloc(n, sizeof(*r->slots));
	if (!r->slots)
		return -ENOMEM;
	r->mask = n - 1;
	r->seed = seed;
	return 0;
}

void spa_replay_destroy(struct spa_replay *r)
{
	free(r->slots);
	r->slots = NULL;
}

/* A run of SPA_REPLAY_PROBES slots from the home slot holds every key that
 * hashes there: inserts never go past it, so a lookup need not either.  An
 * expired slot in the run may be reused, but the lookup still scans the
 * whole run, because the key may sit behind it. */
enum spa_replay_result spa_replay_find(const struct spa_replay *r,
				       const uint8_t key[SPA_REPLAY_KEY_LEN],
				       uint64_t now_us, size_t *slot)
{
	size_t home = slot_of(r, key);
	size_t free_slot = (size_t)-1;

	for (size_t i = 0; i < SPA_REPLAY_PROBES; i++) {
		size_t s = (home + i) & r->mask;
		const struct spa_replay_slot *e = &r->slots[s];

		if (e->expires_us == 0) {
			if (free_slot == (size_t)-1)
				free_slot = s;
			break;
		}
		if (e->expires_us < now_us) {
			if (free_slot == (size_t)-1)
				free_slot = s;
			continue;
		}
		if (memcmp(e->key, key, SPA_REPLAY_KEY_LEN) == 0)
			return SPA_REPLAY_SEEN;
	}
	if (free_slot == (size_t)-1)
		return SPA_REPLAY_FULL;
	*slot = free_slot;
	return SPA_REPLAY_FRESH;
}

void spa_replay_store(struct spa_replay *r, size_t slot,
		      const uint8_t key[SPA_REPLAY_KEY_LEN],
		      uint64_t expires_us)
{
	struct spa_replay_slot *e = &r->slots[slot & r->mask];

	memcpy(e->key, key, SPA_REPLAY_KEY_LEN);
	e->expires_us = expires_us ? expires_us : 1;
}
