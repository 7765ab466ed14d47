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
#include "corpus.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	size_t size, off = 0, frames = 0, mismatches = 0;
	const char *path, *broken;
	struct corpus_record rec;
	struct spa_frame fr;
	enum spa_parse_verdict got;
	uint8_t *corpus, *buf;
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
		if (!next_record(corpus, size, &off, &rec)) {
			free(corpus);
			return 2;
		}
		buf = malloc(rec.len);
		if (!buf && rec.len) {
			perror("malloc");
			free(corpus);
			return 2;
		}
		if (rec.len)
			memcpy(buf, rec.frame, rec.len);

		memset(&fr, 0xA5, sizeof(fr));
		got = spa_parse_frame((int)rec.linktype, buf, rec.len, &fr);
		broken = got == SPA_PARSE_OK ? check_ok(&fr, buf, rec.len) :
					       NULL;
		if (broken || (rec.expect != EXPECT_ANY && got != rec.expect)) {
			mismatches++;
			printf("mismatch index=%zu linktype=%u expected=%u "
			       "got=%d%s%s\n", frames, rec.linktype, rec.expect,
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
