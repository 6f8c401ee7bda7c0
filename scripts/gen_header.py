#!/usr/bin/env python3
"""Writes include/tesseraq.h, the C header of libtesseraq, from its two sources of truth:

- the Swift declarations in Sources/TesseraQC: every `@c public func` with its `///` comment, the
  `//!` section text at the top of each file (title line, then prose), the handle typealiases
  (TQModelHandle -> tq_model, ...) and the callback typealiases; the status codes and their
  comments from TQError.Kind, the version from Runtime.version;
- the header the Swift compiler emits for the same module (TesseraQC-Swift.h in the build folder),
  which gives every parameter's C type as the compiler lowered it. Handles and callbacks are
  substituted only where the compiler's type is the matching void pointer or function pointer, so
  the result cannot drift from the ABI the library really has.

    python3 scripts/gen_header.py [--build DIR] [--check]

DIR is a SwiftPM build folder (default .build/debug); --check compares instead of writing and exits 1
when include/tesseraq.h is stale. Tests run --check (bindings/python/tests/test_header.py).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SWIFT_DIR = ROOT / "Sources" / "TesseraQC"
HEADER = ROOT / "include" / "tesseraq.h"
# Sections of the header, in order: one Swift file each.
SECTION_FILES = ["Status.swift", "ModelAPI.swift", "QuantizeAPI.swift", "PackedAPI.swift", "TokenizerAPI.swift",
                 "SessionAPI.swift", "SamplerAPI.swift", "GenerationAPI.swift"]
HANDLES = {"TQModelHandle": "tq_model", "TQPackedHandle": "tq_packed", "TQTokenizerHandle": "tq_tokenizer",
           "TQSessionHandle": "tq_session", "TQSamplerHandle": "tq_sampler", "TQTextStreamHandle": "tq_text_stream"}
CALLBACKS = {"TQProgressCallback": "tq_progress_fn", "TQQuantProgressCallback": "tq_quant_progress_fn"}


class GenerationError(Exception):
    pass


def split_top(text: str, sep: str = ",") -> list[str]:
    """Splits at `sep` outside (), <> and []."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "(<[":
            depth += 1
        elif ch in ")>]":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts]


def doc_text(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        text = line.replace("`", "")
        if any(ord(c) > 126 for c in text):
            raise GenerationError(f"non-ASCII character in a doc comment: {line!r}")
        out.append(text.rstrip())
    return out


def closing_paren(text: str, open_at: int) -> int:
    depth = 0
    for i in range(open_at, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise GenerationError("unbalanced parentheses")


def swift_functions(path: Path) -> tuple[list[str], list[dict]]:
    """The `//!` section lines and the @c functions (name, doc, params [(name, swift type)]) of a file."""
    text = path.read_text()
    section = [l[3:].strip() if len(l) > 3 else "" for l in text.splitlines() if l.startswith("//!")]
    funcs = []
    for m in re.finditer(r"@c public func (\w+)\(", text):
        close = closing_paren(text, m.end() - 1)
        params = []
        for p in split_top(text[m.end():close]):
            pm = re.fullmatch(r"_ (\w+): (.+)", p, re.S)
            if not pm:
                raise GenerationError(f"{m.group(1)}: parameter {p!r} is not of the form `_ name: Type`")
            params.append((pm.group(1), " ".join(pm.group(2).split())))
        before = text[: m.start()].splitlines()
        doc = []
        while before and before[-1].strip().startswith("///"):
            doc.insert(0, re.sub(r"^\s*/// ?", "", before.pop()))
        if not doc:
            raise GenerationError(f"{m.group(1)} has no /// comment")
        funcs.append({"name": m.group(1), "doc": doc_text(doc), "params": params})
    return doc_text(section), funcs


def swift_callbacks() -> dict[str, list[str]]:
    """Parameter names of each callback typealias."""
    out = {}
    for path in SWIFT_DIR.glob("*.swift"):
        for m in re.finditer(r"public typealias (\w+) = @convention\(c\) \((.*?)\) -> ", path.read_text(), re.S):
            out[m.group(1)] = [re.match(r"_ (\w+):", p).group(1) for p in split_top(m.group(2))]
    return out


def status_codes() -> list[tuple[str, int, str]]:
    """(C name, value, comment) of TQError.Kind, from its source."""
    text = (ROOT / "Sources" / "TesseraQ" / "Support" / "TQError.swift").read_text()
    cases = re.findall(r"/// (.+)\n\s*case `?(\w+)`? = (-\d+)", text)
    names = dict(re.findall(r'case \.(\w+): "(TQ_\w+)"', text))
    if not cases or set(names) != {c[1] for c in cases}:
        raise GenerationError("TQError.Kind: every case needs a /// comment, a raw value and a cName")
    return [(names[c], int(v), doc) for doc, c, v in cases]


def version() -> tuple[int, int, int]:
    text = (ROOT / "Sources" / "TesseraQ" / "Support" / "Runtime.swift").read_text()
    m = re.search(r'static let version = "(\d+)\.(\d+)\.(\d+)"', text)
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def normalize_c_type(t: str) -> str:
    t = re.sub(r"\b_Nullable\b|\b_Nonnull\b|\b_Null_unspecified\b", "", t)
    t = " ".join(t.replace("*", " * ").split())
    t = re.sub(r"(\w+) const \*", r"const \1 *", t)
    return t.replace("* *", "**").replace("* const", "*const")


def compiler_signatures(swift_header: Path) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """name -> (return type, [(C type, parameter name)]) from the compiler's header."""
    sigs = {}
    for line in swift_header.read_text().splitlines():
        m = re.match(r"SWIFT_EXTERN (.+?)\b(tq_\w+)\((.*)\) SWIFT_NOEXCEPT", line)
        if not m:
            continue
        params = []
        for p in split_top(m.group(3)):
            if p == "void":
                continue
            fn = re.fullmatch(r"(.+)\(\s*\*\s*(?:_Nullable|_Nonnull)?\s*(\w+)\)\((.*)\)", p)
            if fn:  # a function pointer: (return, name, argument types)
                args = [normalize_c_type(a) for a in split_top(fn.group(3))]
                params.append((f"{normalize_c_type(fn.group(1))} (*)({', '.join(args)})", fn.group(2)))
            else:
                pm = re.fullmatch(r"(.+?)\s*\b(\w+)", p)
                params.append((normalize_c_type(pm.group(1)), pm.group(2)))
        sigs[m.group(2)] = (normalize_c_type(m.group(1)), params)
    return sigs


def declaration(fn: dict, compiled: tuple[str, list[tuple[str, str]]], callbacks: dict[str, str]) -> str:
    ret, cparams = compiled
    if len(cparams) != len(fn["params"]):
        raise GenerationError(f"{fn['name']}: {len(fn['params'])} Swift parameters, {len(cparams)} in the compiled header")
    out = []
    for (name, swift_type), (ctype, cname) in zip(fn["params"], cparams):
        if name != cname.rstrip("_"):
            raise GenerationError(f"{fn['name']}: parameter {name} is {cname} in the compiled header")
        for alias, handle in HANDLES.items():
            if swift_type == f"{alias}?":
                if ctype != "void *":
                    raise GenerationError(f"{fn['name']}.{name}: {alias} compiled to {ctype}, not void *")
                ctype = f"{handle} *"
            elif swift_type == f"UnsafeMutablePointer<{alias}?>?":
                if ctype != "void **":
                    raise GenerationError(f"{fn['name']}.{name}: {alias} out-pointer compiled to {ctype}, not void **")
                ctype = f"{handle} **"
        for alias, typedef in CALLBACKS.items():
            if swift_type == f"{alias}?":
                if ctype != callbacks[typedef]:
                    raise GenerationError(f"{fn['name']}.{name}: {alias} compiled to {ctype}, not {callbacks[typedef]}")
                ctype = typedef
        if "void *" in ctype and swift_type.startswith("OpaquePointer"):
            raise GenerationError(f"{fn['name']}.{name}: an untyped handle (use a TQ*Handle typealias)")
        out.append(ctype + ("" if ctype.endswith("*") else " ") + name)
    head = f"{ret}{'' if ret.endswith('*') else ' '}{fn['name']}("
    doc = "\n".join(f" * {l}".rstrip() for l in fn["doc"])
    return f"/*\n{doc}\n */\n{wrap(head, out or ['void'])});\n"


def wrap(head: str, args: list[str], width: int = 100) -> str:
    """head + args joined by ", ", continued under the opening parenthesis past `width` columns."""
    lines, cur = [], head
    for i, a in enumerate(args):
        piece = a + ("," if i < len(args) - 1 else "")
        if cur.strip() and len(cur) + len(piece) + 2 > width and cur != head:
            lines.append(cur.rstrip())
            cur = " " * len(head)
        cur += piece + " "
    return "\n".join(lines + [cur.rstrip()])


def render(swift_header: Path) -> str:
    compiled = compiler_signatures(swift_header)
    names = swift_callbacks()
    parsed = {f: swift_functions(SWIFT_DIR / f) for f in SECTION_FILES}
    # The callback typedefs: parameter types from the compiler (through a function that takes one),
    # names from Swift.
    callback_types, typedefs = {}, []
    for alias, typedef in CALLBACKS.items():
        users = [(fn["name"], i) for _, funcs in parsed.values() for fn in funcs
                 for i, (_, t) in enumerate(fn["params"]) if t == f"{alias}?"]
        if not users:
            raise GenerationError(f"{alias} is not used by any function")
        fname, index = users[0]
        ctype = compiled[fname][1][index][0]
        callback_types[typedef] = ctype
        m = re.fullmatch(r"(.+) \(\*\)\((.*)\)", ctype)
        args = [a + ("" if a.endswith("*") else " ") + n for a, n in zip(split_top(m.group(2)), names[alias])]
        typedefs.append(wrap(f"typedef {m.group(1)} (*{typedef})(", args) + ");")
    major, minor, patch = version()
    statuses = "\n".join([f"    TQ_OK = 0, /* success */"] +
                         [f"    {n} = {v}, /* {d} */" for n, v, d in status_codes()])
    sections, declared = [], set()
    for f, (section, funcs) in parsed.items():
        if not section:
            raise GenerationError(f"{f} has no //! section title")
        title, prose = section[0], section[1:]
        body = "\n".join(f" * {l}".rstrip() for l in prose)
        part = [f"/* ---------------------------------------------------------------------------------------\n"
                f" * {title}\n" + (f" *\n{body}\n" if prose else "") +
                " * ------------------------------------------------------------------------------------- */\n"]
        for fn in funcs:
            if fn["name"] not in compiled:
                raise GenerationError(f"{fn['name']} is not in {swift_header} (rebuild first)")
            part.append(declaration(fn, compiled[fn["name"]], callback_types))
            declared.add(fn["name"])
        sections.append("\n".join(part))
    missing = set(compiled) - declared
    if missing:
        raise GenerationError(f"functions outside the section files: {sorted(missing)}")
    return f"""/*
 * tesseraq.h: the C API of libtesseraq, ultra-low-bit (2/3/4-bit) post-training quantization of
 * LLaMA-family models with TesseraQ.
 *
 * Generated by scripts/gen_header.py from the @c functions of Sources/TesseraQC and the header the
 * Swift compiler emits for them. Do not edit; a test fails when this file is stale.
 *
 * Conventions (SQLite style): functions return an int32_t status, TQ_OK or a negative tq_status;
 * results come back through out-pointers; objects are opaque typed handles with an open and a
 * free function, and every free function accepts NULL. Every handle is checked on every call: a
 * handle of another type, a freed one or a stray pointer gives TQ_ERR_INVALID_ARGUMENT (a freed
 * handle is detected until a newer handle happens to get its address).
 *
 * ABI stability: within one major version (the SONAME libtesseraq.so.{major}) functions, types,
 * status values and callback signatures are only added, never changed or removed; a minor version
 * may add functions, status codes and configuration keys; a patch changes no interface.
 */
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

#define TQ_VERSION_MAJOR {major}
#define TQ_VERSION_MINOR {minor}
#define TQ_VERSION_PATCH {patch}
#define TQ_VERSION "{major}.{minor}.{patch}"
#define TQ_VERSION_NUMBER {major * 1000000 + minor * 1000 + patch}

/* Status codes: TQ_OK or a negative value; tq_status_name() gives the name. */
typedef enum tq_status {{
{statuses}
}} tq_status;

/* Opaque handles. */
typedef struct tq_model tq_model;         /* a checkpoint opened with tq_model_open */
typedef struct tq_packed tq_packed;       /* the packed tensors of a GPTQ checkpoint, tq_packed_open */
typedef struct tq_tokenizer tq_tokenizer; /* a tokenizer.json, tq_tokenizer_open */
typedef struct tq_session tq_session;     /* a decoding session (KV cache) over a model, tq_session_open */
typedef struct tq_sampler tq_sampler;     /* a token sampler, tq_sampler_open */
typedef struct tq_text_stream tq_text_stream; /* generated ids to text pieces, tq_text_stream_open */

/* Progress callbacks: return non-zero to cancel the job (TQ_ERR_CANCELLED). */
{chr(10).join(typedefs)}

{chr(10).join(sections)}
#ifdef __cplusplus
}}
#endif
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=str(ROOT / ".build" / "debug"), help="SwiftPM build folder")
    ap.add_argument("--check", action="store_true", help="fail when include/tesseraq.h is stale")
    args = ap.parse_args()
    swift_header = Path(args.build) / "TesseraQC.build" / "include" / "TesseraQC-Swift.h"
    if not swift_header.is_file():
        print(f"error: {swift_header} not found: build first (swift build)", file=sys.stderr)
        return 2
    try:
        text = render(swift_header)
    except GenerationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        if not HEADER.is_file() or HEADER.read_text() != text:
            print(f"error: {HEADER} is stale: run python3 scripts/gen_header.py", file=sys.stderr)
            return 1
        return 0
    HEADER.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
