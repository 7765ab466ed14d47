/* Run spa_parse_frame over a corpus of frames with expected verdicts.
 *
 * usage: parse_corpus [-v] corpus.bin
 *
 * The corpus is a sequence of records:
 *	u32 linktype (little-endian), u32 len (little-endian), u8 expect,
 *	len bytes of frame
 * where expect is an enum spa_parse_verdict value, or 255 for "any verdict"
 * (mutated frames: only memory safety and the OK invariants are checked).
 * Every frame is parsed from a heap buffer of exactly len bytes so that a
 * sanitizer sees any read past the capture.  For an OK verdict the payload
 * must lie inside the buffer.  -v prints one line per OK frame:
 *	ok INDEX FAMILY SRC DST SPORT DPORT PAYLOAD_OFFSET PAYLOAD_LEN
 * (addresses as 32 hex digits) so the caller can compare the payload.
 * Prints "frames=N mismatches=M" and exits 1 if M > 0, 2 on a bad corpus.
 */
#include "../parse.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REC_HDR_LEN	9
#define EXPECT_ANY	255

static uint32_t load_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 |
	       (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint8_t *read_file(const char *path, size_t *len)
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

static void print_hex(const uint8_t *p, size_t n)
{
	size_t i;

	putchar(' ');
	for (i = 0; i < n; i++)
		printf("%02x", p[i]);
}

static bool all_zero(const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* The OK verdict's promises; NULL if kept, else what was broken. */
static const char *check_ok(const struct spa_frame *f, const uint8_t *buf,
			    size_t len)
{
	const uint8_t *end = buf + len;

	if (f->family != 4 && f->family != 6)
		return "family";
	if (f->family == 4 &&
	    (!all_zero(f->src + 4, 12) || !all_zero(f->dst + 4, 12)))
		return "IPv4 address padding";
	if (!f->payload || f->payload < buf || f->payload > end)
		return "payload outside the frame";
	if (f->payload_len > (size_t)(end - f->payload))
		return "payload_len past the frame";
	return NULL;
}

static void dump_ok(size_t index, const struct spa_frame *f,
		    const uint8_t *buf)
{
	printf("ok %zu %u", index, f->family);
	print_hex(f->src, sizeof(f->src));
	print_hex(f->dst, sizeof(f->dst));
	printf(" %u %u %zu %zu\n", f->sport, f->dport,
	       (size_t)(f->payload - buf), f->payload_len);
}

int main(int argc, char **argv)
{
	size_t size, off = 0, frames = 0, mismatches = 0, len;
	const char *path, *broken;
	struct spa_frame fr;
	enum spa_parse_verdict got;
	uint32_t linktype;
	uint8_t *corpus, *buf, expect;
	bool verbose = false;

	if (argc == 3 && strcmp(argv[1], "-v") == 0) {
		verbose = true;
		path = argv[2];
	} else if (argc == 2) {
		path = argv[1];
	} else {
		fprintf(stderr, "usage: %s [-v] corpus\n", argv[0]);
		return 2;
	}
	corpus = read_file(path, &size);
	if (!corpus)
		return 2;

	while (off < size) {
		if (size - off < REC_HDR_LEN) {
			fprintf(stderr, "corpus: short record header at %zu\n",
				off);
			free(corpus);
			return 2;
		}
		linktype = load_le32(corpus + off);
		len = load_le32(corpus + off + 4);
		expect = corpus[off + 8];
		off += REC_HDR_LEN;
		if (size - off < len) {
			fprintf(stderr, "corpus: frame %zu runs past the end\n",
				frames);
			free(corpus);
			return 2;
		}
		buf = malloc(len);
		if (!buf && len) {
			perror("malloc");
			free(corpus);
			return 2;
		}
		if (len)
			memcpy(buf, corpus + off, len);
		off += len;

		memset(&fr, 0xA5, sizeof(fr));
		got = spa_parse_frame((int)linktype, buf, len, &fr);
		broken = got == SPA_PARSE_OK ? check_ok(&fr, buf, len) : NULL;
		if (broken || (expect != EXPECT_ANY && got != expect)) {
			mismatches++;
			printf("mismatch index=%zu linktype=%u expected=%u "
			       "got=%d%s%s\n", frames, linktype, expect,
			       (int)got, broken ? " broken=" : "",
			       broken ? broken : "");
		} else if (verbose && got == SPA_PARSE_OK) {
			dump_ok(frames, &fr, buf);
		}
		free(buf);
		frames++;
	}
	free(corpus);
	printf("frames=%zu mismatches=%zu\n", frames, mismatches);
	return mismatches ? 1 : 0;
}
