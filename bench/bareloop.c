/*
 * bareloop: the limit of reading a capture file with libpcap.
 *
 *   bareloop FILE [FILTER]
 *
 * Opens FILE with pcap_open_offline(), compiles and sets FILTER if given, and
 * runs pcap_dispatch(p, -1, ...) until EOF with a callback that only counts
 * packets and sums their capture lengths.  Only that loop is timed (wall on
 * CLOCK_MONOTONIC, CPU on CLOCK_PROCESS_CPUTIME_ID).  Prints one JSON line:
 *   {"packets": n, "seconds": wall, "cpu_s": cpu, "pps": n/wall}
 * Usage errors exit 2, libpcap errors exit 1.
 */

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <pcap/pcap.h>

struct tally {
    uint64_t packets;
    uint64_t caplen_sum;
};

/* Read after the loop so the compiler cannot drop the sum. */
static volatile uint64_t sink;

static void counting_callback(u_char *user, const struct pcap_pkthdr *h, const u_char *bytes)
{
    (void)bytes;
    struct tally *t = (struct tally *)(void *)user;
    t->packets++;
    t->caplen_sum += h->caplen;
}

static double diff_s(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        puts("usage: bareloop FILE [FILTER]");
        return 0;
    }
    if (argc < 2 || argc > 3) {
        fputs("bareloop: usage: bareloop FILE [FILTER]\n", stderr);
        return 2;
    }
    char errbuf[PCAP_ERRBUF_SIZE];
    errbuf[0] = '\0';
    pcap_t *p = pcap_open_offline(argv[1], errbuf);
    if (!p) {
        fprintf(stderr, "bareloop: %s\n", errbuf);
        return 1;
    }
    if (argc == 3) {
        struct bpf_program prog;
        if (pcap_compile(p, &prog, argv[2], 1, PCAP_NETMASK_UNKNOWN) != 0) {
            fprintf(stderr, "bareloop: filter '%s': %s\n", argv[2], pcap_geterr(p));
            pcap_close(p);
            return 2;
        }
        if (pcap_setfilter(p, &prog) != 0) {
            fprintf(stderr, "bareloop: setting the filter: %s\n", pcap_geterr(p));
            pcap_freecode(&prog);
            pcap_close(p);
            return 1;
        }
        pcap_freecode(&prog);
    }

    struct tally t = {0, 0};
    struct timespec w0, w1, c0, c1;
    int rc;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    clock_gettime(CLOCK_MONOTONIC, &w0);
    while ((rc = pcap_dispatch(p, -1, counting_callback, (u_char *)(void *)&t)) > 0)
        ;
    clock_gettime(CLOCK_MONOTONIC, &w1);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    if (rc == PCAP_ERROR) {
        fprintf(stderr, "bareloop: reading %s: %s\n", argv[1], pcap_geterr(p));
        pcap_close(p);
        return 1;
    }
    pcap_close(p);
    sink = t.caplen_sum;

    double wall = diff_s(&w0, &w1), cpu = diff_s(&c0, &c1);
    printf("{\"packets\": %" PRIu64 ", \"seconds\": %.6f, \"cpu_s\": %.6f, \"pps\": %.1f}\n",
           t.packets, wall, cpu, wall > 0 ? (double)t.packets / wall : 0.0);
    return 0;
}
