/* BLAKE3, in C, written from the specification.
 *
 * Only what the SPA core needs: keyed hashing, derive-key mode and extendable
 * output, through an incremental hasher kept on the caller's stack.  No
 * allocation, no threads, and SIMD only inside one compression (SSE2 or
 * SSSE3 on x86-64, portable C elsewhere), never across blocks or chunks.
 * The tree mode is implemented in full, so inputs of any length hash
 * correctly, but packets are a few blocks long and that is what the code
 * is tuned for.
 */
#ifndef SPA_BLAKE3_H
#define SPA_BLAKE3_H

#include <stddef.h>
#include <stdint.h>

#define SPA_BLAKE3_KEY_LEN	32
#define SPA_BLAKE3_OUT_LEN	32
#define SPA_BLAKE3_BLOCK_LEN	64
#define SPA_BLAKE3_CHUNK_LEN	1024
#define SPA_BLAKE3_MAX_DEPTH	54

struct spa_blake3_chunk {
	uint32_t cv[8];
	uint64_t counter;
	uint8_t buf[SPA_BLAKE3_BLOCK_LEN];
	uint8_t buf_len;
	uint8_t blocks_compressed;
	uint8_t flags;
};

struct spa_blake3 {
	uint32_t key[8];
	struct spa_blake3_chunk chunk;
	uint8_t cv_stack_len;
	uint8_t cv_stack[(SPA_BLAKE3_MAX_DEPTH + 1) * SPA_BLAKE3_OUT_LEN];
};

void spa_blake3_init(struct spa_blake3 *self);
void spa_blake3_init_keyed(struct spa_blake3 *self,
			   const uint8_t key[SPA_BLAKE3_KEY_LEN]);
/* context is a NUL-terminated string, as the specification requires */
void spa_blake3_init_derive_key(struct spa_blake3 *self, const char *context);
void spa_blake3_update(struct spa_blake3 *self, const void *in, size_t len);
/* Extendable output: out_len bytes starting at byte offset seek of the
 * output stream.  Does not change the hasher, so it may be called again. */
void spa_blake3_finalize_seek(const struct spa_blake3 *self, uint64_t seek,
			      uint8_t *out, size_t out_len);
void spa_blake3_finalize(const struct spa_blake3 *self, uint8_t *out,
			 size_t out_len);

/* One-shot helpers used by the verifier and exposed to Python for tests. */
void spa_blake3_hash(const uint8_t *in, size_t len, uint8_t *out,
		     size_t out_len);
void spa_blake3_keyed(const uint8_t key[SPA_BLAKE3_KEY_LEN], const uint8_t *in,
		      size_t len, uint8_t *out, size_t out_len);
void spa_blake3_derive_key(const char *context, const uint8_t *material,
			   size_t len, uint8_t *out, size_t out_len);

#endif
