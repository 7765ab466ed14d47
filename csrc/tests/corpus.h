/* Reading a corpus file of the C test runners (core_corpus, parse_corpus).
 *
 * A corpus holds records, each (integers little-endian)
 *	u32 linktype, u32 len, u8 expect, len bytes of frame
 * where expect is the outcome the runner must see, or EXPECT_ANY.  A runner
 * reads the whole file with read_file and walks it with next_record.
 */
#ifndef SPA_TESTS_CORPUS_H
#define SPA_TESTS_CORPUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define REC_HDR_LEN	9
#define EXPECT_ANY	255	/* mutated frames: any outcome will do */

struct corpus_record {
	uint32_t linktype;
	uint8_t expect;
	const uint8_t *frame;	/* inside the corpus buffer */
	size_t len;
};

static inline uint32_t load_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 |
	       (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t load_le64(const uint8_t *p)
{
	return (uint64_t)load_le32(p) | (uint64_t)load_le32(p + 4) << 32;
}

/* The whole file in a malloc'd buffer of *len bytes; NULL on an error. */
static inline uint8_t *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL, *nbuf;
	size_t cap = 0, n = 0, got;

	if (!f) {
		perror(path);
		return NULL;
	}
	for (;;) {
		if (cap - n < 65536) {
			cap = cap ? cap * 2 : 1 << 20;
			nbuf = realloc(buf, cap);
			if (!nbuf) {
				perror("realloc");
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = nbuf;
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		perror(path);
		free(buf);
		buf = NULL;
	}
	fclose(f);
	*len = n;
	return buf;
}

/* The record at *off of data[0, size) into *r, and *off past it; false,
 * said on stderr, if the record is cut short by the end of the data. */
static inline bool next_record(const uint8_t *data, size_t size, size_t *off,
			       struct corpus_record *r)
{
	size_t at = *off;

	if (at > size || size - at < REC_HDR_LEN) {
		fprintf(stderr, "corpus: short record header at %zu\n", at);
		return false;
	}
	r->linktype = load_le32(data + at);
	r->len = load_le32(data + at + 4);
	r->expect = data[at + 8];
	r->frame = data + at + REC_HDR_LEN;
	if (size - at - REC_HDR_LEN < r->len) {
		fprintf(stderr, "corpus: record at %zu runs past the end\n",
			at);
		return false;
	}
	*off = at + REC_HDR_LEN + r->len;
	return true;
}

/* A space, then p[0, n) in hex. */
static inline void print_hex(const uint8_t *p, size_t n)
{
	putchar(' ');
	for (size_t i = 0; i < n; i++)
		printf("%02x", p[i]);
}

static inline bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

#endif
