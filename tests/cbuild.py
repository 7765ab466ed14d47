"""Building the C test programs for the pytest drivers.

One compiler, one set of warnings and one flag set per kind of build, so
that every C program a test runs is held to the same standard.  A failed
build raises CompileError with the compiler's stderr: the test that needs
the program fails (or errors in its fixture), it is never skipped.
"""

from __future__ import annotations

import functools
import importlib.util
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Literal

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
CTESTS = CSRC / "tests"

CC = shutil.which("gcc") or shutil.which("cc") or "cc"



@functools.cache
def _build_ffi() -> ModuleType:
    """csrc/build_ffi.py, which holds the core's source list and flags."""
    spec = importlib.util.spec_from_file_location(
        "spa_build_ffi", CSRC / "build_ffi.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Language and warnings: those csrc/build_ffi.py builds the core with.
WARN: tuple[str, ...] = tuple(_build_ffi().WARNINGS)
# Optimised and hardened, as the core ships.
PLAIN = (
    "-O2",
    "-fstack-protector-strong",
    "-D_FORTIFY_SOURCE=2",
    "-fvisibility=hidden",
)
# ASan and UBSan; the first report ends the run.
ASAN = (
    "-O1",
    "-g",
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
)
# TSan does not model atomic_thread_fence and GCC says so (-Wtsan); the fence
# in ring.c only orders the wake-up flag, the records' acquire/release it does
# see.
TSAN = ("-O2", "-g", "-fsanitize=thread", "-Wno-tsan")

Sanitize = Literal["address", "thread"] | None
FLAGS: dict[Sanitize, tuple[str, ...]] = {
    None: PLAIN,
    "address": ASAN,
    "thread": TSAN,
}


class CompileError(RuntimeError):
    """The compiler could not be run or rejected the program."""


def core_sources() -> tuple[Path, ...]:
    """The core's C files: SOURCES of csrc/build_ffi.py, the one such list."""
    names: list[str] = _build_ffi().SOURCES
    return tuple(CSRC / name for name in names)


def build(
    sources: Sequence[Path],
    out: Path,
    *,
    sanitize: Sanitize = "address",
    extra: Sequence[str] = (),
) -> Path:
    """Compile and link sources into out; extra goes last (libraries)."""
    cmd = [
        CC,
        *WARN,
        *FLAGS[sanitize],
        f"-I{CSRC}",
        *(str(src) for src in sources),
        "-o",
        str(out),
        *extra,
    ]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:
        raise CompileError(f"cannot run {CC}: {exc}") from exc
    if res.returncode != 0:
        raise CompileError(f"compile failed: {shlex.join(cmd)}\n{res.stderr}")
    return out
