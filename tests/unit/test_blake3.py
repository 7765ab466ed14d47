"""csrc/blake3.c against the official test vectors and the blake3 package.

The C code is driven through csrc/tests/blake3_tool.c, built once per session
with ASan and UBSan (or taken from $SPA_BLAKE3_TOOL).  Every test batches its
cases through a single run of the tool.
"""

from __future__ import annotations

import functools
import json
import os
import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import pytest

from tests import cbuild

pytestmark = pytest.mark.sanitize

VECTORS_NAME = "blake3_test_vectors.json"
SEED = int(os.environ.get("SPA_BLAKE3_SEED", "0x5ba3b1a4e"), 0)
RANDOM_CASES = 10_000
INCR_CASES = 1_500
MODES = ("hash", "keyed", "derive")
VECTOR_FIELDS = {"hash": "hash", "keyed": "keyed_hash", "derive": "derive_key"}
VECTOR_SEEKS = (1, 31, 32, 63, 64, 65, 100)
BOUNDARY_LENS = (0, 1, 63, 64, 65, 127, 128, 129, 139, 1023, 1024, 1025, 2047, 2048)
# Context characters: ASCII, Latin-1, CJK and astral, never NUL.
CONTEXT_ALPHABET = "abcXYZ019 -_:./\x01\x7f\u00e9\u00ff\u4e2d\U0001f511"


@dataclass(frozen=True)
class Case:
    mode: str
    data: bytes
    out_len: int
    seek: int
    key: bytes | None = None
    context: str | None = None

    def line(self, mode: str | None = None) -> str:
        key = self.key.hex() if self.key is not None else "-"
        ctx = "-" if self.context is None else self.context.encode().hex() or "-"
        data = self.data.hex() or "-"
        return f"{mode or self.mode} {key} {ctx} {data} {self.out_len} {self.seek}"

    def expected(self) -> str:
        if self.key is not None:
            h = blake3.blake3(self.data, key=self.key)
        elif self.context is not None:
            h = blake3.blake3(self.data, derive_key_context=self.context)
        else:
            h = blake3.blake3(self.data)
        return h.digest(length=self.out_len, seek=self.seek).hex()

    def describe(self) -> str:
        extra = f" key={self.key.hex()}" if self.key is not None else ""
        if self.context is not None:
            extra += f" context={self.context!r}"
        return (
            f"{self.mode} len={len(self.data)} out_len={self.out_len} "
            f"seek={self.seek}{extra}"
        )


# The compression function has three implementations (SSSE3, chosen at run
# time where the CPU has it; SSE2; portable C); every one is tested.
VARIANTS = {
    "dispatch": (),
    "sse2": ("-DSPA_BLAKE3_NO_SSSE3",),
    "portable": ("-DSPA_BLAKE3_PORTABLE",),
}


@pytest.fixture(scope="session", params=sorted(VARIANTS))
def tool(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
         ) -> Path:  # fmt: skip
    prebuilt = os.environ.get("SPA_BLAKE3_TOOL")
    if prebuilt:
        path = Path(prebuilt)
        assert path.is_file(), f"SPA_BLAKE3_TOOL={prebuilt} does not exist"
        return path
    out = tmp_path_factory.mktemp(f"blake3-{request.param}") / "blake3_tool"
    sources = [cbuild.CTESTS / "blake3_tool.c", cbuild.CSRC / "blake3.c"]
    return cbuild.build(sources, out, extra=VARIANTS[request.param])


def run_tool(tool: Path, lines: list[str]) -> list[str]:
    res = subprocess.run(
        [str(tool)],
        input="".join(f"{line}\n" for line in lines),
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    out = res.stdout.splitlines()
    assert len(out) == len(lines)
    return out


def vectors_path() -> Path:
    candidates = []
    shared = os.environ.get("SPA_SHARED_DIR")
    if shared:
        base = Path(shared)
        candidates += [base / "vectors" / VECTORS_NAME, base / VECTORS_NAME]
    candidates.append(cbuild.ROOT.parent / "shared" / "vectors" / VECTORS_NAME)
    for path in candidates:
        if path.is_file():
            return path
    pytest.fail(f"BLAKE3 test vectors not found; looked at {candidates}")


@functools.cache
def load_vectors() -> dict[str, Any]:
    # Loaded inside the tests, not in a fixture: a missing file is a FAILED
    # test, never a skip or a setup error.
    with vectors_path().open() as f:
        data: dict[str, Any] = json.load(f)
    assert data["cases"]
    return data


def vector_input(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


def vector_cases(vectors: dict[str, Any]) -> Iterator[tuple[Case, str]]:
    """Every vector in every mode: full length, 32 bytes, and seeked tails."""
    key = vectors["key"].encode()
    context = vectors["context_string"]
    assert len(key) == 32
    for vec in vectors["cases"]:
        data = vector_input(vec["input_len"])
        for mode in MODES:
            full = bytes.fromhex(vec[VECTOR_FIELDS[mode]])
            views = [(len(full), 0), (32, 0)]
            views += [(len(full) - s, s) for s in VECTOR_SEEKS if s < len(full)]
            for out_len, seek in views:
                case = Case(
                    mode,
                    data,
                    out_len,
                    seek,
                    key=key if mode == "keyed" else None,
                    context=context if mode == "derive" else None,
                )
                yield case, full[seek : seek + out_len].hex()


def check(cases: list[Case], got: list[str], want: list[str], note: str) -> None:
    bad = [
        f"{c.describe()}\n  got  {g}\n  want {w}"
        for c, g, w in zip(cases, got, want, strict=True)
        if g != w
    ]
    shown = "\n".join(bad[:5])
    assert not bad, f"{note}: {len(bad)}/{len(cases)} mismatches\n{shown}"


def test_official_vectors(tool: Path) -> None:
    pairs = list(vector_cases(load_vectors()))
    cases = [c for c, _ in pairs]
    # Both the one-shot/seek paths and the piecewise update path.
    lines = [c.line() for c in cases] + [c.line("incr") for c in cases]
    got = run_tool(tool, lines)
    want = [w for _, w in pairs]
    check(cases, got[: len(cases)], want, "one-shot")
    check(cases, got[len(cases) :], want, "incremental")


def test_vectors_cover_every_mode() -> None:
    vectors = load_vectors()
    lens = {vec["input_len"] for vec in vectors["cases"]}
    assert {0, 1024, 1025, 102400} <= lens
    for vec in vectors["cases"]:
        for field in VECTOR_FIELDS.values():
            assert len(vec[field]) == 2 * 131


def random_case(rng: random.Random, max_len: int) -> Case:
    mode = rng.choice(MODES)
    if rng.random() < 0.15:
        n = rng.choice([b for b in BOUNDARY_LENS if b <= max_len])
    else:
        n = rng.randint(0, max_len)
    roll = rng.random()
    if roll < 0.5:
        seek = 0
    elif roll < 0.85:
        seek = rng.randint(1, 1000)
    else:
        seek = rng.randint(0, 2**64 - 1)
    key = context = None
    if mode == "keyed":
        key = rng.randbytes(32)
    elif mode == "derive":
        size = rng.randint(0, 40)
        context = "".join(rng.choice(CONTEXT_ALPHABET) for _ in range(size))
    return Case(mode, rng.randbytes(n), rng.randint(1, 200), seek, key, context)


@pytest.mark.parametrize("seed", [SEED], ids=lambda s: f"seed={s:#x}")
def test_matches_blake3_package(tool: Path, seed: int) -> None:
    rng = random.Random(seed)
    cases = [random_case(rng, 2048) for _ in range(RANDOM_CASES)]
    got = run_tool(tool, [c.line() for c in cases])
    check(cases, got, [c.expected() for c in cases], f"seed={seed:#x}")


@pytest.mark.parametrize("seed", [SEED + 1], ids=lambda s: f"seed={s:#x}")
def test_incremental_matches_one_shot(tool: Path, seed: int) -> None:
    rng = random.Random(seed)
    # Up to 9 chunks, so pieces straddle chunk ends and the CV stack merges.
    cases = [random_case(rng, 9 * 1024 + 100) for _ in range(INCR_CASES)]
    # In incr lines a "-" context means no derivation, so none may be empty.
    cases = [c for c in cases if c.context != ""]
    lines = [c.line() for c in cases] + [c.line("incr") for c in cases]
    got = run_tool(tool, lines)
    one_shot, incr = got[: len(cases)], got[len(cases) :]
    check(cases, incr, one_shot, f"incr vs one-shot, seed={seed:#x}")
    check(cases, incr, [c.expected() for c in cases], f"incr, seed={seed:#x}")


def test_hot_path_shapes(tool: Path) -> None:
    """The shapes SPA uses: derive, 139-byte keyed tag, 106-byte keystream."""
    secret = bytes(range(32))
    ctx = "spa protocol v1 packet authentication key"
    k_mac = blake3.blake3(secret, derive_key_context=ctx).digest()
    cases = [
        Case("derive", secret, 32, 0, context=ctx),
        Case("keyed", bytes(range(139)), 32, 0, key=k_mac),
        Case("keyed", bytes(range(33)), 106, 0, key=k_mac),
        Case("hash", b"", 0, 0),
    ]
    got = run_tool(tool, [c.line() for c in cases])
    check(cases, got, [c.expected() for c in cases], "hot path")
    assert got[0] == k_mac.hex()
    assert got[-1] == ""


@pytest.mark.parametrize(
    "line",
    [
        "hash - - 0 32 0",
        "hash - - zz 32 0",
        "keyed 00 - - 32 0",
        "keyed - - 00 32 0",
        "derive - 6100 - 32 0",
        "bogus - - - 32 0",
        "hash - - - x 0",
        "hash - - - 32 -1",
        "hash - - - 32 18446744073709551616",
        "hash - - -",
        "hash - - - 32 0 extra",
        "",
    ],
)
def test_malformed_input_fails(tool: Path, line: str) -> None:
    res = subprocess.run([str(tool)], input=f"{line}\n", capture_output=True, text=True)
    assert res.returncode == 2, res.stderr
    assert res.stdout == ""
