/* BLAKE3, portable C, written from the specification (the BLAKE3 paper,
 * sections 2 and 5).  See blake3.h for the scope.
 *
 * Layout of the code:
 *   - the compression function, fully unrolled through a G macro and a
 *     precomputed message schedule (the permutation applied r times);
 *   - the chunk state, which compresses 64-byte blocks of one 1 KiB chunk
 *     and always keeps the last block back, because only at finalization
 *     is it known whether that block ends the chunk and whether the chunk
 *     is the root;
 *   - the hasher, which folds completed chunk chaining values into a
 *     stack of subtree roots, merging lazily: a chunk is only completed
 *     once input beyond it arrives, so the root is never merged early;
 *   - the output node, from which the root is recompressed with the ROOT
 *     flag and an output block counter to give any slice of the XOF.
 */
#include "blake3.h"

#include <string.h>

enum {
	CHUNK_START = 1u << 0,
	CHUNK_END = 1u << 1,
	PARENT = 1u << 2,
	ROOT = 1u << 3,
	KEYED_HASH = 1u << 4,
	DERIVE_KEY_CONTEXT = 1u << 5,
	DERIVE_KEY_MATERIAL = 1u << 6,
};

static const uint32_t IV[8] = {
	0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
	0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u,
};

/* Row r is the message word order for round r: row 0 is the identity and
 * row r+1 is row r permuted by {2,6,3,10,7,0,4,13,1,11,12,5,9,14,15,8}. */
static const uint8_t SCHED[7][16] = {
	{ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 },
	{ 2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8 },
	{ 3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1 },
	{ 10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6 },
	{ 12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4 },
	{ 9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7 },
	{ 11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13 },
};

/* Wipes through a volatile function pointer so the stores are not elided
 * as dead; it is never written, only read. */
static void *(*const volatile wipe_fn)(void *, int, size_t) = memset;

static void
wipe(void *p, size_t n)
{
	wipe_fn(p, 0, n);
}

static inline uint32_t
load32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static inline void
store32(uint8_t *p, uint32_t w)
{
	p[0] = (uint8_t)w;
	p[1] = (uint8_t)(w >> 8);
	p[2] = (uint8_t)(w >> 16);
	p[3] = (uint8_t)(w >> 24);
}

static inline uint32_t
rotr32(uint32_t w, unsigned int c)
{
	return (w >> c) | (w << (32 - c));
}

static inline void
load_words(uint32_t *w, const uint8_t *p, size_t nwords)
{
	size_t i;

	for (i = 0; i < nwords; i++)
		w[i] = load32(p + 4 * i);
}

static inline void
store_words(uint8_t *p, const uint32_t *w, size_t nwords)
{
	size_t i;

	for (i = 0; i < nwords; i++)
		store32(p + 4 * i, w[i]);
}

#define G(a, b, c, d, x, y)						\
	do {								\
		v[a] = v[a] + v[b] + (x);				\
		v[d] = rotr32(v[d] ^ v[a], 16);				\
		v[c] = v[c] + v[d];					\
		v[b] = rotr32(v[b] ^ v[c], 12);				\
		v[a] = v[a] + v[b] + (y);				\
		v[d] = rotr32(v[d] ^ v[a], 8);				\
		v[c] = v[c] + v[d];					\
		v[b] = rotr32(v[b] ^ v[c], 7);				\
	} while (0)

#define ROUND(r)							\
	do {								\
		G(0, 4, 8, 12, m[SCHED[r][0]], m[SCHED[r][1]]);		\
		G(1, 5, 9, 13, m[SCHED[r][2]], m[SCHED[r][3]]);		\
		G(2, 6, 10, 14, m[SCHED[r][4]], m[SCHED[r][5]]);	\
		G(3, 7, 11, 15, m[SCHED[r][6]], m[SCHED[r][7]]);	\
		G(0, 5, 10, 15, m[SCHED[r][8]], m[SCHED[r][9]]);	\
		G(1, 6, 11, 12, m[SCHED[r][10]], m[SCHED[r][11]]);	\
		G(2, 7, 8, 13, m[SCHED[r][12]], m[SCHED[r][13]]);	\
		G(3, 4, 9, 14, m[SCHED[r][14]], m[SCHED[r][15]]);	\
	} while (0)

/* The seven rounds, leaving the 16-word state in out (before the final
 * feed-forward, which the callers apply as far as they need it).  State
 * and message live in locals, which the compiler keeps in registers; work
 * done through the caller's pointers would be stored at every step, as
 * they might alias. */
static void
permute_state(uint32_t out[16], const uint32_t cv[8], const uint32_t msg[16],
	      uint64_t counter, uint32_t block_len, uint32_t flags)
{
	uint32_t v[16], m[16];

	memcpy(m, msg, sizeof(m));
	memcpy(v, cv, 8 * sizeof(v[0]));
	v[8] = IV[0];
	v[9] = IV[1];
	v[10] = IV[2];
	v[11] = IV[3];
	v[12] = (uint32_t)counter;
	v[13] = (uint32_t)(counter >> 32);
	v[14] = block_len;
	v[15] = flags;
	ROUND(0);
	ROUND(1);
	ROUND(2);
	ROUND(3);
	ROUND(4);
	ROUND(5);
	ROUND(6);
	memcpy(out, v, sizeof(v));
}

/* Compression truncated to a chaining value, written back into cv. */
static void
compress_cv(uint32_t cv[8], const uint32_t m[16], uint64_t counter,
	    uint32_t block_len, uint32_t flags)
{
	uint32_t v[16];
	int i;

	permute_state(v, cv, m, counter, block_len, flags);
	for (i = 0; i < 8; i++)
		cv[i] = v[i] ^ v[i + 8];
}

/* Full 16-word compression output, serialized little-endian to 64 bytes. */
static void
compress_xof(const uint32_t cv[8], const uint32_t m[16], uint64_t counter,
	     uint32_t block_len, uint32_t flags, uint8_t out[64])
{
	uint32_t v[16];
	int i;

	permute_state(v, cv, m, counter, block_len, flags);
	for (i = 0; i < 8; i++) {
		store32(out + 4 * i, v[i] ^ v[i + 8]);
		store32(out + 32 + 4 * i, v[i + 8] ^ cv[i]);
	}
}

/* ---- output node: the inputs of a compression not yet performed ---- */

struct output {
	uint32_t cv[8];
	uint32_t m[16];
	uint64_t counter;
	uint32_t block_len;
	uint32_t flags;
};

static void
output_cv(const struct output *o, uint32_t cv[8])
{
	memcpy(cv, o->cv, sizeof(o->cv));
	compress_cv(cv, o->m, o->counter, o->block_len, o->flags);
}

static void
parent_output(struct output *o, const uint8_t left_right[64],
	      const uint32_t key[8], uint32_t flags)
{
	memcpy(o->cv, key, sizeof(o->cv));
	load_words(o->m, left_right, 16);
	o->counter = 0;
	o->block_len = SPA_BLAKE3_BLOCK_LEN;
	o->flags = flags | PARENT;
}

/* ---- chunk state ---- */

static void
chunk_init(struct spa_blake3_chunk *c, const uint32_t key[8],
	   uint64_t counter, uint8_t flags)
{
	memcpy(c->cv, key, sizeof(c->cv));
	c->counter = counter;
	c->buf_len = 0;
	c->blocks_compressed = 0;
	c->flags = flags;
}

static inline size_t
chunk_len(const struct spa_blake3_chunk *c)
{
	return (size_t)c->blocks_compressed * SPA_BLAKE3_BLOCK_LEN + c->buf_len;
}

static inline uint32_t
chunk_start_flag(const struct spa_blake3_chunk *c)
{
	return c->blocks_compressed == 0 ? CHUNK_START : 0;
}

static void
chunk_compress_block(struct spa_blake3_chunk *c, const uint8_t *block)
{
	uint32_t m[16];

	load_words(m, block, 16);
	compress_cv(c->cv, m, c->counter, SPA_BLAKE3_BLOCK_LEN,
		    c->flags | chunk_start_flag(c));
	c->blocks_compressed++;
}

/* Absorbs at most the rest of the chunk; the caller guarantees that len
 * does not exceed SPA_BLAKE3_CHUNK_LEN - chunk_len(c). */
static void
chunk_update(struct spa_blake3_chunk *c, const uint8_t *in, size_t len)
{
	size_t take;

	if (c->buf_len > 0) {
		take = SPA_BLAKE3_BLOCK_LEN - c->buf_len;
		if (take > len)
			take = len;
		memcpy(c->buf + c->buf_len, in, take);
		c->buf_len = (uint8_t)(c->buf_len + take);
		in += take;
		len -= take;
		if (len == 0)
			return;
		/* More follows, so the full buffer is not the last block. */
		chunk_compress_block(c, c->buf);
		c->buf_len = 0;
	}
	/* Whole blocks straight from the input, keeping one back. */
	while (len > SPA_BLAKE3_BLOCK_LEN) {
		chunk_compress_block(c, in);
		in += SPA_BLAKE3_BLOCK_LEN;
		len -= SPA_BLAKE3_BLOCK_LEN;
	}
	memcpy(c->buf, in, len);
	c->buf_len = (uint8_t)len;
}

static void
chunk_output(const struct spa_blake3_chunk *c, struct output *o)
{
	uint8_t block[SPA_BLAKE3_BLOCK_LEN];

	memcpy(block, c->buf, c->buf_len);
	memset(block + c->buf_len, 0, SPA_BLAKE3_BLOCK_LEN - c->buf_len);
	memcpy(o->cv, c->cv, sizeof(o->cv));
	load_words(o->m, block, 16);
	o->counter = c->counter;
	o->block_len = c->buf_len;
	o->flags = (uint32_t)c->flags | chunk_start_flag(c) | CHUNK_END;
	wipe(block, sizeof(block));
}

/* ---- hasher ---- */

static void
hasher_init(struct spa_blake3 *self, const uint32_t key[8], uint8_t flags)
{
	memcpy(self->key, key, sizeof(self->key));
	chunk_init(&self->chunk, key, 0, flags);
	self->cv_stack_len = 0;
}

void
spa_blake3_init(struct spa_blake3 *self)
{
	hasher_init(self, IV, 0);
}

void
spa_blake3_init_keyed(struct spa_blake3 *self,
		      const uint8_t key[SPA_BLAKE3_KEY_LEN])
{
	uint32_t k[8];

	load_words(k, key, 8);
	hasher_init(self, k, KEYED_HASH);
	wipe(k, sizeof(k));
}

void
spa_blake3_init_derive_key(struct spa_blake3 *self, const char *context)
{
	struct spa_blake3 ctx;
	uint8_t ctx_key[SPA_BLAKE3_KEY_LEN];
	uint32_t k[8];

	hasher_init(&ctx, IV, DERIVE_KEY_CONTEXT);
	spa_blake3_update(&ctx, context, strlen(context));
	spa_blake3_finalize(&ctx, ctx_key, sizeof(ctx_key));
	load_words(k, ctx_key, 8);
	hasher_init(self, k, DERIVE_KEY_MATERIAL);
	wipe(k, sizeof(k));
	wipe(ctx_key, sizeof(ctx_key));
	/* The context is public, but the state is tidied all the same. */
	wipe(&ctx.chunk, sizeof(ctx.chunk));
}

/* Called with the chaining value of a completed chunk, once input beyond
 * it is known to exist.  total_chunks counts chunks completed so far,
 * this one included; each trailing zero bit of it is a subtree of equal
 * size now complete on the stack, merged into its parent. */
static void
push_chunk_cv(struct spa_blake3 *self, const uint32_t cv[8],
	      uint64_t total_chunks)
{
	uint8_t *top;
	struct output o;
	uint32_t pcv[8];

	store_words(self->cv_stack + self->cv_stack_len * SPA_BLAKE3_OUT_LEN,
		    cv, 8);
	self->cv_stack_len++;
	while ((total_chunks & 1) == 0) {
		/* Left and right CVs are adjacent: one 64-byte parent block. */
		self->cv_stack_len--;
		top = self->cv_stack +
		      (self->cv_stack_len - 1) * SPA_BLAKE3_OUT_LEN;
		parent_output(&o, top, self->key, self->chunk.flags);
		output_cv(&o, pcv);
		store_words(top, pcv, 8);
		total_chunks >>= 1;
	}
	wipe(&o, sizeof(o));
	wipe(pcv, sizeof(pcv));
}

void
spa_blake3_update(struct spa_blake3 *self, const void *in, size_t len)
{
	const uint8_t *p = in;
	struct output o;
	uint32_t cv[8];
	uint64_t done;
	size_t take;

	while (len > 0) {
		if (chunk_len(&self->chunk) == SPA_BLAKE3_CHUNK_LEN) {
			chunk_output(&self->chunk, &o);
			output_cv(&o, cv);
			done = self->chunk.counter + 1;
			push_chunk_cv(self, cv, done);
			chunk_init(&self->chunk, self->key, done,
				   self->chunk.flags);
			wipe(&o, sizeof(o));
			wipe(cv, sizeof(cv));
		}
		take = SPA_BLAKE3_CHUNK_LEN - chunk_len(&self->chunk);
		if (take > len)
			take = len;
		chunk_update(&self->chunk, p, take);
		p += take;
		len -= take;
	}
}

void
spa_blake3_finalize_seek(const struct spa_blake3 *self, uint64_t seek,
			 uint8_t *out, size_t out_len)
{
	struct output o;
	uint32_t cv[8];
	uint8_t block[SPA_BLAKE3_BLOCK_LEN];
	uint64_t counter;
	size_t skip, n, i;

	if (out_len == 0)
		return;
	/* Fold the current chunk and every stacked subtree, right to left,
	 * leaving the root node's compression inputs in o. */
	chunk_output(&self->chunk, &o);
	for (i = self->cv_stack_len; i > 0; i--) {
		output_cv(&o, cv);
		memcpy(block, self->cv_stack + (i - 1) * SPA_BLAKE3_OUT_LEN,
		       SPA_BLAKE3_OUT_LEN);
		store_words(block + SPA_BLAKE3_OUT_LEN, cv, 8);
		parent_output(&o, block, self->key, self->chunk.flags);
	}
	counter = seek / SPA_BLAKE3_BLOCK_LEN;
	skip = (size_t)(seek % SPA_BLAKE3_BLOCK_LEN);
	while (out_len > 0) {
		compress_xof(o.cv, o.m, counter, o.block_len, o.flags | ROOT,
			     block);
		n = SPA_BLAKE3_BLOCK_LEN - skip;
		if (n > out_len)
			n = out_len;
		memcpy(out, block + skip, n);
		out += n;
		out_len -= n;
		skip = 0;
		counter++;
	}
	wipe(block, sizeof(block));
	wipe(&o, sizeof(o));
	wipe(cv, sizeof(cv));
}

void
spa_blake3_finalize(const struct spa_blake3 *self, uint8_t *out,
		    size_t out_len)
{
	spa_blake3_finalize_seek(self, 0, out, out_len);
}

/* Clears what a one-shot left on the stack: key, chunk and the part of
 * the CV stack that was used, not the whole 1.7 KiB array. */
static void
hasher_wipe(struct spa_blake3 *self, size_t max_stack)
{
	wipe(self->key, sizeof(self->key));
	wipe(&self->chunk, sizeof(self->chunk));
	wipe(self->cv_stack, max_stack * SPA_BLAKE3_OUT_LEN);
	self->cv_stack_len = 0;
}

/* Bound on the CV stack entries touched for an input of len bytes.  A
 * chunk is completed only when input follows it, so at most
 * n = (len - 1) / CHUNK_LEN chunks are; while the k-th is pushed the stack
 * holds popcount(k - 1) + 1 entries, which is at most bitlen(n) + 1. */
static size_t
stack_used(size_t len)
{
	uint64_t chunks;
	size_t d = 1;

	if (len <= SPA_BLAKE3_CHUNK_LEN)
		return 0;
	chunks = (uint64_t)(len - 1) / SPA_BLAKE3_CHUNK_LEN;
	while (chunks != 0) {
		d++;
		chunks >>= 1;
	}
	return d < SPA_BLAKE3_MAX_DEPTH + 1 ? d : SPA_BLAKE3_MAX_DEPTH + 1;
}

void
spa_blake3_hash(const uint8_t *in, size_t len, uint8_t *out, size_t out_len)
{
	struct spa_blake3 h;

	spa_blake3_init(&h);
	spa_blake3_update(&h, in, len);
	spa_blake3_finalize(&h, out, out_len);
	hasher_wipe(&h, stack_used(len));
}

void
spa_blake3_keyed(const uint8_t key[SPA_BLAKE3_KEY_LEN], const uint8_t *in,
		 size_t len, uint8_t *out, size_t out_len)
{
	struct spa_blake3 h;

	spa_blake3_init_keyed(&h, key);
	spa_blake3_update(&h, in, len);
	spa_blake3_finalize(&h, out, out_len);
	hasher_wipe(&h, stack_used(len));
}

void
spa_blake3_derive_key(const char *context, const uint8_t *material,
		      size_t len, uint8_t *out, size_t out_len)
{
	struct spa_blake3 h;

	spa_blake3_init_derive_key(&h, context);
	spa_blake3_update(&h, material, len);
	spa_blake3_finalize(&h, out, out_len);
	hasher_wipe(&h, stack_used(len));
}
