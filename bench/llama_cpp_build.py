"""llama.cpp for bench/generate_bench.py: built once from the `llama-cpp-python` source distribution
on PyPI (which vendors llama.cpp under vendor/llama.cpp), cached outside the repository, and the
GGUF files of a Hugging Face checkpoint (F32 through the vendored convert_hf_to_gguf.py, then
llama-quantize to Q8_0, Q4_0, Q2_K ...).

    python3 bench/llama_cpp_build.py [--cache DIR] [--version X.Y.Z] [--jobs 2]      # build only
    python3 bench/llama_cpp_build.py --hf-model DIR --gguf-dir OUT [--types Q8_0,Q4_0,Q2_K]

Cache layout (default ~/.cache/tesseraq/llama.cpp, or $TESSERAQ_LLAMA_CPP_CACHE, or --cache):
    sdist/llama_cpp_python-<v>.tar.gz    pip download --no-deps --no-binary llama-cpp-python
    src-<v>/                             its vendor/llama.cpp, extracted (nothing else)
    build-<v>/bin/llama-bench, llama-quantize
    build-<v>/tesseraq-build.json        version, cmake flags, compiler, CPU flags, build time

Every step is skipped when its output exists, so a second run costs nothing. The build is
`cmake -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF` (tests, examples, server off,
static libraries) and only the targets llama-bench and llama-quantize, under `nice -n 5` with
`-j 2` by default (the benchmark machine has 2 cores shared with other jobs). Needs cmake (`pip
install cmake` is enough), a C/C++ compiler and make.

Conversion runs the vendored convert_hf_to_gguf.py with the vendored gguf-py first on sys.path (so
the converter and its gguf package are of the same llama.cpp commit, whatever `gguf` pip has
installed). It imports torch, transformers (AutoTokenizer, for the BPE vocabulary), numpy,
sentencepiece, safetensors: install them once (torch's CPU wheel is enough).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

PACKAGE = "llama-cpp-python"
TARGETS = ("llama-bench", "llama-quantize")
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
)


def log(msg: str) -> None:
    print(f"[llama.cpp] {msg}", file=sys.stderr, flush=True)


def default_cache() -> Path:
    env = os.environ.get("TESSERAQ_LLAMA_CPP_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/tesseraq/llama.cpp").expanduser()


def run(cmd: Sequence[str], nice: int = 0, **kw) -> None:
    cmd = [str(c) for c in cmd]
    if nice and shutil.which("nice"):
        cmd = ["nice", "-n", str(nice)] + cmd
    log("running: " + " ".join(cmd))
    subprocess.run(cmd, check=True, **kw)


def _sdist_version(path: Path) -> str:
    m = re.match(r"llama_cpp_python-(.+)\.tar\.gz$", path.name)
    if not m:
        raise ValueError(f"not a llama-cpp-python sdist: {path}")
    return m.group(1)


def _version_key(v: str):
    return tuple(int(x) if x.isdigit() else x for x in re.split(r"[.\-]", v))


def ensure_sdist(cache: Path, version: Optional[str] = None) -> Path:
    """The sdist in cache/sdist (downloaded with pip when absent). Without a version, the newest
    one already cached is used; pip is asked only when none is."""
    sdir = cache / "sdist"
    have = sorted(sdir.glob("llama_cpp_python-*.tar.gz"), key=lambda p: _version_key(_sdist_version(p)))
    if version:
        have = [p for p in have if _sdist_version(p) == version]
    if have:
        return have[-1]
    sdir.mkdir(parents=True, exist_ok=True)
    req = f"{PACKAGE}=={version}" if version else PACKAGE
    # --no-binary for this package only: `--no-binary :all:` would also build pip's build
    # dependencies (scikit-build-core, cmake itself) from source just to read the metadata.
    run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", PACKAGE,
         "--disable-pip-version-check", req, "-d", sdir])
    have = sorted(sdir.glob("llama_cpp_python-*.tar.gz"), key=lambda p: _version_key(_sdist_version(p)))
    if version:
        have = [p for p in have if _sdist_version(p) == version]
    if not have:
        raise RuntimeError(f"pip download left no llama_cpp_python-*.tar.gz in {sdir}")
    return have[-1]


def ensure_source(cache: Path, sdist: Path) -> Path:
    """vendor/llama.cpp of the sdist, extracted once into cache/src-<version>; returns its path."""
    version = _sdist_version(sdist)
    dest = cache / f"src-{version}"
    if (dest / "CMakeLists.txt").is_file() and (dest / "convert_hf_to_gguf.py").is_file():
        return dest
    tmp = cache / f"src-{version}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    log(f"extracting {prefix} of {sdist.name} into {dest}")
    with tarfile.open(sdist) as tf:
        members = []
        for m in tf.getmembers():
            if not m.name.startswith(prefix) or m.name == prefix:
                continue
            rel = m.name[len(prefix):]
            if rel.startswith("/") or ".." in Path(rel).parts or m.issym() or m.islnk():
                continue  # nothing outside the destination, no links
            m.name = rel
            members.append(m)
        tf.extractall(tmp, members=members)
    # PKG-INFO: keeps the package version next to the source
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def binaries(build: Path) -> Dict[str, Path]:
    return {t: build / "bin" / t for t in TARGETS}


def cpu_flags() -> List[str]:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                fl = line.split(":", 1)[1].split()
                keep = ("avx", "fma", "f16c", "sse4", "amx", "bmi2")
                return sorted(f for f in fl if f.startswith(keep))
    except OSError:
        pass
    return []


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def vendored_commit(src: Path) -> Optional[str]:
    """The llama.cpp build number/commit recorded in the vendored tree, when any (the sdist has no .git)."""
    for cand in ("common/build-info.cpp", "build-info.h"):
        p = src / cand
        if p.is_file():
            m = re.search(r'LLAMA_COMMIT\s*=\s*"([^"]+)"', p.read_text(errors="replace"))
            if m and m.group(1) != "unknown":
                return m.group(1)
    return None


def changelog_commit(sdist: Path) -> Optional[str]:
    """The llama.cpp commit the sdist's CHANGELOG.md names for its own version ("update llama.cpp to
    ggml-org/llama.cpp@<hash>" under "## [<version>]"): the vendored tree has no .git, so llama.cpp's
    own build info says "unknown"."""
    version = _sdist_version(sdist)
    try:
        with tarfile.open(sdist) as tf:
            f = tf.extractfile(f"llama_cpp_python-{version}/CHANGELOG.md")
            text = f.read().decode("utf-8", "replace") if f else ""
    except (OSError, KeyError, tarfile.TarError):
        return None
    m = re.search(r"^## \[" + re.escape(version) + r"\](.*?)(?=^## \[|\Z)", text, re.M | re.S)
    if not m:
        return None
    c = re.search(r"llama\.cpp@([0-9a-f]{7,40})", m.group(1))
    return c.group(1) if c else None


def ensure_llama_cpp(cache: Optional[Path] = None, version: Optional[str] = None, jobs: int = 2,
                     nice: int = 5) -> Dict[str, object]:
    """Downloads, extracts and builds once; returns {"bin": {target: path}, "src": path,
    "version": sdist version, "info": build info dict}."""
    cache = Path(cache).expanduser() if cache else default_cache()
    cache.mkdir(parents=True, exist_ok=True)
    # a build already in the cache is enough, even without the sdist or network
    if version is None:
        builds = sorted((p for p in cache.glob("build-*") if all(b.is_file() for b in binaries(p).values())),
                        key=lambda p: _version_key(p.name[len("build-"):]))
        if builds:
            b = builds[-1]
            v = b.name[len("build-"):]
            src = cache / f"src-{v}"
            return {"bin": binaries(b), "src": src, "version": v, "info": _read_info(b, cache)}
    sdist = ensure_sdist(cache, version)
    v = _sdist_version(sdist)
    src = ensure_source(cache, sdist)
    build = cache / f"build-{v}"
    bins = binaries(build)
    if not all(b.is_file() for b in bins.values()):
        if not shutil.which("cmake"):
            raise RuntimeError("cmake not found: `python3 -m pip install cmake` (or apt-get install cmake)")
        t0 = time.time()
        run(["cmake", "-S", src, "-B", build, *CMAKE_FLAGS], nice=nice)
        run(["cmake", "--build", build, "--config", "Release", "-j", str(jobs), "--target", *TARGETS], nice=nice)
        missing = [str(b) for b in bins.values() if not b.is_file()]
        if missing:
            raise RuntimeError("build finished without " + ", ".join(missing))
        info = {
            "llama_cpp_python_version": v,
            "sdist": sdist.name,
            "llama_cpp_commit": vendored_commit(src) or changelog_commit(sdist),
            "cmake_flags": list(CMAKE_FLAGS),
            "targets": list(TARGETS),
            "jobs": jobs,
            "build_seconds": round(time.time() - t0, 1),
            "compiler": _compiler(build),
            "cpu": cpu_model(),
            "cpu_flags": cpu_flags(),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (build / "tesseraq-build.json").write_text(json.dumps(info, indent=1) + "\n")
        log(f"built {', '.join(TARGETS)} in {info['build_seconds']} s: {build / 'bin'}")
    return {"bin": bins, "src": src, "version": v, "info": _read_info(build, cache)}


def _compiler(build: Path) -> Optional[str]:
    cache_txt = build / "CMakeCache.txt"
    if cache_txt.is_file():
        m = re.search(r"^CMAKE_CXX_COMPILER:\w+=(.*)$", cache_txt.read_text(errors="replace"), re.M)
        if m:
            try:
                out = subprocess.run([m.group(1), "--version"], capture_output=True, text=True).stdout
                return out.splitlines()[0] if out else m.group(1)
            except OSError:
                return m.group(1)
    return None


def _read_info(build: Path, cache: Optional[Path] = None) -> Dict[str, object]:
    p = build / "tesseraq-build.json"
    try:
        info = json.loads(p.read_text())
    except (OSError, ValueError):
        return {}
    if not info.get("llama_cpp_commit") and cache is not None and info.get("sdist"):
        sd = cache / "sdist" / str(info["sdist"])
        if sd.is_file():
            info["llama_cpp_commit"] = changelog_commit(sd)
            if info["llama_cpp_commit"]:
                p.write_text(json.dumps(info, indent=1) + "\n")
    return info


# ---------------------------------------------------------------------------------------------
# GGUF files
# ---------------------------------------------------------------------------------------------

def convert_hf(src: Path, hf_model: Path, out: Path, outtype: str = "f32") -> Path:
    """The vendored convert_hf_to_gguf.py with the vendored gguf-py; skipped when `out` exists."""
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(src / "gguf-py")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("NO_LOCAL_GGUF", "")  # the converter prefers ./gguf-py next to itself anyway
    run([sys.executable, src / "convert_hf_to_gguf.py", hf_model, "--outtype", outtype, "--outfile", tmp], env=env)
    tmp.rename(out)
    return out


def quantize_gguf(llama_quantize: Path, f32: Path, out: Path, qtype: str, threads: int = 2, nice: int = 5) -> Path:
    """llama-quantize f32 -> qtype; skipped when `out` exists."""
    if out.is_file():
        return out
    tmp = out.with_name(out.name + ".partial")
    run([llama_quantize, f32, tmp, qtype, str(threads)], nice=nice)
    tmp.rename(out)
    return out


def ensure_ggufs(llama: Dict[str, object], hf_model: Path, gguf_dir: Path, name: str,
                 types: Sequence[str] = ("Q8_0", "Q4_0", "Q2_K"), threads: int = 2) -> Dict[str, Path]:
    """{"F32": path, "Q8_0": path, ...} of `name` in gguf_dir, made when missing."""
    gguf_dir.mkdir(parents=True, exist_ok=True)
    f32 = convert_hf(Path(llama["src"]), hf_model, gguf_dir / f"{name}-F32.gguf", "f32")
    out = {"F32": f32}
    for t in types:
        out[t] = quantize_gguf(Path(llama["bin"]["llama-quantize"]), f32, gguf_dir / f"{name}-{t}.gguf", t, threads)
    return out


def gguf_tensor_types(src: Path, gguf_file: Path) -> Optional[Dict[str, int]]:
    """{type name: count} of the 2-D tensors of a GGUF file, read with the vendored gguf-py (None when
    it cannot be read). Shows what llama-quantize really wrote (k-quants fall back to Q4_0 / Q8_0 on
    rows that are not a multiple of 256)."""
    path = str(Path(src) / "gguf-py")
    added = path not in sys.path
    if added:
        sys.path.insert(0, path)
    try:
        import gguf  # noqa: WPS433
        reader = gguf.GGUFReader(str(gguf_file))
        counts: Dict[str, int] = {}
        for t in reader.tensors:
            if len(t.shape) >= 2:
                counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))
    except Exception:
        return None
    finally:
        if added:
            sys.path.remove(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=None, help="cache folder (default ~/.cache/tesseraq/llama.cpp)")
    ap.add_argument("--version", default=None, help="llama-cpp-python version (default: newest cached, else newest on PyPI)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--hf-model", type=Path, default=None, help="also convert this Hugging Face dir to GGUF")
    ap.add_argument("--gguf-dir", type=Path, default=None)
    ap.add_argument("--name", default="SmolLM2-135M-Instruct")
    ap.add_argument("--types", default="Q8_0,Q4_0,Q2_K")
    ap.add_argument("--threads", type=int, default=2, help="llama-quantize threads")
    a = ap.parse_args(argv)
    llama = ensure_llama_cpp(a.cache, a.version, a.jobs)
    print(json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in llama.items() if k != "bin"}
                     | {"bin": {k: str(v) for k, v in llama["bin"].items()}}, indent=1))
    if a.hf_model:
        gd = a.gguf_dir or (Path(llama["src"]).parent / "gguf")
        files = ensure_ggufs(llama, a.hf_model, gd, a.name, [t for t in a.types.split(",") if t], a.threads)
        for k, v in files.items():
            print(f"{k}\t{v}\t{v.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
