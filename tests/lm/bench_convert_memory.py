"""Benchmark (not a test): peak memory of `rolekit convert` on a full-size PersonaPlex 7B checkpoint.

The input is a sparse all-zero bf16 `model.safetensors` with the real 475 names and shapes
(16.7 GB logical, no disk space); every tensor is still read, converted and written, so memory
and I/O behave as with real weights. Run: `python tests/lm/bench_convert_memory.py [BITS ...]`.
"""

from __future__ import annotations

import json
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_sparse_checkpoint(path: Path) -> int:
    from rolekit.lm.config import personaplex_7b
    from rolekit.lm.weights import nvidia_keys

    header, offset = {}, 0
    for name, shape in nvidia_keys(personaplex_7b()).items():
        n = 2
        for d in shape:
            n *= d
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        f.truncate(8 + len(raw) + offset)
    return offset


def child(src: str, dst: str, bits: int) -> None:
    from rolekit.convert import convert

    start = time.perf_counter()
    result = convert(Path(src), Path(dst), bits=bits)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    out = sum(result.files.values()) / 2**30
    print(
        json.dumps(
            {
                "bits": bits,
                "seconds": round(time.perf_counter() - start, 1),
                "peak_rss_gib": round(peak, 2),
                "output_gib": round(out, 2),
                "files": result.files,
            }
        )
    )


def main(bits_list: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        size = write_sparse_checkpoint(src / "model.safetensors")
        (src / "tokenizer-e351c8d8-checkpoint125.safetensors").write_bytes(b"\0" * 1024)
        (src / "tokenizer_spm_32k_3.model").write_bytes(b"\0" * 1024)
        print(f"input: {size / 2**30:.2f} GiB of bf16 tensors", flush=True)
        for bits in bits_list:
            dst = Path(tmp) / f"out{bits}"
            subprocess.run([sys.executable, __file__, "--child", str(src), str(dst), str(bits)], check=True)
            subprocess.run(["rm", "-rf", str(dst)], check=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main([int(b) for b in sys.argv[1:]] or [4])
