/* spa native core: the public interface bound by cffi (csrc/build_ffi.py).
 *
 * One capture thread per core reads frames from libpcap (an interface or a
 * pcap file), parses them, verifies protocol v1 packets and pushes the
 * decrypted requests into an SPSC ring that Python drains.  Everything the
 * packet path needs is allocated in spa_core_new(); the path itself never
 * allocates, never logs and never blocks on the consumer.
 */
#ifndef SPA_H
#define SPA_H

#include <stddef.h>
#include <stdint.h>

/* ---- protocol v1 wire layout (docs/PROTOCOL.md) ---- */
#define SPA_VERSION		1
#define SPA_ID_LEN		8
#define SPA_NONCE_LEN		16
#define SPA_SECRET_LEN		32
#define SPA_TAG_LEN		32
#define SPA_BODY_LEN		106
#define SPA_OFF_VERSION		0
#define SPA_OFF_ID		1
#define SPA_OFF_TIME		9
#define SPA_OFF_NONCE		17
#define SPA_HDR_LEN		33
#define SPA_OFF_BODY		SPA_HDR_LEN
#define SPA_OFF_TAG		(SPA_OFF_BODY + SPA_BODY_LEN)
#define SPA_WIRE_LEN		(SPA_OFF_TAG + SPA_TAG_LEN)	/* 171 */
#define SPA_REPLAY_KEY_LEN	16

#define SPA_CTX_ENC	"spa protocol v1 body encryption key"
#define SPA_CTX_MAC	"spa protocol v1 packet authentication key"

/* Counters, one per outcome.  Every frame handed to the core ends in
 * exactly one of ACCEPTED or a DROP_* counter. */
enum spa_counter {
	SPA_C_ACCEPTED = 0,
	SPA_C_DROP_LINK,	/* short/unsupported link layer */
	SPA_C_DROP_NET,		/* not IP or bad IP header */
	SPA_C_DROP_FRAGMENT,	/* IP fragment */
	SPA_C_DROP_TRANSPORT,	/* not UDP or bad UDP header */
	SPA_C_DROP_PORT,	/* UDP to another port */
	SPA_C_DROP_LENGTH,	/* payload length is not SPA_WIRE_LEN */
	SPA_C_DROP_VERSION,	/* unknown version byte */
	SPA_C_DROP_UNKNOWN_ID,	/* credential id not configured */
	SPA_C_DROP_MAC,		/* tag does not verify */
	SPA_C_DROP_STALE,	/* timestamp outside the window */
	SPA_C_DROP_REPLAY,	/* tag seen within the window */
	SPA_C_DROP_REPLAY_FULL,	/* replay set full: refuse, never forget */
	SPA_C_DROP_RING_FULL,	/* consumer behind: drop, never block */
	SPA_NCOUNTERS
};

/* What the packet path hands to Python, one fixed-size record per request. */
struct spa_record {
	uint64_t ts_us;		/* timestamp claimed in the packet */
	uint64_t rx_us;		/* when it was captured (clock used for age) */
	uint32_t cred;		/* index returned by spa_core_add_cred */
	uint8_t family;		/* 4 or 6 */
	uint8_t pad0[3];
	uint8_t src[16];	/* packet's source address */
	uint8_t dst[16];	/* packet's destination address */
	uint16_t sport;
	uint16_t dport;
	uint8_t replay_key[SPA_REPLAY_KEY_LEN];
	uint8_t body[SPA_BODY_LEN];	/* decrypted request */
	uint8_t pad1[6];
};

enum spa_clock {
	SPA_CLOCK_REAL = 0,	/* CLOCK_REALTIME at verification */
	SPA_CLOCK_PCAP = 1,	/* the frame's capture timestamp */
};

struct spa_core_cfg {
	uint16_t port;			/* UDP port to accept */
	uint64_t window_us;		/* |now - ts| must not exceed this */
	uint32_t replay_capacity;	/* entries; rounded up to 2^n */
	uint32_t ring_capacity;		/* records; rounded up to 2^n */
	uint32_t max_creds;
	int clock;			/* enum spa_clock */
	int snaplen;
	int buffer_bytes;		/* kernel ring for live capture */
	int timeout_ms;			/* TPACKET_V3 block timeout */
	int immediate;			/* pcap immediate mode */
	int dispatch_batch;		/* -1: a whole buffer per call */
	int id_filter;			/* credential ids in the kernel filter */
};

struct spa_core;

void spa_core_default_cfg(struct spa_core_cfg *cfg);
struct spa_core *spa_core_new(const struct spa_core_cfg *cfg);
void spa_core_free(struct spa_core *core);

/* Setup (before spa_core_start).  Return >= 0 or -errno. */
int spa_core_add_cred(struct spa_core *core, const uint8_t id[SPA_ID_LEN],
		      const uint8_t secret[SPA_SECRET_LEN]);
int spa_core_replay_seed(struct spa_core *core,
			 const uint8_t key[SPA_REPLAY_KEY_LEN],
			 uint64_t expires_us);
/* Open a live interface or a pcap file; on failure errbuf (>= 256 bytes)
 * holds libpcap's message. */
int spa_core_open_live(struct spa_core *core, const char *ifname,
		       char *errbuf);
int spa_core_open_file(struct spa_core *core, const char *path, char *errbuf);
/* The BPF program text installed by open_*, for logs and docs. */
int spa_core_filter_text(const struct spa_core *core, char *buf, size_t len);
int spa_core_start(struct spa_core *core);	/* capture thread */
void spa_core_stop(struct spa_core *core);	/* stop and join */

/* Consumer side (Python). */
int spa_core_eventfd(const struct spa_core *core);
size_t spa_core_pop(struct spa_core *core, struct spa_record *out,
		    size_t max);
int spa_core_prepare_sleep(struct spa_core *core);
void spa_core_clear_wakeup(struct spa_core *core);
/* 1 when the capture thread has ended (end of file, error or stop). */
int spa_core_finished(const struct spa_core *core);
/* Once finished: the capture thread's wall and CPU time in ns. */
int spa_core_capture_times(const struct spa_core *core, uint64_t out[2]);
/* libpcap's message when the thread ended on an error, else "" */
const char *spa_core_error(const struct spa_core *core);
void spa_core_counters(const struct spa_core *core,
		       uint64_t out[SPA_NCOUNTERS]);
/* kernel-side figures from pcap_stats: received, dropped, if_dropped */
int spa_core_pcap_stats(struct spa_core *core, uint64_t out[3]);

/* The packet path without libpcap, for tests and fuzzing: classify one
 * frame as the capture thread would, counting it, and on acceptance push
 * the record into the ring.  now_us is the verification clock. */
enum spa_counter spa_core_process(struct spa_core *core, int linktype,
				  const uint8_t *frame, size_t caplen,
				  uint64_t now_us);

#endif
