"""CPU threads, set deliberately: one torch thread per physical core (hyper-threads only add contention).

    set_threads()      # physical cores, e.g. 2 on our CI boxes
    set_threads(1)     # e.g. when several workers share one box
"""

from __future__ import annotations

import os
import platform

import torch


def _cpuinfo(*keys: str) -> str | None:
    """The value of the first /proc/cpuinfo line starting with one of `keys` (None if none or unreadable)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(keys):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (else what `platform` knows)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


# the vector extensions CPU kernels dispatch on (the rest of /proc/cpuinfo's flags do not change speed)
KERNEL_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                "amx_bf16", "amx_int8", "amx_tile", "avx_vnni", "asimd", "sve", "bf16", "i8mm")


def cpu_features() -> str:
    """The kernel-relevant flags this CPU reports, e.g. "avx2,avx512_bf16,avx512f,fma" ("" if unknown)."""
    flags = set((_cpuinfo("flags", "Features") or "").split())
    return ",".join(sorted(flags.intersection(KERNEL_FLAGS)))


def physical_cores() -> int:
    """Distinct (package, core) pairs in /proc/cpuinfo, limited to the CPUs this process may use."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        cores, package, core = set(), None, None
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    package = value.strip()
                elif key == "core id":
                    core = value.strip()
                elif not key and core is not None:  # blank line ends one logical CPU
                    cores.add((package, core))
                    package = core = None
        if core is not None:
            cores.add((package, core))
        return max(1, min(len(cores) or allowed, allowed))
    except OSError:
        return max(1, allowed)


def set_threads(n: int | None = None) -> int:
    """torch.set_num_threads(n or physical cores); returns the number set."""
    n = n or physical_cores()
    torch.set_num_threads(n)
    return n
