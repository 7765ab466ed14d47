/* BLAKE3 in C, written from the specification (the BLAKE3 paper,
 * sections 2 and 5).  See blake3.h for the scope.
 *
 * Layout of the code:
 *   - the compression function: on x86-64 on SSE registers, one row of
 *     the state per register, with an SSSE3 variant picked at run time
 *     when the CPU has it; elsewhere (or with -DSPA_BLAKE3_PORTABLE) in
 *     portable C, fully unrolled through a G macro and a precomputed
 *     message schedule (the permutation applied r times);
 *   - the chunk state, which compresses 64-byte blocks of one 1 KiB chunk
 *     and always keeps the last block back, because only at finalization
 *     is it known whether that block ends the chunk and whether the chunk
 *     is the root;
 *   - the hasher, which folds completed chunk chaining values into a
 *     stack of subtree roots, merging lazily: a chunk is only completed
 *     once input beyond it arrives, so the root is never merged early;
 *   - the output node, from which the root is recompressed with the ROOT
 *     flag and an output block counter to give any slice of the XOF;
 *   - the one-shot helpers, which hash inputs of one chunk or less (all
 *     the packet MACs) without the hasher.
 */
#include "blake3.h"

#include <string.h>

#if defined(__x86_64__) && defined(__SSE2__) && !defined(SPA_BLAKE3_PORTABLE)
#define SPA_BLAKE3_X86 1
#include <emmintrin.h>
#include <tmmintrin.h>
#endif

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

/* ---- compression: portable, or for x86-64 further down ---- */

/* Compression truncated to a chaining value, written back into cv. */
static void compress_cv(uint32_t cv[8],
			const uint8_t block[SPA_BLAKE3_BLOCK_LEN],
			uint64_t counter, uint32_t block_len, uint32_t flags);

/* Full 16-word compression output, serialized little-endian to 64 bytes. */
static void compress_xof(const uint32_t cv[8],
			 const uint8_t block[SPA_BLAKE3_BLOCK_LEN],
			 uint64_t counter, uint32_t block_len, uint32_t flags,
			 uint8_t out[64]);

/* A chunk that is the root, as the one-shot helpers see it: nfull full
 * blocks from in, then last (last_len bytes, zero-padded to a block) with
 * CHUNK_END and ROOT, whose first 64 output bytes go to out.  cv goes in
 * as the key and comes out as the input chaining value of that last
 * compression, from which any further output blocks are made. */
static void root_chunk(uint32_t cv[8], const uint8_t *in, size_t nfull,
		       const uint8_t *last, uint32_t last_len, uint32_t flags,
		       uint8_t out[SPA_BLAKE3_BLOCK_LEN]);

#ifndef SPA_BLAKE3_X86

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

static inline uint32_t
rotr32(uint32_t w, unsigned int c)
{
	return (w >> c) | (w << (32 - c));
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
permute_state(uint32_t out[16], const uint32_t cv[8],
	      const uint8_t block[SPA_BLAKE3_BLOCK_LEN], uint64_t counter,
	      uint32_t block_len, uint32_t flags)
{
	uint32_t v[16], m[16];

	load_words(m, block, 16);
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

static void
compress_cv(uint32_t cv[8], const uint8_t block[SPA_BLAKE3_BLOCK_LEN],
	    uint64_t counter, uint32_t block_len, uint32_t flags)
{
	uint32_t v[16];
	int i;

	permute_state(v, cv, block, counter, block_len, flags);
	for (i = 0; i < 8; i++)
		cv[i] = v[i] ^ v[i + 8];
}

static void
compress_xof(const uint32_t cv[8], const uint8_t block[SPA_BLAKE3_BLOCK_LEN],
	     uint64_t counter, uint32_t block_len, uint32_t flags,
	     uint8_t out[64])
{
	uint32_t v[16];
	int i;

	permute_state(v, cv, block, counter, block_len, flags);
	for (i = 0; i < 8; i++) {
		store32(out + 4 * i, v[i] ^ v[i + 8]);
		store32(out + 32 + 4 * i, v[i + 8] ^ cv[i]);
	}
}

static void
root_chunk(uint32_t cv[8], const uint8_t *in, size_t nfull,
	   const uint8_t *last, uint32_t last_len, uint32_t flags,
	   uint8_t out[SPA_BLAKE3_BLOCK_LEN])
{
	uint32_t f = flags | CHUNK_START;

	for (; nfull > 0; nfull--) {
		compress_cv(cv, in, 0, SPA_BLAKE3_BLOCK_LEN, f);
		in += SPA_BLAKE3_BLOCK_LEN;
		f = flags;
	}
	compress_xof(cv, last, 0, last_len, f | CHUNK_END | ROOT, out);
}

#else /* SPA_BLAKE3_X86 */

/* ---- x86-64 compression: the state as four rows of four words ----
 *
 * a, b, c and d hold state words 0-3, 4-7, 8-11 and 12-15, so one G
 * written on whole registers runs the four column Gs at once.  The
 * diagonal Gs are lined up in lanes by rotating rows between the two
 * halves of a round.  A compression is one long chain of dependent
 * operations (14 per half round at best, with SSSE3), so what matters is
 * the length of that chain and keeping the pipes free for it, more than
 * the instruction count: the message shuffles and most row rotations are
 * off the chain and overlap with it.
 */

/* SSE2 rotates by 16 with a swap of 16-bit halves, by 8 with shifts. */
static inline __m128i
rotr16_sse2(__m128i x)
{
	return _mm_shufflehi_epi16(_mm_shufflelo_epi16(x, 0xb1), 0xb1);
}

static inline __m128i
rotr8_sse2(__m128i x)
{
	return _mm_or_si128(_mm_srli_epi32(x, 8), _mm_slli_epi32(x, 24));
}

/* SSSE3 does either in one byte shuffle, a step less on the chain. */
__attribute__((target("ssse3"))) static inline __m128i
rotr16_ssse3(__m128i x)
{
	return _mm_shuffle_epi8(x, _mm_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5,
						 10, 11, 8, 9, 14, 15, 12, 13));
}

__attribute__((target("ssse3"))) static inline __m128i
rotr8_ssse3(__m128i x)
{
	return _mm_shuffle_epi8(x, _mm_setr_epi8(1, 2, 3, 0, 5, 6, 7, 4,
						 9, 10, 11, 8, 13, 14, 15, 12));
}

/* a + m + b, adding m first: b is the row written last, so this keeps an
 * addition off the chain.  The empty asm hides the partial sum from GCC,
 * which would otherwise reassociate it into a + (m + b). */
static inline __m128i
add3(__m128i a, __m128i m, __m128i b)
{
	a = _mm_add_epi32(a, m);
	__asm__("" : "+x"(a));
	return _mm_add_epi32(a, b);
}

/* c += d, then b = (b ^ c) >>> n, the step that ends each half of G.
 * The usual rotation, two shifts of the same value and an OR, puts the
 * shifts into the two shift/shuffle pipes in the same cycle, which on
 * the Zen 3 this was tuned on delays the chain about one time in four.
 * So the left half comes from the inputs of the addition instead, as a
 * left shift distributes over it: (b ^ (c + d)) << k equals
 * (b << k) ^ ((c << k) + (d << k)).  More instructions, all but one off
 * the chain; some 3% faster per hash. */
#define ADD_XOR_ROTR(n)							\
	do {								\
		__m128i lo = _mm_xor_si128(_mm_slli_epi32(b, 32 - (n)),	\
			_mm_add_epi32(_mm_slli_epi32(c, 32 - (n)),	\
				      _mm_slli_epi32(d, 32 - (n))));	\
		c = _mm_add_epi32(c, d);				\
		b = _mm_or_si128(_mm_srli_epi32(_mm_xor_si128(b, c), (n)), \
				 lo);					\
	} while (0)

/* G on all four lanes. */
#define G4(x, y, rotr16, rotr8)						\
	do {								\
		a = add3(a, x, b);					\
		d = rotr16(_mm_xor_si128(d, a));			\
		ADD_XOR_ROTR(12);					\
		a = add3(a, y, b);					\
		d = rotr8(_mm_xor_si128(d, a));				\
		ADD_XOR_ROTR(7);					\
	} while (0)

/* Columns, then diagonals, with message vectors mx, my (columns) and
 * dx, dy (diagonals).  For the diagonals a, c and d are rotated and b
 * stays: b is the row written last, so it feeds the next G without a
 * shuffle in between.  Lane j then holds a[j-1], b[j], c[j+1], d[j+2]
 * (indices mod 4), which is diagonal G number (j + 3) % 4. */
#define ROUND4(rotr16, rotr8)						\
	do {								\
		G4(mx, my, rotr16, rotr8);				\
		a = _mm_shuffle_epi32(a, _MM_SHUFFLE(2, 1, 0, 3));	\
		c = _mm_shuffle_epi32(c, _MM_SHUFFLE(0, 3, 2, 1));	\
		d = _mm_shuffle_epi32(d, _MM_SHUFFLE(1, 0, 3, 2));	\
		G4(dx, dy, rotr16, rotr8);				\
		a = _mm_shuffle_epi32(a, _MM_SHUFFLE(0, 3, 2, 1));	\
		c = _mm_shuffle_epi32(c, _MM_SHUFFLE(2, 1, 0, 3));	\
		d = _mm_shuffle_epi32(d, _MM_SHUFFLE(1, 0, 3, 2));	\
	} while (0)

/* Lanes i, j of p then k, l of q.  SSE2 has this shuffle (shufps) only
 * for floats; the casts cost nothing. */
#define SHUF2(p, q, i, j, k, l)						\
	_mm_castps_si128(_mm_shuffle_ps(_mm_castsi128_ps(p),		\
					_mm_castsi128_ps(q),		\
					_MM_SHUFFLE(l, k, j, i)))

/* Lanes 0, 2, 3, 1 of t. */
#define LANES0231(t) _mm_shuffle_epi32(t, _MM_SHUFFLE(1, 3, 2, 0))

/* The message vectors of the first round: words 0 2 4 6, 1 3 5 7, then
 * for the diagonals, in the lane order above, 14 8 10 12 and 15 9 11 13.
 * (x86 is little-endian, so the block loads as it is.) */
#define MSG_FIRST()							\
	do {								\
		__m128i m0, m1, m2, m3;					\
									\
		m0 = _mm_loadu_si128((const __m128i *)block);		\
		m1 = _mm_loadu_si128((const __m128i *)block + 1);	\
		m2 = _mm_loadu_si128((const __m128i *)block + 2);	\
		m3 = _mm_loadu_si128((const __m128i *)block + 3);	\
		mx = SHUF2(m0, m1, 0, 2, 0, 2);				\
		my = SHUF2(m0, m1, 1, 3, 1, 3);				\
		dx = _mm_shuffle_epi32(SHUF2(m2, m3, 0, 2, 0, 2),	\
				       _MM_SHUFFLE(2, 1, 0, 3));	\
		dy = _mm_shuffle_epi32(SHUF2(m2, m3, 1, 3, 1, 3),	\
				       _MM_SHUFFLE(2, 1, 0, 3));	\
	} while (0)

/* The next round's message vectors from this round's.  Each round takes
 * the previous one's words in the order of the permutation
 * {2,6,3,10,7,0,4,13,1,11,12,5,9,14,15,8}; worked through the lane
 * layout, with X, Y, D, E for mx, my, dx, dy and digits for lanes:
 *	mx = X1 Y1 Y3 X2	my = X3 D2 X0 E3
 *	dx = E0 Y0 D3 E1	dy = D1 E2 Y2 D0
 * This is shuffling alone, off the critical chain. */
#define MSG_NEXT()							\
	do {								\
		__m128i x = mx, y = my, p = dx, q = dy, t;		\
									\
		mx = LANES0231(SHUF2(x, y, 1, 2, 1, 3));		\
		t = SHUF2(p, q, 2, 2, 3, 3);				\
		my = _mm_shuffle_epi32(SHUF2(x, t, 3, 0, 0, 2),		\
				       _MM_SHUFFLE(3, 1, 2, 0));	\
		t = SHUF2(y, p, 0, 0, 3, 3);				\
		dx = LANES0231(SHUF2(q, t, 0, 1, 0, 2));		\
		t = SHUF2(q, y, 2, 2, 2, 2);				\
		dy = LANES0231(SHUF2(p, t, 1, 0, 0, 2));		\
	} while (0)

#define ROUNDS7(rotr16, rotr8)						\
	do {								\
		MSG_FIRST();						\
		ROUND4(rotr16, rotr8);					\
		MSG_NEXT();						\
		ROUND4(rotr16, rotr8);					\
		MSG_NEXT();						\
		ROUND4(rotr16, rotr8);					\
		MSG_NEXT();						\
		ROUND4(rotr16, rotr8);					\
		MSG_NEXT();						\
		ROUND4(rotr16, rotr8);					\
		MSG_NEXT();						\
		ROUND4(rotr16, rotr8);					\
		MSG_NEXT();						\
		ROUND4(rotr16, rotr8);					\
	} while (0)

/* The rows for one compression under the chaining value (cv_lo, cv_hi). */
#define START4(counter, block_len, flags)				\
	do {								\
		a = cv_lo;						\
		b = cv_hi;						\
		c = _mm_loadu_si128((const __m128i *)IV);		\
		d = _mm_setr_epi32((int)(uint32_t)(counter),		\
				   (int)(uint32_t)((uint64_t)(counter) >> 32), \
				   (int)(block_len), (int)(flags));	\
	} while (0)

/* The full output of the compression just done: the new chaining value
 * in its first 32 bytes, then state words 8-15 ^ the input CV. */
#define STORE_XOF4(out)							\
	do {								\
		_mm_storeu_si128((__m128i *)(out), _mm_xor_si128(a, c)); \
		_mm_storeu_si128((__m128i *)(out) + 1,			\
				 _mm_xor_si128(b, d));			\
		_mm_storeu_si128((__m128i *)(out) + 2,			\
				 _mm_xor_si128(c, cv_lo));		\
		_mm_storeu_si128((__m128i *)(out) + 3,			\
				 _mm_xor_si128(d, cv_hi));		\
	} while (0)

/* The bodies of the functions below, which use their parameters.  Each
 * is built twice, for SSE2 and SSSE3: the two differ only in rotations,
 * but the SSSE3 ones may only appear in a function built for SSSE3. */

/* One block.  out receives the first 32 bytes of the output (the new
 * chaining value) and, if xof is set, the last 32 too; out may be cv. */
#define COMPRESS4(rotr16, rotr8)					\
	do {								\
		__m128i a, b, c, d, cv_lo, cv_hi, mx, my, dx, dy;	\
									\
		cv_lo = _mm_loadu_si128((const __m128i *)cv);		\
		cv_hi = _mm_loadu_si128((const __m128i *)cv + 1);	\
		START4(counter, block_len, flags);			\
		ROUNDS7(rotr16, rotr8);					\
		if (xof) {						\
			STORE_XOF4(out);				\
		} else {						\
			_mm_storeu_si128((__m128i *)out,		\
					 _mm_xor_si128(a, c));		\
			_mm_storeu_si128((__m128i *)out + 1,		\
					 _mm_xor_si128(b, d));		\
		}							\
	} while (0)

/* A chunk that is the root, as for root_chunk() at the top.  The chaining
 * value stays in registers from block to block: going through memory
 * would add a store and a reload to the chain at each one. */
#define ROOT_CHUNK4(rotr16, rotr8)					\
	do {								\
		__m128i a, b, c, d, cv_lo, cv_hi, mx, my, dx, dy;	\
		const uint8_t *block = in;				\
		uint32_t f = flags | CHUNK_START;			\
									\
		cv_lo = _mm_loadu_si128((const __m128i *)cv);		\
		cv_hi = _mm_loadu_si128((const __m128i *)cv + 1);	\
		for (; nfull > 0; nfull--) {				\
			START4(0, SPA_BLAKE3_BLOCK_LEN, f);		\
			ROUNDS7(rotr16, rotr8);				\
			cv_lo = _mm_xor_si128(a, c);			\
			cv_hi = _mm_xor_si128(b, d);			\
			block += SPA_BLAKE3_BLOCK_LEN;			\
			f = flags;					\
		}							\
		block = last;						\
		START4(0, last_len, f | CHUNK_END | ROOT);		\
		ROUNDS7(rotr16, rotr8);					\
		_mm_storeu_si128((__m128i *)cv, cv_lo);			\
		_mm_storeu_si128((__m128i *)cv + 1, cv_hi);		\
		STORE_XOF4(out);					\
	} while (0)

static void
compress_sse2(const uint32_t cv[8], const uint8_t block[SPA_BLAKE3_BLOCK_LEN],
	      uint64_t counter, uint32_t block_len, uint32_t flags,
	      void *out, int xof)
{
	COMPRESS4(rotr16_sse2, rotr8_sse2);
}

static void
root_chunk_sse2(uint32_t cv[8], const uint8_t *in, size_t nfull,
		const uint8_t *last, uint32_t last_len, uint32_t flags,
		uint8_t out[SPA_BLAKE3_BLOCK_LEN])
{
	ROOT_CHUNK4(rotr16_sse2, rotr8_sse2);
}

__attribute__((target("ssse3"))) static void
compress_ssse3(const uint32_t cv[8], const uint8_t block[SPA_BLAKE3_BLOCK_LEN],
	       uint64_t counter, uint32_t block_len, uint32_t flags,
	       void *out, int xof)
{
	COMPRESS4(rotr16_ssse3, rotr8_ssse3);
}

__attribute__((target("ssse3"))) static void
root_chunk_ssse3(uint32_t cv[8], const uint8_t *in, size_t nfull,
		 const uint8_t *last, uint32_t last_len, uint32_t flags,
		 uint8_t out[SPA_BLAKE3_BLOCK_LEN])
{
	ROOT_CHUNK4(rotr16_ssse3, rotr8_ssse3);
}

/* SSSE3 is not in the x86-64 baseline: ask the CPU (libgcc caches the
 * answer, so this is a load and a test).  -DSPA_BLAKE3_NO_SSSE3 forces
 * the SSE2 code, so that tests can cover it on any machine. */
static inline int
have_ssse3(void)
{
#ifndef SPA_BLAKE3_NO_SSSE3
	return __builtin_cpu_supports("ssse3");
#else
	return 0;
#endif
}

static void
compress_cv(uint32_t cv[8], const uint8_t block[SPA_BLAKE3_BLOCK_LEN],
	    uint64_t counter, uint32_t block_len, uint32_t flags)
{
	if (have_ssse3())
		compress_ssse3(cv, block, counter, block_len, flags, cv, 0);
	else
		compress_sse2(cv, block, counter, block_len, flags, cv, 0);
}

/* x86 is little-endian, so the rows are stored as they are. */
static void
compress_xof(const uint32_t cv[8], const uint8_t block[SPA_BLAKE3_BLOCK_LEN],
	     uint64_t counter, uint32_t block_len, uint32_t flags,
	     uint8_t out[64])
{
	if (have_ssse3())
		compress_ssse3(cv, block, counter, block_len, flags, out, 1);
	else
		compress_sse2(cv, block, counter, block_len, flags, out, 1);
}

static void
root_chunk(uint32_t cv[8], const uint8_t *in, size_t nfull,
	   const uint8_t *last, uint32_t last_len, uint32_t flags,
	   uint8_t out[SPA_BLAKE3_BLOCK_LEN])
{
	if (have_ssse3())
		root_chunk_ssse3(cv, in, nfull, last, last_len, flags, out);
	else
		root_chunk_sse2(cv, in, nfull, last, last_len, flags, out);
}

#endif /* SPA_BLAKE3_X86 */

/* ---- output node: the inputs of a compression not yet performed ---- */

struct output {
	uint32_t cv[8];
	uint8_t block[SPA_BLAKE3_BLOCK_LEN];
	uint64_t counter;
	uint32_t block_len;
	uint32_t flags;
};

static void
output_cv(const struct output *o, uint32_t cv[8])
{
	memcpy(cv, o->cv, sizeof(o->cv));
	compress_cv(cv, o->block, o->counter, o->block_len, o->flags);
}

static void
parent_output(struct output *o, const uint8_t left_right[64],
	      const uint32_t key[8], uint32_t flags)
{
	memcpy(o->cv, key, sizeof(o->cv));
	memcpy(o->block, left_right, sizeof(o->block));
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
	compress_cv(c->cv, block, c->counter, SPA_BLAKE3_BLOCK_LEN,
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
	memcpy(o->block, c->buf, c->buf_len);
	memset(o->block + c->buf_len, 0, SPA_BLAKE3_BLOCK_LEN - c->buf_len);
	memcpy(o->cv, c->cv, sizeof(o->cv));
	o->counter = c->counter;
	o->block_len = c->buf_len;
	o->flags = (uint32_t)c->flags | chunk_start_flag(c) | CHUNK_END;
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
		compress_xof(o.cv, o.block, counter, o.block_len,
			     o.flags | ROOT, block);
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

/* A one-shot over one chunk at most.  That chunk is the root, so its
 * blocks are compressed straight from the input and its root output
 * straight from the last one, with none of the hasher's copying: the
 * packet MACs take this path.  cv holds the key on entry, and the whole
 * struct is for the caller to wipe. */
struct oneshot {
	uint32_t cv[8];
	uint8_t block[SPA_BLAKE3_BLOCK_LEN];
	uint8_t out[SPA_BLAKE3_BLOCK_LEN];
};

static void
oneshot_chunk(struct oneshot *s, uint32_t flags, const uint8_t *in,
	      size_t len, uint8_t *out, size_t out_len)
{
	/* Every block but the last is full; the last has 0 to 64 bytes. */
	size_t nfull = len > 0 ? (len - 1) / SPA_BLAKE3_BLOCK_LEN : 0;
	size_t last_len = len - nfull * SPA_BLAKE3_BLOCK_LEN;
	const uint8_t *last = s->block;
	uint64_t counter;
	size_t n;

	if (out_len == 0)
		return;
	if (last_len == SPA_BLAKE3_BLOCK_LEN) {
		last = in + nfull * SPA_BLAKE3_BLOCK_LEN;
	} else {
		/* An empty input may come as a null pointer. */
		if (last_len > 0)
			memcpy(s->block, in + nfull * SPA_BLAKE3_BLOCK_LEN,
			       last_len);
		memset(s->block + last_len, 0,
		       SPA_BLAKE3_BLOCK_LEN - last_len);
	}
	root_chunk(s->cv, in, nfull, last, (uint32_t)last_len, flags, s->out);
	/* Output blocks after the first: the same compression, counted. */
	flags |= (nfull == 0 ? CHUNK_START : 0) | CHUNK_END | ROOT;
	for (counter = 1;; counter++) {
		n = out_len < SPA_BLAKE3_BLOCK_LEN ? out_len :
						     SPA_BLAKE3_BLOCK_LEN;
		memcpy(out, s->out, n);
		out += n;
		out_len -= n;
		if (out_len == 0)
			break;
		compress_xof(s->cv, last, counter, (uint32_t)last_len, flags,
			     s->out);
	}
}

void
spa_blake3_hash(const uint8_t *in, size_t len, uint8_t *out, size_t out_len)
{
	struct spa_blake3 h;
	struct oneshot s;

	if (len <= SPA_BLAKE3_CHUNK_LEN) {
		memcpy(s.cv, IV, sizeof(s.cv));
		oneshot_chunk(&s, 0, in, len, out, out_len);
		wipe(&s, sizeof(s));
		return;
	}
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
	struct oneshot s;

	if (len <= SPA_BLAKE3_CHUNK_LEN) {
		load_words(s.cv, key, 8);
		oneshot_chunk(&s, KEYED_HASH, in, len, out, out_len);
		wipe(&s, sizeof(s));
		return;
	}
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
