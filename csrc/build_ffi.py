"""cffi (API mode) build of the native core as ``spa._core``.

The C sources are plain C11 with no Python headers; cffi generates the glue
and releases the GIL around every call, so a call into the core never holds
up other Python threads. ``SPA_SANITIZE=1`` builds with ASan/UBSan,
``SPA_DEBUG=1`` without optimisation.
"""

from __future__ import annotations

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
SOURCES = ["core.c", "parse.c", "ring.c", "replay.c", "blake3.c"]

CDEF = """
#define SPA_VERSION 1
#define SPA_ID_LEN 8
#define SPA_NONCE_LEN 16
#define SPA_SECRET_LEN 32
#define SPA_TAG_LEN 32
#define SPA_BODY_LEN 106
#define SPA_HDR_LEN 33
#define SPA_WIRE_LEN 171
#define SPA_REPLAY_KEY_LEN 16

enum spa_counter {
    SPA_C_ACCEPTED, SPA_C_DROP_LINK, SPA_C_DROP_NET, SPA_C_DROP_FRAGMENT,
    SPA_C_DROP_TRANSPORT, SPA_C_DROP_PORT, SPA_C_DROP_LENGTH,
    SPA_C_DROP_VERSION, SPA_C_DROP_UNKNOWN_ID, SPA_C_DROP_MAC,
    SPA_C_DROP_STALE, SPA_C_DROP_REPLAY, SPA_C_DROP_REPLAY_FULL,
    SPA_C_DROP_RING_FULL, SPA_NCOUNTERS
};

struct spa_record {
    uint64_t ts_us;
    uint64_t rx_us;
    uint32_t cred;
    uint8_t family;
    uint8_t src[16];
    uint8_t dst[16];
    uint16_t sport;
    uint16_t dport;
    uint8_t replay_key[16];
    uint8_t body[106];
    ...;
};

struct spa_core_cfg {
    uint16_t port;
    uint64_t window_us;
    uint32_t replay_capacity;
    uint32_t ring_capacity;
    uint32_t max_creds;
    int clock;
    int snaplen;
    int buffer_bytes;
    int timeout_ms;
    int immediate;
    int dispatch_batch;
    int id_filter;
};

struct spa_core;

void spa_core_default_cfg(struct spa_core_cfg *cfg);
struct spa_core *spa_core_new(const struct spa_core_cfg *cfg);
void spa_core_free(struct spa_core *core);
int spa_core_add_cred(struct spa_core *core, const uint8_t *id,
                      const uint8_t *secret);
int spa_core_replay_seed(struct spa_core *core, const uint8_t *key,
                         uint64_t expires_us);
int spa_core_open_live(struct spa_core *core, const char *ifname,
                       char *errbuf);
int spa_core_open_file(struct spa_core *core, const char *path, char *errbuf);
int spa_core_filter_text(const struct spa_core *core, char *buf, size_t len);
int spa_core_start(struct spa_core *core);
void spa_core_stop(struct spa_core *core);
int spa_core_eventfd(const struct spa_core *core);
size_t spa_core_pop(struct spa_core *core, struct spa_record *out, size_t max);
int spa_core_prepare_sleep(struct spa_core *core);
void spa_core_clear_wakeup(struct spa_core *core);
int spa_core_finished(const struct spa_core *core);
int spa_core_capture_times(const struct spa_core *core, uint64_t *out);
const char *spa_core_error(const struct spa_core *core);
void spa_core_counters(const struct spa_core *core, uint64_t *out);
int spa_core_pcap_stats(struct spa_core *core, uint64_t *out);
enum spa_counter spa_core_process(struct spa_core *core, int linktype,
                                  const uint8_t *frame, size_t caplen,
                                  uint64_t now_us);

void spa_blake3_hash(const uint8_t *in, size_t len, uint8_t *out,
                     size_t out_len);
void spa_blake3_keyed(const uint8_t *key, const uint8_t *in, size_t len,
                      uint8_t *out, size_t out_len);
void spa_blake3_derive_key(const char *context, const uint8_t *material,
                           size_t len, uint8_t *out, size_t out_len);
"""


# Language and warnings for every C build of the core, tests included.
WARNINGS = (
    "-std=c11",
    "-D_GNU_SOURCE",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wshadow",
    "-Wno-sign-conversion",
)


def compile_args() -> list[str]:
    """Hardening always, warnings as errors always, sanitizers on request."""
    flags = [
        *WARNINGS,
        "-fstack-protector-strong",
        "-fvisibility=hidden",
        "-fno-strict-aliasing",
    ]
    if os.environ.get("SPA_SANITIZE"):
        flags += ["-O1", "-g", "-fsanitize=address,undefined",
                  "-fno-omit-frame-pointer"]
    elif os.environ.get("SPA_DEBUG"):
        flags += ["-O0", "-g"]
    else:
        flags += ["-O2", "-D_FORTIFY_SOURCE=2"]
    return flags


def link_args() -> list[str]:
    args = ["-Wl,-z,relro,-z,now", "-pthread"]
    if os.environ.get("SPA_SANITIZE"):
        args.append("-fsanitize=address,undefined")
    return args


ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "spa._core",
    '#include "spa.h"\n#include "blake3.h"\n',
    sources=[str(Path("csrc") / s) for s in SOURCES],
    include_dirs=["csrc"],
    libraries=["pcap"],
    extra_compile_args=compile_args(),
    extra_link_args=link_args(),
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
