"""ChatNexus' own CPU kernels: int4/int8 weights x int8 activations on AVX-512 VNNI or AVX2 (q4a8.cpp).

    from inference.engine import kernels
    kernels.load()          # builds once per machine and torch version (~15 s here), then loads; EngineError if it cannot
    torch.ops.chatnexus.int4a8_linear(x, packed, scales, n)

Why our own: aten's int4 CPU kernel (the one torchao's CPU int4 path uses too, and the one
inductor's generated kernel ties) multiplies ~3.4 weights per cycle per core on bf16
activations; llama.cpp's approach — activations quantised to int8 per block of 32, exact
integer dot products with VNNI — does several times that. No well-kept library ships it for
torch on x86 today (intel-extension-for-pytorch's last release needs torch 2.8; torchao's
PyPI wheels carry CUDA kernels only), so it is ~700 lines of C++ here, built with torch's own
extension builder (a C++ compiler and ninja are needed; without them the precision is not
offered, and `auto` picks among the others). One build holds both instruction sets; the ops
use AVX-512 VNNI where the CPU has it, else AVX2 (same bits for the linears).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import platform
import shutil
import sys
import threading
from pathlib import Path

import torch

from ..errors import EngineError
from ..threads import cpu_features

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("q4a8.cpp")
# what q4a8.cpp is compiled for (and must find on the CPU running it)
# the base instruction set (AVX2 + FMA + F16C); AVX-512 VNNI is used where present (q4a8.cpp's v512)
REQUIRED_FLAGS = ("avx2", "fma", "f16c")
CFLAGS = ["-O3", "-fopenmp", "-ffp-contract=off", "-mavx2", "-mfma", "-mf16c"]
_lock = threading.Lock()
_state: dict[str, object] = {}  # "loaded": True, or "error": the EngineError raised the first time


def missing_cpu_flags(flags: str | None = None) -> list[str]:
    """REQUIRED_FLAGS that `flags` (comma-separated; default: this CPU's) lacks."""
    have = set((cpu_features() if flags is None else flags).split(","))
    return [flag for flag in REQUIRED_FLAGS if flag not in have]


def unsupported_reason(machine: str | None = None, flags: str | None = None) -> str | None:
    """Why these kernels cannot run on a CPU (default: this one), or None where they can."""
    machine = platform.machine() if machine is None else machine
    if machine not in ("x86_64", "AMD64"):
        return f"the int4a8 kernels are written for x86-64 with AVX2 or AVX-512 (this is {machine}); use int4 or int8"
    missing = missing_cpu_flags(flags)
    if missing:
        return f"the int4a8 kernels need AVX2, FMA and F16C; this CPU lacks {', '.join(missing)}: use int4 or int8"
    return None


def isa() -> str:
    """The instruction set the loaded kernels use here: "avx512" (AVX-512 VNNI) or "avx2"."""
    load()
    return torch.ops.chatnexus.kernel_isa()


def build_dir() -> Path:
    from ..loading import model_cache_dir

    return model_cache_dir("kernels")


def _ninja() -> str | None:
    """ninja on PATH, or the one the `ninja` wheel installs next to this interpreter."""
    found = shutil.which("ninja")
    if found:
        return found
    if importlib.util.find_spec("ninja") is not None:
        candidate = Path(sys.executable).parent / "ninja"
        if candidate.is_file():
            return str(candidate)
    return None


def load() -> None:
    """Build (first time on this machine and torch version) and load the kernels; EngineError
    saying why where that cannot be done. Safe to call often: the outcome is remembered."""
    with _lock:
        if "error" in _state:
            raise _state["error"]  # type: ignore[misc]
        if _state.get("loaded"):
            return
        try:
            _build_and_load()
        except EngineError as e:
            _state["error"] = e
            raise
        _state["loaded"] = True


def available() -> bool:
    try:
        load()
    except EngineError:
        return False
    return True


def load_error() -> str | None:
    """Why load() failed (None when it has not, or has not been called)."""
    error = _state.get("error")
    return None if error is None else str(error)


def _build_and_load() -> None:
    reason = unsupported_reason()
    if reason:
        raise EngineError(reason)
    ninja = _ninja()
    if ninja is None:
        raise EngineError("building the int4a8 kernels needs ninja (pip install ninja) and a C++ compiler; use int4 or int8")
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + " ".join(CFLAGS).encode() + torch.__version__.encode()).hexdigest()[:12]
    name = f"chatnexus_q4a8_{digest}"
    directory = build_dir() / name
    directory.mkdir(parents=True, exist_ok=True)
    library, built = directory / f"{name}.so", directory / "built"
    try:
        if built.is_file() and library.is_file():  # the marker is written after a whole build: never a half-written .so
            torch.ops.load_library(str(library))
            return
        from torch.utils import cpp_extension

        os.environ["PATH"] = f"{Path(ninja).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        log.info("building the int4a8 CPU kernels in %s (once per machine and torch version)", directory)
        # two processes starting at once: torch's builder takes a lock in the build directory
        cpp_extension.load(name=name, sources=[str(SOURCE)], extra_cflags=CFLAGS, build_directory=str(directory),
                           is_python_module=False, verbose=False)
        marker = directory / f"built.{os.getpid()}"
        marker.write_text(torch.__version__)
        os.replace(marker, built)
    except Exception as e:  # a compiler error, a missing header, a stale library: say so, serve another precision
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EngineError(f"could not build or load the int4a8 kernels ({first}); use int4 or int8") from e
