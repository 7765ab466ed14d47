/* Test driver for csrc/blake3.c.
 *
 * Reads lines from stdin, each of six fields separated by blanks:
 *
 *	MODE KEYHEX CONTEXT_HEX INPUT_HEX OUTLEN SEEK
 *
 * MODE is hash, keyed, derive or incr.  An unused field is "-"; an empty
 * input or (in derive mode) an empty context is also written "-".
 * CONTEXT_HEX is the hex of the context string, which may not contain a
 * NUL byte.  For each line one line of lowercase hex is printed: OUTLEN
 * bytes of output starting at byte SEEK of the output stream.
 *
 * hash, keyed and derive use the one-shot helpers when SEEK is 0 and the
 * incremental hasher with a single update otherwise.  incr feeds the input
 * to spa_blake3_update in pieces of cycling sizes (starting at a place in
 * the cycle that moves with the line number); it hashes with the key if
 * KEYHEX is given, derives with the context if CONTEXT_HEX is given, and
 * hashes plainly if both are "-" (so incr cannot derive with an empty
 * context; derive can).
 *
 * Any malformed line ends the run with exit status 2.
 */
#include "blake3.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NFIELDS 6

static const size_t PIECES[] = { 1, 7, 63, 64, 65, 1023, 1024, 1025 };
#define NPIECES (sizeof(PIECES) / sizeof(PIECES[0]))

static unsigned long lineno;

static void
die(const char *what)
{
	fprintf(stderr, "blake3_tool: line %lu: %s\n", lineno, what);
	exit(2);
}

static void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL) {
		fprintf(stderr, "blake3_tool: out of memory\n");
		exit(3);
	}
	return p;
}

/* Reads one line without its newline; NULL at end of input. */
static char *
read_line(char **buf, size_t *cap)
{
	size_t len = 0;
	int ch;

	if (*buf == NULL) {
		*cap = 4096;
		*buf = xmalloc(*cap);
	}
	while ((ch = getchar()) != EOF && ch != '\n') {
		if (len + 1 >= *cap) {
			char *nb;

			*cap *= 2;
			nb = realloc(*buf, *cap);
			if (nb == NULL) {
				fprintf(stderr, "blake3_tool: out of memory\n");
				exit(3);
			}
			*buf = nb;
		}
		(*buf)[len++] = (char)ch;
	}
	if (ferror(stdin)) {
		fprintf(stderr, "blake3_tool: read error\n");
		exit(3);
	}
	if (ch == EOF && len == 0)
		return NULL;
	if (len > 0 && (*buf)[len - 1] == '\r')
		len--;
	(*buf)[len] = '\0';
	return *buf;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Validates a hex field ("-" is empty) and returns its decoded length.
 * Everything is checked before anything is allocated, so that a rejected
 * line leaves nothing behind for the leak checker to report. */
static size_t
check_hex(const char *s)
{
	size_t n, i;

	if (strcmp(s, "-") == 0)
		return 0;
	n = strlen(s);
	if (n % 2 != 0)
		die("odd-length hex");
	for (i = 0; i < n; i++)
		if (hexval(s[i]) < 0)
			die("bad hex digit");
	return n / 2;
}

/* Decodes a field already passed by check_hex, with a NUL after it. */
static uint8_t *
unhex(const char *s, size_t n)
{
	uint8_t *b = xmalloc(n + 1);
	size_t i;

	for (i = 0; i < n; i++)
		b[i] = (uint8_t)(hexval(s[2 * i]) << 4 | hexval(s[2 * i + 1]));
	b[n] = 0;
	return b;
}

static unsigned long long
parse_u64(const char *s)
{
	unsigned long long v;
	char *end;

	if (*s < '0' || *s > '9')
		die("bad number");
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		die("bad number");
	return v;
}

static int
is_unused(const char *s)
{
	return strcmp(s, "-") == 0;
}

static void
check_key(const char *hex)
{
	if (is_unused(hex))
		die("key required");
	if (check_hex(hex) != SPA_BLAKE3_KEY_LEN)
		die("key must be 32 bytes");
}

/* The context must be a valid C string: no NUL byte inside. */
static void
check_context(const char *hex)
{
	size_t n = check_hex(hex), i;

	for (i = 0; i < n; i++)
		if (hex[2 * i] == '0' && hex[2 * i + 1] == '0')
			die("context contains NUL");
}

static void
feed_pieces(struct spa_blake3 *h, const uint8_t *in, size_t len)
{
	size_t i = lineno % NPIECES, take;

	while (len > 0) {
		take = PIECES[i];
		if (take > len)
			take = len;
		spa_blake3_update(h, in, take);
		in += take;
		len -= take;
		i = (i + 1) % NPIECES;
	}
}

static void
process(char *line)
{
	char *f[NFIELDS], *tok;
	int nf = 0;
	uint8_t *key = NULL, *in, *out;
	char *ctx = NULL;
	size_t in_len, out_len, i;
	unsigned long long seek, ol;
	enum { HASH, KEYED, DERIVE, INCR } mode;
	struct spa_blake3 h;

	for (tok = strtok(line, " \t"); tok != NULL;
	     tok = strtok(NULL, " \t")) {
		if (nf == NFIELDS)
			die("too many fields");
		f[nf++] = tok;
	}
	if (nf != NFIELDS)
		die("expected 6 fields");

	/* Validate the whole line first. */
	if (strcmp(f[0], "hash") == 0) {
		mode = HASH;
		if (!is_unused(f[1]) || !is_unused(f[2]))
			die("hash takes no key or context");
	} else if (strcmp(f[0], "keyed") == 0) {
		mode = KEYED;
		if (!is_unused(f[2]))
			die("keyed takes no context");
		check_key(f[1]);
	} else if (strcmp(f[0], "derive") == 0) {
		mode = DERIVE;
		if (!is_unused(f[1]))
			die("derive takes no key");
		check_context(f[2]);
	} else if (strcmp(f[0], "incr") == 0) {
		mode = INCR;
		if (!is_unused(f[1]) && !is_unused(f[2]))
			die("incr takes a key or a context, not both");
		if (!is_unused(f[1]))
			check_key(f[1]);
		if (!is_unused(f[2]))
			check_context(f[2]);
	} else {
		die("unknown mode");
	}
	in_len = check_hex(f[3]);
	ol = parse_u64(f[4]);
	if (ol > (unsigned long long)16 << 20)
		die("OUTLEN too large");
	out_len = (size_t)ol;
	seek = parse_u64(f[5]);

	in = unhex(f[3], in_len);
	out = xmalloc(out_len);
	if (!is_unused(f[1]))
		key = unhex(f[1], SPA_BLAKE3_KEY_LEN);
	if (!is_unused(f[2]) || mode == DERIVE)
		ctx = (char *)unhex(f[2], check_hex(f[2]));

	switch (mode) {
	case HASH:
		if (seek == 0) {
			spa_blake3_hash(in, in_len, out, out_len);
			break;
		}
		spa_blake3_init(&h);
		spa_blake3_update(&h, in, in_len);
		spa_blake3_finalize_seek(&h, seek, out, out_len);
		break;
	case KEYED:
		if (seek == 0) {
			spa_blake3_keyed(key, in, in_len, out, out_len);
			break;
		}
		spa_blake3_init_keyed(&h, key);
		spa_blake3_update(&h, in, in_len);
		spa_blake3_finalize_seek(&h, seek, out, out_len);
		break;
	case DERIVE:
		if (seek == 0) {
			spa_blake3_derive_key(ctx, in, in_len, out, out_len);
			break;
		}
		spa_blake3_init_derive_key(&h, ctx);
		spa_blake3_update(&h, in, in_len);
		spa_blake3_finalize_seek(&h, seek, out, out_len);
		break;
	case INCR:
		if (key != NULL)
			spa_blake3_init_keyed(&h, key);
		else if (ctx != NULL)
			spa_blake3_init_derive_key(&h, ctx);
		else
			spa_blake3_init(&h);
		feed_pieces(&h, in, in_len);
		spa_blake3_finalize_seek(&h, seek, out, out_len);
		break;
	}

	for (i = 0; i < out_len; i++)
		printf("%02x", out[i]);
	putchar('\n');
	free(ctx);
	free(key);
	free(out);
	free(in);
}

int
main(void)
{
	char *buf = NULL, *line;
	size_t cap = 0;

	while ((line = read_line(&buf, &cap)) != NULL) {
		lineno++;
		process(line);
	}
	free(buf);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "blake3_tool: write error\n");
		return 3;
	}
	return 0;
}
