/* Frame parser: link header, IPv4/IPv6, UDP.  See parse.h.
 *
 * Each layer gets a pointer and the number of bytes it may read.  The IP
 * layer narrows that count to the length its header declares (after
 * checking the declaration fits in what was captured), and the UDP layer
 * narrows it again to the UDP length.  Nothing below the IP layer ever sees
 * the capture length, so link padding or a truncated capture cannot widen
 * the payload.
 */
#include "parse.h"

#include <string.h>

#define ETH_HDR_LEN	14
#define SLL_HDR_LEN	16
#define SLL2_HDR_LEN	20
#define VLAN_TAG_LEN	4
#define IPV4_MIN_HDR	20
#define IPV6_HDR_LEN	40
#define UDP_HDR_LEN	8

#define ETHERTYPE_IPV4	0x0800
#define ETHERTYPE_IPV6	0x86DD
#define ETHERTYPE_8021Q	0x8100
#define ETHERTYPE_8021AD 0x88A8
#define ETHERTYPE_QINQ	0x9100

#define PROTO_HOPOPTS	0
#define PROTO_UDP	17
#define PROTO_ROUTING	43
#define PROTO_FRAGMENT	44
#define PROTO_DSTOPTS	60

#define IPV4_FLAG_MF	0x2000
#define IPV4_FRAG_OFF	0x1FFF

/* The network protocol a link header announced. */
enum net_proto {
	NET_NONE = 0,
	NET_IPV4,
	NET_IPV6,
	NET_BY_VERSION,		/* raw IP: the version nibble decides */
};

static inline uint16_t load_be16(const uint8_t *p)
{
	return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static inline uint32_t load_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

/* DLT_NULL stores the family in the capturing host's byte order. */
static inline uint32_t load_host32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

/* BSD AF_INET6 differs between systems; a capture may come from any. */
static enum net_proto from_family(uint32_t af)
{
	switch (af) {
	case 2:
		return NET_IPV4;
	case 10:	/* Linux */
	case 24:	/* NetBSD, OpenBSD */
	case 28:	/* FreeBSD, DragonFly */
	case 30:	/* macOS */
		return NET_IPV6;
	default:
		return NET_NONE;
	}
}

static enum net_proto from_ethertype(uint16_t type)
{
	if (type == ETHERTYPE_IPV4)
		return NET_IPV4;
	if (type == ETHERTYPE_IPV6)
		return NET_IPV6;
	return NET_NONE;
}

static inline int is_vlan_tpid(uint16_t type)
{
	return type == ETHERTYPE_8021Q || type == ETHERTYPE_8021AD ||
	       type == ETHERTYPE_QINQ;
}

/* The ethertype sits at type_off; VLAN tags after it are skipped.  On
 * success *hdr is where the network header begins. */
static enum spa_parse_verdict skip_ethertype(const uint8_t *f, size_t len,
					     size_t type_off, size_t *hdr,
					     enum net_proto *proto)
{
	size_t off = type_off + 2;
	uint16_t type;
	int tags = 0;

	if (len < off)
		return SPA_PARSE_LINK;
	type = load_be16(f + type_off);
	while (is_vlan_tpid(type)) {
		if (tags == SPA_MAX_VLAN_TAGS)
			return SPA_PARSE_LINK;
		if (len - off < VLAN_TAG_LEN)
			return SPA_PARSE_LINK;
		type = load_be16(f + off + 2);
		off += VLAN_TAG_LEN;
		tags++;
	}
	*hdr = off;
	*proto = from_ethertype(type);
	return SPA_PARSE_OK;
}

static enum spa_parse_verdict parse_link(int linktype, const uint8_t *f,
					 size_t len, size_t *hdr,
					 enum net_proto *proto)
{
	switch (linktype) {
	case SPA_DLT_NULL:
	case SPA_DLT_LOOP:
		if (len < 4)
			return SPA_PARSE_LINK;
		*hdr = 4;
		*proto = from_family(linktype == SPA_DLT_NULL ?
				     load_host32(f) : load_be32(f));
		return SPA_PARSE_OK;
	case SPA_DLT_EN10MB:
		return skip_ethertype(f, len, ETH_HDR_LEN - 2, hdr, proto);
	case SPA_DLT_LINUX_SLL:
		/* libpcap re-inserts a stripped VLAN tag at the protocol */
		return skip_ethertype(f, len, SLL_HDR_LEN - 2, hdr, proto);
	case SPA_DLT_LINUX_SLL2:
		if (len < SLL2_HDR_LEN)
			return SPA_PARSE_LINK;
		*hdr = SLL2_HDR_LEN;
		*proto = from_ethertype(load_be16(f));
		return SPA_PARSE_OK;
	case SPA_DLT_RAW:
	case SPA_LINKTYPE_RAW:
		*hdr = 0;
		*proto = NET_BY_VERSION;
		return SPA_PARSE_OK;
	case SPA_DLT_IPV4:
		*hdr = 0;
		*proto = NET_IPV4;
		return SPA_PARSE_OK;
	case SPA_DLT_IPV6:
		*hdr = 0;
		*proto = NET_IPV6;
		return SPA_PARSE_OK;
	default:
		return SPA_PARSE_LINK;
	}
}

/* p[0..len) is the UDP datagram as bounded by the IP layer. */
static enum spa_parse_verdict parse_udp(const uint8_t *p, size_t len,
					struct spa_frame *out)
{
	size_t ulen;

	if (len < UDP_HDR_LEN)
		return SPA_PARSE_TRANSPORT;
	ulen = load_be16(p + 4);
	if (ulen < UDP_HDR_LEN || ulen > len)
		return SPA_PARSE_TRANSPORT;
	out->sport = load_be16(p);
	out->dport = load_be16(p + 2);
	out->payload = p + UDP_HDR_LEN;
	out->payload_len = ulen - UDP_HDR_LEN;
	return SPA_PARSE_OK;
}

/* p[0..cap) is everything captured after the link header. */
static enum spa_parse_verdict parse_ipv4(const uint8_t *p, size_t cap,
					 struct spa_frame *out)
{
	size_t ihl, total;
	uint16_t frag;

	if (cap < IPV4_MIN_HDR || p[0] >> 4 != 4)
		return SPA_PARSE_NET;
	ihl = (size_t)(p[0] & 0x0F) * 4;
	total = load_be16(p + 2);
	if (ihl < IPV4_MIN_HDR || total < ihl || total > cap)
		return SPA_PARSE_NET;
	frag = load_be16(p + 6);
	if (frag & (IPV4_FLAG_MF | IPV4_FRAG_OFF))
		return SPA_PARSE_FRAGMENT;
	if (p[9] != PROTO_UDP)
		return SPA_PARSE_TRANSPORT;
	if (parse_udp(p + ihl, total - ihl, out) != SPA_PARSE_OK)
		return SPA_PARSE_TRANSPORT;
	out->family = 4;
	memset(out->src, 0, sizeof(out->src));
	memset(out->dst, 0, sizeof(out->dst));
	memcpy(out->src, p + 12, 4);
	memcpy(out->dst, p + 16, 4);
	return SPA_PARSE_OK;
}

static inline int is_ipv6_ext(uint8_t nh)
{
	return nh == PROTO_HOPOPTS || nh == PROTO_ROUTING ||
	       nh == PROTO_DSTOPTS;
}

static enum spa_parse_verdict parse_ipv6(const uint8_t *p, size_t cap,
					 struct spa_frame *out)
{
	size_t plen, end, off = IPV6_HDR_LEN, hlen;
	uint8_t nh;
	int n_ext = 0;

	if (cap < IPV6_HDR_LEN || p[0] >> 4 != 6)
		return SPA_PARSE_NET;
	plen = load_be16(p + 4);
	/* 0 announces a jumbogram, which never carries a knock */
	if (plen == 0 || plen > cap - IPV6_HDR_LEN)
		return SPA_PARSE_NET;
	end = IPV6_HDR_LEN + plen;
	nh = p[6];
	while (is_ipv6_ext(nh)) {
		if (n_ext == SPA_MAX_IPV6_EXT)
			return SPA_PARSE_NET;
		if (end - off < 2)
			return SPA_PARSE_NET;
		hlen = ((size_t)p[off + 1] + 1) * 8;
		if (end - off < hlen)
			return SPA_PARSE_NET;
		nh = p[off];
		off += hlen;
		n_ext++;
	}
	if (nh == PROTO_FRAGMENT)
		return SPA_PARSE_FRAGMENT;
	if (nh != PROTO_UDP)
		return SPA_PARSE_TRANSPORT;
	if (parse_udp(p + off, end - off, out) != SPA_PARSE_OK)
		return SPA_PARSE_TRANSPORT;
	out->family = 6;
	memcpy(out->src, p + 8, 16);
	memcpy(out->dst, p + 24, 16);
	return SPA_PARSE_OK;
}

enum spa_parse_verdict spa_parse_frame(int linktype, const uint8_t *frame,
				       size_t caplen, struct spa_frame *out)
{
	enum spa_parse_verdict v;
	enum net_proto proto = NET_NONE;
	const uint8_t *ip;
	size_t hdr = 0, cap;

	v = parse_link(linktype, frame, caplen, &hdr, &proto);
	if (v != SPA_PARSE_OK)
		return v;
	cap = caplen - hdr;
	if (cap == 0)
		return SPA_PARSE_NET;
	ip = frame + hdr;
	if (proto == NET_BY_VERSION)
		proto = ip[0] >> 4 == 4 ? NET_IPV4 :
			ip[0] >> 4 == 6 ? NET_IPV6 : NET_NONE;
	switch (proto) {
	case NET_IPV4:
		return parse_ipv4(ip, cap, out);
	case NET_IPV6:
		return parse_ipv6(ip, cap, out);
	default:
		return SPA_PARSE_NET;
	}
}
