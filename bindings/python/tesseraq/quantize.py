"""tesseraq.quantize: one call from a float checkpoint to a GPTQ packed checkpoint."""
from __future__ import annotations

import ctypes
import json
import math
import os
import warnings
from typing import Any, Dict

from . import _lib
from ._progress import bar, interruptible
from ._arrays import tokens_array
from .errors import CancelledError
from .model import Model


def quantize(model_dir: "os.PathLike[str] | str", out_dir: "os.PathLike[str] | str", method: str = "rtn", bits: int = 4,
             group_size: int = 128, progress: bool = True, **config: Any) -> Dict[str, Any]:
    """Quantizes `model_dir` with `method` ("rtn", "tesseraq", "awq", "gptq", "lwc") and writes a GPTQ
    checkpoint to `out_dir`. Further keyword arguments are configuration keys (e.g. sym=True,
    preset="ci", calib_tokens="valid.bin", iters=50); `calib_tokens` may also be a uint32 numpy array
    (or a list of ids). Returns the run report (quantize_report.json).

    A tqdm bar shows block, round and loss; Ctrl-C cancels cleanly (raises KeyboardInterrupt,
    nothing half-written is left at out_dir; a calibrated run resumes from its last finished block)."""
    cfg = {"method": method, "bits": bits, "group_size": group_size, **config}
    tokens = cfg.pop("calib_tokens") if not isinstance(cfg.get("calib_tokens", ""), (str, os.PathLike)) else None
    if isinstance(cfg.get("calib_tokens"), os.PathLike):
        cfg["calib_tokens"] = os.fspath(cfg["calib_tokens"])
    ids = tokens_array(tokens) if tokens is not None else None
    out = os.fspath(out_dir)
    with Model(model_dir) as m, interruptible() as stop, bar(1000, f"quantize {method}", progress) as b:
        def on_progress(block: int, blocks: int, rnd: int, step: int, loss: float, _user) -> int:
            b.update(int(1000 * (block + 1) / max(blocks, 1)) - b.n if rnd == 0 else 0)
            desc = f"block {block + 1}/{blocks}" + (f" round {rnd} step {step}" if rnd else "")
            b.set_postfix_str(desc + ("" if math.isnan(loss) else f" loss {loss:.4g}"), refresh=False)
            return 1 if stop.requested else 0

        cb = _lib.QUANT_PROGRESS_FN(on_progress)
        try:
            if ids is None:
                _lib.call("tq_quantize", m.handle, json.dumps(cfg).encode(), out.encode(), cb, None)
            else:
                _lib.call("tq_quantize_tokens", m.handle, json.dumps(cfg).encode(), ids.ctypes.data, ids.size, out.encode(),
                          cb, None)
        except CancelledError:
            if stop.requested:
                raise KeyboardInterrupt from None
            raise
    with open(os.path.join(out, "quantize_report.json")) as f:
        report = json.load(f)
    for notice in report.get("notices", []):  # settings fitted to the model (e.g. seq_len cut to its context)
        warnings.warn(notice, stacklevel=2)
    return report
