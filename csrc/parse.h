/* Link, network and transport parsing of one captured frame.
 *
 * The parser finds the UDP payload of a frame and the addresses around it.
 * Every length it trusts comes from a header it has bounds-checked against
 * the captured bytes: the IPv4 total length or IPv6 payload length caps the
 * network packet, the UDP length caps the payload, and the capture length
 * only ever shortens what may be read.  A frame whose declared lengths run
 * past what was captured is dropped, not repaired.
 */
#ifndef SPA_PARSE_H
#define SPA_PARSE_H

#include <stddef.h>
#include <stdint.h>

/* libpcap DLT_* / LINKTYPE_* values the parser understands */
#define SPA_DLT_NULL		0	/* BSD loopback, host-order family */
#define SPA_DLT_EN10MB		1	/* Ethernet, optionally 802.1Q/802.1ad */
#define SPA_DLT_RAW		12	/* raw IP (DLT_RAW on Linux) */
#define SPA_DLT_LOOP		108	/* OpenBSD loopback, network-order family */
#define SPA_DLT_LINUX_SLL	113	/* Linux cooked capture v1 */
#define SPA_LINKTYPE_RAW	101	/* raw IP as LINKTYPE_RAW in files */
#define SPA_DLT_IPV4		228
#define SPA_DLT_IPV6		229
#define SPA_DLT_LINUX_SLL2	276	/* Linux cooked capture v2 */

#define SPA_MAX_VLAN_TAGS	2
#define SPA_MAX_IPV6_EXT	8

enum spa_parse_verdict {
	SPA_PARSE_OK = 0,
	SPA_PARSE_LINK,		/* short or unsupported link header/type */
	SPA_PARSE_NET,		/* not IPv4/IPv6, or a bad IP header */
	SPA_PARSE_FRAGMENT,	/* an IP fragment: never reassembled */
	SPA_PARSE_TRANSPORT,	/* not UDP, or a bad UDP header/length */
};

struct spa_frame {
	uint8_t family;		/* 4 or 6 */
	uint8_t src[16];	/* IPv4 in the first 4 bytes, rest zero */
	uint8_t dst[16];
	uint16_t sport;		/* host order */
	uint16_t dport;
	const uint8_t *payload;	/* points into the frame */
	size_t payload_len;	/* from the UDP length field */
};

enum spa_parse_verdict spa_parse_frame(int linktype, const uint8_t *frame,
				       size_t caplen, struct spa_frame *out);

#endif
