"""Pinned CPU numerics: the same floating-point kernels, so the same bits, on any x86 machine.

torch picks its CPU kernels by the instruction sets it finds: ATen's vectorised kernels
(softmax, norms, reductions, element-wise ops) by ``ATEN_CPU_CAPABILITY`` (default, avx2,
avx512), MKL's GEMMs by its own dispatcher (AVX2, AVX-512, AMX on Intel), oneDNN by its ISA
limit. Each choice rounds differently, and a few hundred training steps amplify one rounding
into another organism. NumPy dispatches too: on AVX-512 CPUs its ``log1p``, ``expm1``, ``log2``
and other transcendental functions run Intel's SVML, elsewhere the C library's, and the two differ
in the last bits (the LVS mean of the default experiment differed by one ulp between an AVX-512
machine and an AVX2 one). Pinning all four to AVX2 (which every x86-64 CPU of the last decade
runs) makes a CPU job's results a function of the config; threads are fixed per rule.

MKL needs one more step. It honours ``MKL_CBWR``'s ISA branches only where it finds an Intel CPU:
elsewhere it runs its AUTO branch (still in reproducible mode), whose GEMMs round differently
(Intel's oneMKL guide, "Getting Started with Conditional Numerical Reproducibility"; the organism's
20+10-step proxy had one digest on every AMD EPYC measured and another on an Intel Xeon). Its
vendor test is two exported functions of the MKL that torch links, ``mkl_serv_intel_cpu_true`` and
``mkl_serv_intel_cpu``, called through the dynamic linker. A two-line C library that defines them to
answer "Intel" (``MKL_INTEL_DISPATCH_SOURCE``, compiled once with the system's C compiler and loaded
before torch, in this process with ``RTLD_GLOBAL`` and in every child through ``LD_PRELOAD``) makes MKL
run the pinned ``AVX2,STRICT`` branch on every x86 CPU: on an AMD EPYC the proxy then gives the digest
written on the Xeon, bit for bit (docs/reproducibility.md). STRICT, because without it the AVX2
branch's bits depend on the thread count once a process has changed it (measured on the Xeon).

The pins must be in the environment before torch and numpy load: the workflow sets them once, when the
Snakefile is read (rules/common.smk), so every job process, local or SLURM, starts with them;
the test suite sets them in conftest.py. This module never imports torch itself. Off x86-64 nothing
is pinned (``kernel_pins_apply``): the pins name x86 kernels, which other CPUs' torch and NumPy ignore.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .user_cache import cache_dir


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


MKL_INTEL_DISPATCH_SOURCE = """\
/* latentaudit: MKL's vendor test answers "Intel", so MKL_CBWR's AVX2 branch runs on every x86 CPU
   (latentaudit/numerics.py). */
int mkl_serv_intel_cpu_true(void) { return 1; }
int mkl_serv_intel_cpu(void) { return 1; }
"""
MKL_INTEL_DISPATCH_NAME = "latentaudit-mkl-intel-dispatch"


def kernel_pins_apply() -> bool:
    """Whether ``PINNED_KERNELS`` name this CPU's kernels: x86-64's instruction-set levels. Elsewhere
    (aarch64: Graviton, Apple silicon) torch and NumPy choose among other kernels and ignore these
    names (torch with a warning in every process), so nothing is pinned there and the results are
    the machine's own, not the committed fingerprints'."""
    return platform.machine() in ("x86_64", "AMD64")


def mkl_intel_dispatch_applies() -> bool:
    """Whether this machine's torch can carry MKL (x86-64 Linux): elsewhere there is no MKL to pin."""
    return sys.platform == "linux" and kernel_pins_apply()


def mkl_intel_dispatch_library(cache: Path | None = None) -> Path:
    """The compiled library that makes MKL's vendor test answer "Intel": built once per source text
    with the system's C compiler (``$CC``, else ``cc`` or ``gcc``) into ``cache`` (default: the project's
    cache, ``user_cache.cache_dir``), atomically, so concurrent jobs may build it at once."""
    if cache is None:
        cache = cache_dir()
    tag = hashlib.sha256(MKL_INTEL_DISPATCH_SOURCE.encode()).hexdigest()[:12]
    library = cache / f"{MKL_INTEL_DISPATCH_NAME}-{tag}.so"
    if library.exists():
        return library
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    hint = ("the pinned CPU numerics need a C compiler to build a two-line library for MKL (e.g. apt-get install "
            "gcc, or set CC); or run with the machine's own kernels: --config pin_cpu_kernels=false")
    if not compiler:
        raise RuntimeError(f"no C compiler found ($CC, cc, gcc): {hint}")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as work:
        source, built = Path(work) / "dispatch.c", Path(work) / library.name
        source.write_text(MKL_INTEL_DISPATCH_SOURCE)
        try:
            done = subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(built), str(source)],
                                  capture_output=True, text=True)
        except OSError as error:
            raise RuntimeError(f"the C compiler {compiler!r} did not start ({error}): {hint}") from None
        if done.returncode != 0:
            raise RuntimeError(f"the C compiler {compiler!r} failed ({done.stderr.strip()[-500:]}): {hint}")
        os.replace(built, library)
    return library


def mkl_intel_dispatch_loaded() -> bool:
    """Whether this process has the library loaded (in its memory map)."""
    try:
        with open("/proc/self/maps") as maps:
            return any(MKL_INTEL_DISPATCH_NAME in line for line in maps)
    except OSError:
        return False


def load_mkl_intel_dispatch() -> None:
    """Load the library into this process (before torch, so MKL's calls resolve to it) and name it in
    ``LD_PRELOAD``, so every child process, local or SLURM, starts with it loaded."""
    library = str(mkl_intel_dispatch_library())
    ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
    others = without_mkl_intel_dispatch(dict(os.environ)).get("LD_PRELOAD", "")
    os.environ["LD_PRELOAD"] = f"{library} {others}".strip()


def without_mkl_intel_dispatch(environment: dict) -> dict:
    """``environment`` with the library taken out of ``LD_PRELOAD`` (a run on the machine's own kernels);
    the loader separates entries by spaces or colons."""
    preload = [entry for entry in re.split(r"[\s:]+", environment.get("LD_PRELOAD", ""))
               if entry and MKL_INTEL_DISPATCH_NAME not in entry]
    environment = {name: value for name, value in environment.items() if name != "LD_PRELOAD"}
    return {**environment, "LD_PRELOAD": " ".join(preload)} if preload else environment


def mkl_branch(requested: str | None, intel_dispatch: bool) -> str:
    """The MKL branch that ``MKL_CBWR`` = ``requested`` gives: the requested one (without its STRICT
    flag) where MKL's vendor test says Intel (an Intel CPU, or the dispatch library loaded), AUTO (still
    reproducible mode) elsewhere."""
    if not requested:
        return "unpinned"
    return requested.split(",")[0] if intel_dispatch else "AUTO"


# MKL's MKL_CBWR_BRANCH codes (mkl_cbwr.h)
MKL_BRANCHES = {0: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2", 9: "AVX",
                10: "AVX2", 11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1", 14: "AVX512_E1"}


def mkl_branch_in_force(torch) -> str | None:
    """The GEMM branch that the MKL linked into torch reports in force (its ``mkl_cbwr_get(MKL_CBWR_BRANCH)``,
    exported as ``mkl_serv_cbwr_get``): the measured fact behind ``mkl_branch``; None without MKL."""
    try:
        code = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so")).mkl_serv_cbwr_get(1)
    except (OSError, AttributeError):
        return None
    return MKL_BRANCHES.get(code, str(code))


PINNED_KERNELS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's vectorised kernels
    "MKL_CBWR": "AVX2,STRICT",      # MKL's conditional numerical reproducibility branch (GEMMs)
    "ONEDNN_MAX_CPU_ISA": "AVX2",   # oneDNN (mkldnn) primitives
    # NumPy's dispatch targets above AVX2 (numpy 2.4's names; read when numpy is imported)
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
}


def pin_cpu_kernels(enabled: bool = True) -> None:
    """Put the pinned kernel choices into this process's environment (inherited by every job it
    starts) and load MKL's Intel dispatch. With ``enabled`` False, or off x86-64 (``kernel_pins_apply``),
    the environment is left as the user's shell gave it."""
    if not enabled or not kernel_pins_apply():
        return
    os.environ.update(PINNED_KERNELS)
    torch = sys.modules.get("torch")
    if torch is not None and torch.backends.cpu.get_cpu_capability() != PINNED_KERNELS["ATEN_CPU_CAPABILITY"].upper():
        raise RuntimeError("torch was imported and dispatched before the CPU kernels were pinned "
                           f"(capability {torch.backends.cpu.get_cpu_capability()}); pin them first")
    if mkl_intel_dispatch_applies() and not mkl_intel_dispatch_loaded():
        if torch is not None:  # MKL's calls are bound once torch is loaded: this process would keep MKL's own branch
            raise RuntimeError("torch was imported before the CPU kernels were pinned, so MKL's Intel dispatch "
                               "cannot take effect in this process; pin them first")
        load_mkl_intel_dispatch()


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def numerics_record() -> dict:
    """What decided this process's floating-point results, for a sidecar: the CPU and its vendor, the
    kernel pins in force, whether MKL's Intel dispatch is loaded and the MKL branch in force (MKL's own
    report once torch is loaded), torch's CPU capability and thread count (when
    torch is loaded)."""
    vendor, loaded, torch = cpu_vendor(), mkl_intel_dispatch_loaded(), sys.modules.get("torch")
    branch = mkl_branch(os.environ.get("MKL_CBWR"), vendor == "GenuineIntel" or loaded)
    if torch is not None:
        branch = mkl_branch_in_force(torch) or branch
    record = {"cpu": cpu_model(), "cpu_vendor": vendor, "mkl_branch": branch, "mkl_intel_dispatch_loaded": loaded,
              "machine": platform.machine(), "pins": {name: os.environ.get(name) for name in PINNED_KERNELS},
              "pinned": kernel_pins_apply()
              and all(os.environ.get(name) == value for name, value in PINNED_KERNELS.items())
              and (branch == mkl_branch(PINNED_KERNELS["MKL_CBWR"], True) or not mkl_intel_dispatch_applies())}
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


if __name__ == "__main__":  # make setup: build MKL's Intel dispatch once, where there is MKL to pin
    if mkl_intel_dispatch_applies():
        print(f"MKL's Intel dispatch: {mkl_intel_dispatch_library()}")
