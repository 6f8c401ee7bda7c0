"""Opens a real model through libtesseraq.so with plain ctypes and checks one logit row
against Tests/Fixtures/models/stories260K/golden.json."""
import ctypes
import json
import os

import numpy as np


def test_logits_through_the_c_abi(lib, fixtures):
    lib.tq_model_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.tq_model_logits.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
    lib.tq_model_info.argtypes = [ctypes.c_void_p] + [ctypes.POINTER(ctypes.c_int64)] * 8
    lib.tq_model_free.argtypes = [ctypes.c_void_p]
    lib.tq_last_error.restype = ctypes.c_char_p
    lib.tq_version.restype = ctypes.c_char_p
    assert lib.tq_version().decode().count(".") == 2

    path = fixtures.model("stories260K")
    golden = json.load(open(os.path.join(path, "golden.json")))["logits_check"]
    model = ctypes.c_void_p()
    assert lib.tq_model_open(path.encode(), ctypes.byref(model)) == 0, lib.tq_last_error()
    try:
        dims = [ctypes.c_int64() for _ in range(8)]
        assert lib.tq_model_info(model, *[ctypes.byref(d) for d in dims]) == 0
        vocab, hidden = dims[0].value, dims[1].value
        assert (vocab, hidden) == (512, 64)
        ids = np.array(golden["input_ids"], dtype=np.uint32)
        out = np.zeros((len(ids), vocab), dtype=np.float32)
        assert lib.tq_model_logits(model, ids.ctypes.data, len(ids), out.ctypes.data) == 0, lib.tq_last_error()
        ref = np.array(golden["logits"], dtype=np.float64)
        np.testing.assert_allclose(out[: len(ref)], ref, atol=2e-4, rtol=0)
    finally:
        lib.tq_model_free(model)


def test_errors_are_status_codes_with_messages(lib, tmp_path):
    lib.tq_model_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.tq_last_error.restype = ctypes.c_char_p
    lib.tq_status_name.restype = ctypes.c_char_p
    model = ctypes.c_void_p()
    rc = lib.tq_model_open(str(tmp_path).encode(), ctypes.byref(model))
    assert rc == -2 and lib.tq_status_name(rc) == b"TQ_ERR_IO"
    assert str(tmp_path).encode() in lib.tq_last_error() and b"config.json" in lib.tq_last_error()
    assert model.value is None
    assert lib.tq_model_open(None, ctypes.byref(model)) == -1
    assert b"path is NULL" in lib.tq_last_error()
    lib.tq_model_free(None)  # accepted
