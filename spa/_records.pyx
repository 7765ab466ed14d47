# cython: boundscheck=False, wraparound=False, cdivision=True
"""Batch decoding of ring records into Python tuples.

The rule manager pops records from the native ring in batches of up to a few
hundred. Turning each fixed-layout C struct into Python values through cffi
attribute access costs a Python-level call per field; this loop does it in C
with the struct layout taken from csrc/spa.h itself, so the two cannot drift.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "spa.h":
    cdef struct spa_record:
        uint64_t ts_us
        uint64_t rx_us
        uint32_t cred
        uint8_t family
        uint8_t src[16]
        uint8_t dst[16]
        uint16_t sport
        uint16_t dport
        uint8_t replay_key[16]
        uint8_t body[106]


RECORD_SIZE = sizeof(spa_record)


def unpack(const unsigned char[::1] buf, Py_ssize_t count):
    """Decode ``count`` records from ``buf``.

    Returns a list of tuples ``(cred, family, src, dst, sport, dport, ts_us,
    rx_us, replay_key, body)``; the address fields are the 16 raw bytes.
    """
    cdef Py_ssize_t i
    cdef const spa_record *r
    cdef Py_ssize_t size = sizeof(spa_record)
    if count < 0 or count * size > buf.shape[0]:
        raise ValueError("buffer shorter than the record count")
    out = []
    for i in range(count):
        r = <const spa_record *> &buf[i * size]
        out.append((
            r.cred,
            r.family,
            (<const char *> r.src)[:16],
            (<const char *> r.dst)[:16],
            r.sport,
            r.dport,
            r.ts_us,
            r.rx_us,
            (<const char *> r.replay_key)[:16],
            (<const char *> r.body)[:106],
        ))
    return out
