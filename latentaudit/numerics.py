"""Pinned CPU numerics: the same floating-point kernels, so the same bits, on any x86 machine of one
CPU vendor.

torch picks its CPU kernels by the instruction sets it finds: ATen's vectorised kernels
(softmax, norms, reductions, element-wise ops) by ``ATEN_CPU_CAPABILITY`` (default, avx2,
avx512), MKL's GEMMs by its own dispatcher (AVX2, AVX-512, AMX on Intel), oneDNN by its ISA
limit. Each choice rounds differently, and a few hundred training steps amplify one rounding
into another organism. NumPy dispatches too: on AVX-512 CPUs its ``log1p``, ``expm1``, ``log2``
and other transcendental functions run Intel's SVML, elsewhere the C library's, and the two differ
in the last bits (the LVS mean of the default experiment differed by one ulp between an AVX-512
machine and an AVX2 one). Pinning all four to AVX2 (which every x86-64 CPU of the last decade
runs) makes a CPU job's results a function of the config and the CPU's vendor; threads are fixed
per rule.

The vendor remains because MKL honours ``MKL_CBWR``'s ISA branches only on Intel CPUs: elsewhere it
runs its AUTO branch (still in reproducible mode: fixed cache sizes, deterministic reductions), whose
GEMMs round differently (Intel's oneMKL guide, "Getting Started with Conditional Numerical
Reproducibility"; the organism's 20+10-step proxy has one digest on every AMD EPYC measured, another
on an Intel Xeon). Only MKL's COMPATIBLE branch (SSE2) is shared across vendors, at half the speed
(the proxy 31.5 s against 15.5 s on the Xeon), so a result's sidecar records the vendor and the
branch in force, and the committed fingerprints are kept per vendor (``cpu_vendor``).

The pins must be in the environment before torch and numpy load: the workflow sets them once, when the
Snakefile is read (rules/common.smk), so every job process, local or SLURM, starts with them;
the test suite sets them in conftest.py. This module never imports torch itself.
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys


def _cpuinfo(field: str) -> str | None:
    """A field of /proc/cpuinfo's first processor (None off Linux)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_vendor() -> str:
    """The CPU's vendor id (``GenuineIntel``, ``AuthenticAMD``, ...; the machine name off x86 Linux)."""
    return _cpuinfo("vendor_id") or platform.machine()


def mkl_branch(vendor: str, requested: str | None) -> str:
    """The MKL branch that ``MKL_CBWR`` = ``requested`` gives on a CPU of ``vendor``: the requested one
    on Intel, AUTO (still reproducible mode) on every other vendor, where MKL ignores ISA branches."""
    if not requested:
        return "unpinned"
    return requested if vendor == "GenuineIntel" else "AUTO"


def mkl_pin(vendor: str) -> str:
    """``MKL_CBWR`` for a CPU of ``vendor``. On Intel the AVX2 branch in STRICT mode: without STRICT its
    GEMMs' bits depend on the thread count once a process has changed it (the organism's proxy trained
    at 1 thread and then at 2 in one process, as the test process does, gave two digests; with STRICT
    one, and no slower: 12.3 s both ways). Elsewhere MKL runs AUTO whatever the branch,
    which gave the same bits at 1 and 2 threads on every AMD EPYC measured; "AVX2" stays the pin there
    (STRICT's effect off Intel was not measured, and the committed AMD fingerprints were made without it)."""
    return "AVX2,STRICT" if vendor == "GenuineIntel" else "AVX2"


PINNED_KERNELS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's vectorised kernels
    "MKL_CBWR": mkl_pin(cpu_vendor()),  # MKL's conditional numerical reproducibility branch (GEMMs)
    "ONEDNN_MAX_CPU_ISA": "AVX2",   # oneDNN (mkldnn) primitives
    # NumPy's dispatch targets above AVX2 (numpy 2.4's names; read when numpy is imported)
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
}


def pin_cpu_kernels(enabled: bool = True) -> None:
    """Put the pinned kernel choices into this process's environment (inherited by every job it
    starts). With ``enabled`` False the environment is left as the user's shell gave it."""
    if not enabled:
        return
    os.environ.update(PINNED_KERNELS)
    torch = sys.modules.get("torch")
    if torch is not None and torch.backends.cpu.get_cpu_capability() != PINNED_KERNELS["ATEN_CPU_CAPABILITY"].upper():
        raise RuntimeError("torch was imported and dispatched before the CPU kernels were pinned "
                           f"(capability {torch.backends.cpu.get_cpu_capability()}); pin them first")


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def numerics_record() -> dict:
    """What decided this process's floating-point results, for a sidecar: the CPU and its vendor, the
    kernel pins in force and the MKL branch they give, torch's CPU capability and thread count (when
    torch is loaded)."""
    vendor = cpu_vendor()
    record = {"cpu": cpu_model(), "cpu_vendor": vendor, "mkl_branch": mkl_branch(vendor, os.environ.get("MKL_CBWR")),
              "machine": platform.machine(),
              "pins": {name: os.environ.get(name) for name in PINNED_KERNELS},
              "pinned": all(os.environ.get(name) == value for name, value in PINNED_KERNELS.items())}
    torch = sys.modules.get("torch")
    if torch is not None:
        record["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        record["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            record["cuda_device"] = torch.cuda.get_device_name()
    return record


def weights_digest(state_dict) -> str:
    """sha256 over a state dict's names, dtypes, shapes and bytes, in name order: equal digests
    mean bit-identical weights."""
    torch = sys.modules["torch"]  # the caller holds tensors, so torch is loaded
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(state_dict[name].shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())  # raw bytes, any dtype (bf16 too)
    return digest.hexdigest()
