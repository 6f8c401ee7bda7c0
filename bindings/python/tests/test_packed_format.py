"""The GPTQ packed layout, read back by a numpy unpacker written from FORMATS.md alone,
agrees bit for bit with tq_packed_dequantize / tq_packed_unpack, and the packed GEMV/GEMM
agree with the numpy dequantised matmul."""
import ctypes
import json
import os
import struct

import numpy as np
import pytest

c_void_p, c_int64, c_int32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32


def read_safetensors(path):
    """A reader written from the safetensors spec: u64 header length, JSON header, data."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    dtypes = {"I32": np.int32, "F16": np.float16, "F32": np.float32, "BF16": np.uint16}
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + b : 8 + n + end], dtype=dtypes[e["dtype"]]).reshape(e["shape"])
    return out


def unpack_along_first_axis(words, bits, n):
    """FORMATS.md: f = 32/b values per word, least significant first; for 3 bits, 32 values
    in 3 words read as one 96-bit little-endian integer. words: [rows, cols] int32."""
    w = words.astype(np.uint32).astype(object)  # exact big-integer arithmetic, no sign issues
    rows, cols = w.shape
    out = np.zeros((n, cols), dtype=np.int64)
    if bits == 3:
        for m in range(rows // 3):
            chunk = w[3 * m] | (w[3 * m + 1] << 32) | (w[3 * m + 2] << 64)
            for j in range(32):
                if 32 * m + j < n:
                    out[32 * m + j] = ((chunk >> (3 * j)) & 7).astype(np.int64)
    else:
        f = 32 // bits
        for r in range(rows):
            for k in range(f):
                if r * f + k < n:
                    out[r * f + k] = ((w[r] >> (k * bits)) & ((1 << bits) - 1)).astype(np.int64)
    return out


@pytest.fixture(scope="module")
def api(lib):
    lib.tq_model_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(c_void_p)]
    lib.tq_model_free.argtypes = [c_void_p]
    lib.tq_quantize.argtypes = [c_void_p, ctypes.c_char_p, ctypes.c_char_p, c_void_p, c_void_p]
    lib.tq_packed_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(c_void_p)]
    lib.tq_packed_free.argtypes = [c_void_p]
    lib.tq_packed_count.argtypes = [c_void_p, ctypes.POINTER(c_int64)]
    lib.tq_packed_info.argtypes = [c_void_p, c_int64, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(c_int64),
                                   ctypes.POINTER(c_int64), ctypes.POINTER(c_int32), ctypes.POINTER(c_int64), ctypes.POINTER(c_int32)]
    lib.tq_packed_unpack.argtypes = [c_void_p, c_int64, c_void_p]
    lib.tq_packed_dequantize.argtypes = [c_void_p, c_int64, c_int64, c_int64, c_void_p]
    lib.tq_packed_gemv.argtypes = [c_void_p, c_int64, c_void_p, c_void_p]
    lib.tq_packed_gemm.argtypes = [c_void_p, c_int64, c_void_p, c_int64, c_void_p]
    lib.tq_last_error.restype = ctypes.c_char_p
    return lib


def quantize(api, fixtures, out, bits, group):
    model = c_void_p()
    assert api.tq_model_open(fixtures.model("stories260K").encode(), ctypes.byref(model)) == 0
    try:
        cfg = json.dumps({"method": "rtn", "bits": bits, "group_size": group})
        assert api.tq_quantize(model, cfg.encode(), str(out).encode(), None, None) == 0, api.tq_last_error()
    finally:
        api.tq_model_free(model)


@pytest.mark.parametrize("bits,group", [(2, 32), (3, 32), (4, 64), (8, -1), (3, 48)])
def test_numpy_unpacker_agrees_bit_for_bit(api, fixtures, tmp_path, bits, group):
    out = tmp_path / "ckpt"
    quantize(api, fixtures, out, bits, group)
    cfg = json.load(open(out / "config.json"))["quantization_config"]
    assert cfg == {"quant_method": "gptq", "bits": bits, "group_size": group, "desc_act": False, "sym": False,
                   "checkpoint_format": "gptq_v2", "pack_dtype": "int32"}
    tensors = read_safetensors(str(out / "model.safetensors"))

    ckpt = c_void_p()
    assert api.tq_packed_open(str(out).encode(), ctypes.byref(ckpt)) == 0, api.tq_last_error()
    try:
        count = c_int64()
        assert api.tq_packed_count(ckpt, ctypes.byref(count)) == 0
        assert count.value == 35
        rng = np.random.default_rng(bits)
        for i in range(count.value):
            name, o, n, b, g, sym = ctypes.c_char_p(), c_int64(), c_int64(), c_int32(), c_int64(), c_int32()
            assert api.tq_packed_info(ckpt, i, ctypes.byref(name), ctypes.byref(o), ctypes.byref(n), ctypes.byref(b),
                                      ctypes.byref(g), ctypes.byref(sym)) == 0
            prefix, out_f, in_f = name.value.decode(), o.value, n.value
            assert (b.value, g.value, sym.value) == (bits, group, 0)
            qweight, qzeros = tensors[prefix + ".qweight"], tensors[prefix + ".qzeros"]
            scales, g_idx = tensors[prefix + ".scales"], tensors[prefix + ".g_idx"]
            assert qweight.shape[1] == out_f and g_idx.shape == (in_f,)
            gs = in_f if group == -1 else group
            np.testing.assert_array_equal(g_idx, np.arange(in_f) // gs)

            codes = unpack_along_first_axis(qweight, bits, in_f)               # [in, out]
            zeros = unpack_along_first_axis(qzeros.T, bits, out_f).T           # [groups, out]
            w_ref = ((codes - zeros[g_idx]).astype(np.float32) * scales[g_idx].astype(np.float32)).T  # [out, in]

            lib_codes = np.zeros((out_f, in_f), dtype=np.uint8)
            assert api.tq_packed_unpack(ckpt, i, lib_codes.ctypes.data) == 0
            np.testing.assert_array_equal(lib_codes, codes.T)
            w = np.zeros((out_f, in_f), dtype=np.float32)
            assert api.tq_packed_dequantize(ckpt, i, 0, out_f, w.ctypes.data) == 0
            assert np.array_equal(w.view(np.uint32), w_ref.view(np.uint32)), prefix
            part = np.zeros((3, in_f), dtype=np.float32)
            assert api.tq_packed_dequantize(ckpt, i, 1, 4, part.ctypes.data) == 0
            np.testing.assert_array_equal(part, w_ref[1:4])

            x = rng.standard_normal(in_f).astype(np.float32)
            y = np.zeros(out_f, dtype=np.float32)
            assert api.tq_packed_gemv(ckpt, i, x.ctypes.data, y.ctypes.data) == 0
            ref = w_ref.astype(np.float64) @ x.astype(np.float64)
            np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
            X = rng.standard_normal((5, in_f)).astype(np.float32)
            Y = np.zeros((5, out_f), dtype=np.float32)
            assert api.tq_packed_gemm(ckpt, i, X.ctypes.data, 5, Y.ctypes.data) == 0
            ref = X.astype(np.float64) @ w_ref.T.astype(np.float64)
            np.testing.assert_allclose(Y, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    finally:
        api.tq_packed_free(ckpt)


def test_bad_arguments_are_rejected(api, fixtures, tmp_path):
    out = tmp_path / "ckpt"
    quantize(api, fixtures, out, 4, 32)
    ckpt = c_void_p()
    assert api.tq_packed_open(str(out).encode(), ctypes.byref(ckpt)) == 0
    try:
        buf = np.zeros(64 * 64, dtype=np.float32)
        assert api.tq_packed_dequantize(ckpt, 99, 0, 1, buf.ctypes.data) == -1
        assert b"out of range" in api.tq_last_error()
        assert api.tq_packed_dequantize(ckpt, 0, 5, 2, buf.ctypes.data) == -1
        assert api.tq_packed_gemv(ckpt, 0, None, buf.ctypes.data) == -1
        assert b"x is NULL" in api.tq_last_error()
        assert api.tq_packed_gemm(ckpt, 0, buf.ctypes.data, 0, buf.ctypes.data) == -1
        assert api.tq_packed_count(None, None) == -1
    finally:
        api.tq_packed_free(ckpt)
    assert api.tq_packed_open(str(tmp_path).encode(), ctypes.byref(ckpt)) == -2
    model = c_void_p()
    assert api.tq_model_open(fixtures.model("stories260K").encode(), ctypes.byref(model)) == 0
    try:
        rc = api.tq_quantize(model, b'{"bits": 5}', str(tmp_path / "x").encode(), None, None)
        assert rc == -1 and b"bits" in api.tq_last_error()
        assert not (tmp_path / "x").exists()
    finally:
        api.tq_model_free(model)
