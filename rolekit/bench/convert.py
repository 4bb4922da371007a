"""Conversion benchmark: write a random checkpoint folder in NVIDIA's naming (model.safetensors in
bf16: 16.7 GB at full size), then time `rolekit convert` in a child process and read its peak RSS.

The checkpoint is `randmodel.write_random_lm` (streamed to disk from one random block, so writing
it needs little memory). The Mimi file is a small placeholder (convert copies it unchanged) and
the tokenizer is the tiny test tokenizer: only the LM conversion is being measured.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rolekit.errors import ConfigError
from rolekit.hub import folder_size
from rolekit.randlm import lm_config


def write_random_checkpoint(folder: Path, size: str = "tiny", seed: int = 0) -> dict[str, Any]:
    """folder/model.safetensors (bf16, NVIDIA names and shapes), Mimi placeholder, tokenizer."""
    from rolekit.randmodel import write_random_lm
    from rolekit.text import TINY_TOKENIZER

    cfg = lm_config(size)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    written = write_random_lm(folder / "model.safetensors", cfg, seed)
    _write_placeholder_mimi(folder / "tokenizer-e351c8d8-checkpoint125.safetensors")
    shutil.copyfile(TINY_TOKENIZER, folder / "tokenizer_spm_32k_3.model")
    (folder / "config.json").write_text(json.dumps({"lm_kwargs": cfg.to_kyutai()}))
    return {
        "tensors": written["tensors"],
        "checkpoint_gb": round(written["bytes"] / 1e9, 2),
        "write_s": round(time.perf_counter() - t0, 1),
    }


def _write_placeholder_mimi(path: Path) -> None:
    raw = json.dumps({"placeholder": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + np.zeros(1, np.float32).tobytes())


def time_convert(src: Path, dst: Path, bits: int) -> dict[str, Any]:
    """Run `rolekit convert SRC DST --bits N` as a child; its wall time and its own peak RSS."""
    cmd = [sys.executable, "-m", "rolekit", "convert", str(src), str(dst), "--bits", str(bits), "--overwrite"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    out_gb = folder_size(dst) / 1e9
    result: dict[str, Any] = {
        "bits": bits,
        "seconds": round(seconds, 1),
        "peak_rss_gb": round(usage.ru_maxrss * 1024 / 1e9, 2),
        "output_gb": round(out_gb, 2),
        "exit_code": proc.returncode,
    }
    if proc.returncode != 0:
        result["error"] = output.strip().splitlines()[-1:] or ["(no output)"]
    return result


def bench_convert(
    size: str = "tiny", workdir: str | None = None, bits: tuple[int, ...] = (4, 8, 16)
) -> dict[str, Any]:
    """Random checkpoint of `size` -> convert at each `bits`; folders removed afterwards."""
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="rolekit-bench-convert-"))
    if workdir and not base.is_dir():
        raise ConfigError(f"--dir: {workdir} is not a folder")
    src = base / "src"
    try:
        made = write_random_checkpoint(src, size)
        runs = []
        for b in bits:
            runs.append(time_convert(src, base / f"out{b}", b))
            shutil.rmtree(base / f"out{b}", ignore_errors=True)
    finally:
        shutil.rmtree(src, ignore_errors=True)
        if not workdir:
            shutil.rmtree(base, ignore_errors=True)
    return {"runtime": "rolekit-convert", "size": size, **made, "runs": runs}
