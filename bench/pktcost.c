/* pktcost: send COUNT small UDP datagrams as fast as possible and report the
 * CPU time this thread spent doing it.
 *
 *   pktcost ADDR PORT COUNT [SRC_ADDR [MAX_SECONDS]]
 *
 * prints one JSON line:
 *   {"sent": N, "wall_s": W, "cpu_s": C, "ns_per_packet": C/N*1e9, ...}
 *
 * Over a veth pair the receiving side's softirq (IP input, netfilter, UDP
 * enqueue) normally runs on the sender's CPU, in the sender's context, when
 * the transmit path re-enables bottom halves.  The CPU time of this thread
 * therefore includes the firewall's per-packet cost, which is what the
 * benchmark compares between rulesets.
 *
 * One connected socket is used, so every datagram has the same 5-tuple.
 * MAX_SECONDS (default 10) bounds the run: the sender stops early, reports
 * how many it sent and sets "timed_out".  SRC_ADDR "-" means no explicit
 * bind.  cpu_s is user + system time from getrusage(RUSAGE_THREAD);
 * thread_cpu_s (CLOCK_THREAD_CPUTIME_ID) is the same figure, unrounded.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define PAYLOAD_LEN 32

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double thread_cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double tv_s(const struct timeval *tv)
{
	return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

static int resolve(const char *host, const char *port, struct addrinfo **out)
{
	struct addrinfo hints;
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_DGRAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	rc = getaddrinfo(host, port, &hints, out);
	if (rc) {
		fprintf(stderr, "pktcost: %s: %s\n", host, gai_strerror(rc));
		return -1;
	}
	return 0;
}

static int parse_count(const char *s, unsigned long long *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 10);
	if (errno || end == s || *end || *out == 0)
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	struct addrinfo *dst = NULL, *src = NULL;
	struct mmsghdr msgs[BATCH];
	struct iovec iov;
	struct rusage r0, r1;
	unsigned long long count, sent = 0, errors = 0;
	unsigned char payload[PAYLOAD_LEN];
	double max_s = 10.0, t0, t1, c0, c1, user, sys;
	int fd, ret = 1, last_errno = 0, timed_out = 0;

	if (argc < 4 || argc > 6) {
		fprintf(stderr,
			"usage: pktcost ADDR PORT COUNT [SRC_ADDR [MAX_SECONDS]]\n");
		return 2;
	}
	if (parse_count(argv[3], &count)) {
		fprintf(stderr, "pktcost: bad COUNT %s\n", argv[3]);
		return 2;
	}
	if (argc == 6) {
		char *end;

		max_s = strtod(argv[5], &end);
		if (end == argv[5] || *end || !(max_s > 0)) {
			fprintf(stderr, "pktcost: bad MAX_SECONDS %s\n", argv[5]);
			return 2;
		}
	}
	if (resolve(argv[1], argv[2], &dst))
		return 2;
	if (argc >= 5 && strcmp(argv[4], "-") && resolve(argv[4], "0", &src))
		goto out;

	fd = socket(dst->ai_family, SOCK_DGRAM, 0);
	if (fd < 0) {
		perror("pktcost: socket");
		goto out;
	}
	if (src && bind(fd, src->ai_addr, src->ai_addrlen) < 0) {
		perror("pktcost: bind");
		goto out_fd;
	}
	if (connect(fd, dst->ai_addr, dst->ai_addrlen) < 0) {
		perror("pktcost: connect");
		goto out_fd;
	}

	memset(payload, 'x', sizeof(payload));
	iov.iov_base = payload;
	iov.iov_len = sizeof(payload);
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < BATCH; i++) {
		msgs[i].msg_hdr.msg_iov = &iov;
		msgs[i].msg_hdr.msg_iovlen = 1;
	}

	getrusage(RUSAGE_THREAD, &r0);
	c0 = thread_cpu_s();
	t0 = now_s();
	while (sent < count) {
		unsigned long long left = count - sent;
		unsigned int n = left < BATCH ? (unsigned int)left : BATCH;
		int rc = sendmmsg(fd, msgs, n, 0);

		if (rc < 0) {
			if (errno == EINTR)
				continue;
			/* ENOBUFS and the like: count them and go on */
			last_errno = errno;
			if (++errors > 1000000)
				break;
		} else {
			sent += (unsigned long long)rc;
		}
		if (now_s() - t0 > max_s) {
			timed_out = 1;
			break;
		}
	}
	t1 = now_s();
	c1 = thread_cpu_s();
	getrusage(RUSAGE_THREAD, &r1);

	user = tv_s(&r1.ru_utime) - tv_s(&r0.ru_utime);
	sys = tv_s(&r1.ru_stime) - tv_s(&r0.ru_stime);
	printf("{\"sent\": %llu, \"wall_s\": %.6f, \"cpu_s\": %.6f, "
	       "\"ns_per_packet\": %.1f, \"user_s\": %.6f, \"sys_s\": %.6f, "
	       "\"thread_cpu_s\": %.6f, \"errors\": %llu, "
	       "\"last_errno\": %d, \"timed_out\": %s}\n",
	       sent, t1 - t0, user + sys,
	       sent ? (user + sys) / (double)sent * 1e9 : 0.0, user, sys,
	       c1 - c0, errors, last_errno, timed_out ? "true" : "false");
	ret = sent ? 0 : 1;
out_fd:
	close(fd);
out:
	if (src)
		freeaddrinfo(src);
	freeaddrinfo(dst);
	return ret;
}
