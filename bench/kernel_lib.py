"""Builds the C kernels (Sources/TQKernels) into a throwaway shared library with visible
symbols, so benchmarks can call tqk_* directly through ctypes. Same flags as Package.swift."""
import ctypes
import glob
import os
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OMP_INCLUDE = "/usr/lib/llvm-14/lib/clang/14.0.6/include"


def build_kernels(extra_sources=()) -> ctypes.CDLL:
    """extra_sources: more C files (relative to bench/) built into the same library."""
    cc = os.environ.get("CC", "/opt/swift/usr/bin/clang" if os.path.exists("/opt/swift/usr/bin/clang") else "clang")
    out = os.path.join(tempfile.mkdtemp(prefix="tqk-bench-"), "libtqk_bench.so")
    sources = sorted(glob.glob(os.path.join(ROOT, "Sources/TQKernels/*.c")))
    sources += [os.path.join(ROOT, "bench", s) for s in extra_sources]
    cmd = [cc, "-shared", "-fPIC", "-O3", "-fopenmp", "-mavx2", "-mfma", "-mf16c", "-DTQK_API=",
           "-idirafter", OMP_INCLUDE, "-I", os.path.join(ROOT, "Sources/TQKernels/include"),
           *sources, "-o", out, "-L/usr/lib/llvm-14/lib", "-Wl,-rpath,/usr/lib/llvm-14/lib", "-lm"]
    subprocess.run(cmd, check=True)
    return ctypes.CDLL(out)
