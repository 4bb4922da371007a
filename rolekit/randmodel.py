"""Random-weight model folders, built deterministically on first use: `tiny` and `random-7b`.

- `tiny` (`build_tiny`): a small LM and Mimi in the MLX layout, the tiny SentencePiece model and 18
  preset voices (the voice prompt phase run on synthetic audio), for tests and demos.
- `random-7b` (`build_random_7b`): PersonaPlex 7B at full size in NVIDIA's layout, a complete
  folder as `nvidia/personaplex-7b-v1` ships it: `model.safetensors` (bf16, the real 475 tensor
  names and shapes, ~16.7 GB, streamed to disk from one random block so memory stays ~100 MB),
  the full-size Mimi file (Kyutai naming), a SentencePiece model of the real vocabulary size
  (32000) and 18 voice presets in NVIDIA's `.pt` format ({"embeddings": [T, 1, 1, 4096] bf16,
  "cache": [1, 17, 4] int64}). This is how the real load / convert / step path is timed and
  tested without the gated weights.

Random weights produce noise, never speech: config.json says `random_weights: true` and a label
that reports and summaries show. Folders appear atomically (`atomic.replaced_folder`).
"""

from __future__ import annotations

import json
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from rolekit.atomic import remove_leftovers, replaced_folder
from rolekit.codec.config import MIMI_FILE
from rolekit.errors import AudioInputError, ModelError, Problem
from rolekit.frames import FRAME_SAMPLES, N_CODEBOOKS, N_STREAMS, SAMPLE_RATE, VOICES

TINY_VERSION = "tiny-v2"
TINY_LABEL = "tiny random-weight model: it produces noise, not speech (for tests and demos of the plumbing)"
RANDOM_7B_VERSION = "random-7b-v1"
RANDOM_7B_LABEL = (
    "random-7b: PersonaPlex 7B at full size with random weights: it produces noise, not speech "
    "(for timing and testing the real load and step path)"
)
LM_FILE = "model.safetensors"
TINY_SEED = 20260101
RANDOM_7B_SEED = 7
TINY_VOICE_SECONDS = 1.2
RANDOM_VOICE_SECONDS = 4.0  # ~50 frames, the size of NVIDIA's presets
_BLOCK = 1 << 25  # random values reused across tensors (64 MiB of bf16)
_WEIGHT_STD = 0.02


def encode_voice(mimi: Any, pcm: np.ndarray, source: str = "audio") -> np.ndarray:
    """NVIDIA's voice WAV path: -24 LUFS, then Mimi-encoded one 1920-sample frame at a time
    (the last one zero-padded) -> codes [8, T] int32."""
    from rolekit.audio.loudness import normalize_lufs

    pcm = np.asarray(pcm, np.float32).reshape(-1)
    if pcm.size == 0:
        raise AudioInputError(f"{source}: empty voice audio")
    pcm = normalize_lufs(pcm, SAMPLE_RATE, -24.0)
    frames = -(-pcm.size // FRAME_SAMPLES)
    pcm = np.pad(pcm, (0, frames * FRAME_SAMPLES - pcm.size))
    state = mimi.make_state(1)
    codes = []
    for t in range(frames):
        chunk = mx.array(pcm[t * FRAME_SAMPLES : (t + 1) * FRAME_SAMPLES])[None, None]
        codes.append(mimi.encode_step(chunk, state)[0, :N_CODEBOOKS, 0])
    return np.array(mx.stack(codes, axis=1)).astype(np.int32)  # [8, T]


def tiny_configs() -> tuple[Any, Any]:
    """(LmConfig, MimiConfig) of the tiny model: real stream layout, Mimi frame size and card."""
    from rolekit.codec.config import tiny as tiny_mimi
    from rolekit.lm.config import tiny as tiny_lm
    from rolekit.text import TINY_TOKENIZER, Tokenizer

    vocab = Tokenizer(TINY_TOKENIZER).vocab_size
    # card 2048 = Mimi bins, so the real SILENCE / SINE codes are valid tokens.
    lm_cfg = tiny_lm(text_card=vocab, card=2048, context=3000)
    mimi_cfg = tiny_mimi(bins=2048, total_codebooks=N_CODEBOOKS, num_codebooks=N_CODEBOOKS, context=250)
    return lm_cfg, mimi_cfg


def build_tiny(folder: Path) -> Path:
    """Build the tiny model into `folder` atomically (a sibling temp folder, then rename)."""
    from rolekit.codec.weights import save_mimi
    from rolekit.lm.model import LM
    from rolekit.lm.weights import lm_tensors, save_lm_mlx
    from rolekit.text import TINY_TOKENIZER, TOKENIZER_FILE

    with replaced_folder(folder, keep_if=_has_config) as tmp:  # a concurrent build that won is kept
        lm_cfg, mimi_cfg = tiny_configs()
        mx.random.seed(TINY_SEED)
        lm = LM(lm_cfg)
        mimi = random_mimi(mimi_cfg, TINY_SEED)
        mx.eval(lm.parameters(), mimi.parameters())
        extra = {"rolekit_model": TINY_VERSION, "random_weights": True, "label": TINY_LABEL}
        save_lm_mlx(lm_tensors(lm), tmp, lm_cfg, bits=None, extra_config=extra)
        save_mimi(mimi, tmp / MIMI_FILE)
        shutil.copyfile(TINY_TOKENIZER, tmp / TOKENIZER_FILE)
        (tmp / "README.txt").write_text(TINY_LABEL + "\n")
        write_tiny_voices(lm, mimi, tmp / "voices")
    return folder


def _has_config(folder: Path) -> bool:
    return (folder / "config.json").is_file()


def _flat(module: Any) -> list[tuple[str, mx.array]]:
    from mlx.utils import tree_flatten

    return list(tree_flatten(module.parameters()))


def random_mimi(cfg: Any, seed: int) -> Any:
    """A Mimi of `cfg` with random weights and codebooks drawn from calibration audio (deterministic)."""
    from rolekit.codec.mimi import Mimi

    mimi = Mimi(cfg)
    mimi.load_weights(_random_mimi_weights(mimi, seed))
    probe = Mimi(cfg)  # runs the encoder (which may cache derived arrays); mimi stays clean
    probe.load_weights(_flat(mimi))
    _randomize_codebooks(probe, seed)
    mimi.load_weights(
        [(n, a) for n, a in _flat(probe) if n.endswith(("embedding_sum", "cluster_usage"))], strict=False
    )
    mimi.prepare()
    return mimi


def _random_mimi_weights(mimi: Any, seed: int) -> list[tuple[str, mx.array]]:
    """Variance-preserving random weights for every Mimi tensor (a fresh Mimi holds zeros)."""
    rng = np.random.default_rng(seed + 1)
    out = []
    for name, arr in _flat(mimi):
        shape = tuple(arr.shape)
        if name.endswith(("embedding_sum", "cluster_usage")):
            value = np.zeros(shape) if name.endswith("embedding_sum") else np.ones(shape)
        elif "norm" in name:
            value = np.ones(shape) if name.endswith("weight") else np.zeros(shape)
        elif "layer_scale" in name:
            value = np.full(shape, 0.01)
        elif len(shape) >= 2:
            fan_in = int(np.prod(shape[:-1]))  # MLX Mimi keeps every weight output-last
            value = rng.standard_normal(shape) / np.sqrt(fan_in)
        else:
            value = 0.01 * rng.standard_normal(shape)
        out.append((name, mx.array(value.astype(np.float32))))
    return out


def _randomize_codebooks(mimi: Any, seed: int) -> None:
    """A fresh Mimi has all-zero codebooks: draw centroids around the latents of calibration audio.

    Level by level, centroids ~ N(mean, std) of the residual left by the previous levels, so that
    different sounds get different codes (a plain random table maps every frame to one code).
    """
    rng = np.random.default_rng(seed)
    calib = np.concatenate([synthetic_voice(i, 0.8) for i in range(0, 18, 3)])
    calib = np.concatenate([calib, 0.2 * rng.standard_normal(calib.size // 2).astype(np.float32)])
    x = mx.array(calib[: calib.size // FRAME_SAMPLES * FRAME_SAMPLES])[None, :, None]  # [1, N, 1]
    latent = mimi.downsample(mimi.encoder_transformer(mimi.encoder(x, {})), {}, "downsample")[0]  # [T, D]
    for rvq in (mimi.quantizer.rvq_first, mimi.quantizer.rvq_rest):
        residual = rvq.input_proj(latent)  # [T, dim]
        for layer in rvq.layers:
            mean, std = residual.mean(axis=0), residual.std(axis=0) + 1e-6
            noise = mx.array(rng.standard_normal(layer.embedding_sum.shape).astype(np.float32))
            layer.embedding_sum = mean + std * noise
            layer.cluster_usage = mx.ones(layer.cluster_usage.shape)
            layer.prepare()
            residual = residual - layer.decode(layer.encode(residual))
    mimi.prepare()


def synthetic_voice(index: int, seconds: float = TINY_VOICE_SECONDS) -> np.ndarray:
    """A deterministic voice-like signal (harmonic tone with vibrato and syllable envelope)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 110.0 + 12.0 * index  # one pitch per preset
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))) / SAMPLE_RATE
    sig = sum(np.sin(k * phase) / k for k in range(1, 6))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t) ** 2
    return (0.3 * sig * env).astype(np.float32)


def voice_prompt_phase(codes: np.ndarray, initial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LMGen's voice prompt phase on Mimi codes [8, T]: (inputs [T-1, 17], token ring [17, 4]).

    Every stream is provided (agent = codes, text = PAD, user = SINE), so the model's samples
    never enter the ring: call s >= 1 feeds, per stream k, the initial token while s-1 <= delay_k,
    else frame s-1-delay_k; the ring keeps, per column, the newest position written.
    (Closed form of `engine.prefill.simulate`, which the tests check it against.)
    """
    from rolekit.frames import DELAYS, PAD, SINE_TOKENS, UNGENERATED_TOKEN

    t_len = codes.shape[1]
    frames = np.concatenate(
        [np.full((1, t_len), PAD), codes[:N_CODEBOOKS], np.asarray(SINE_TOKENS)[:, None].repeat(t_len, 1)]
    ).T  # [T, 17]
    delays = np.asarray(DELAYS)

    def token(pos: int, k: int) -> int:
        if pos < 0:
            return UNGENERATED_TOKEN
        return int(initial[k]) if pos <= delays[k] else int(frames[pos - delays[k], k])

    inputs = np.array([[token(s - 1, k) for k in range(N_STREAMS)] for s in range(1, t_len)], np.int32)
    ct = max(DELAYS) + 3
    ring = np.zeros((N_STREAMS, ct), np.int32)
    for k in range(N_STREAMS):
        last = t_len - 1 + delays[k]  # newest position written for stream k
        for j in range(ct):
            ring[k, j] = token(last - ((last - j) % ct), k)
    return inputs.reshape(-1, N_STREAMS), ring


def write_tiny_voices(lm: Any, mimi: Any, folder: Path) -> None:
    """Run the voice prompt phase on synthetic audio; store {embeddings [E,1,1,D], cache [1,17,4]}."""
    folder.mkdir(parents=True, exist_ok=True)
    initial = np.array([lm.cfg.text_card] + [lm.cfg.card] * (N_STREAMS - 1), np.int32)
    for i, name in enumerate(VOICES):
        inputs, ring = voice_prompt_phase(encode_voice(mimi, synthetic_voice(i), name), initial)
        emb = lm.embed(mx.array(inputs.T[None]))[0]  # [T-1, D]: LMGen's saved input embeddings
        tensors = {
            "embeddings": emb.astype(mx.float32)[:, None, None, :],
            "cache": mx.array(ring.astype(np.float32))[None],  # [1, 17, 4], float like the MLX ports
        }
        mx.save_safetensors(
            str(folder / f"{name}.safetensors"), tensors, metadata={"format": "personaplex-voice"}
        )


# ---------------------------------------------------------------- random-7b


def build_random_7b(
    folder: Path,
    progress: Callable[[int, int], None] | None = None,
    lm_cfg: Any = None,
    mimi_cfg: Any = None,
    seed: int = RANDOM_7B_SEED,
) -> Path:
    """Write the random-7b folder (or, for tests, the same layout at `lm_cfg` / `mimi_cfg` sizes).

    A file lock makes concurrent first uses build it once; `progress(bytes, total)` follows the
    LM file, which is most of the time."""
    from filelock import FileLock

    from rolekit.codec.config import mimi_202407
    from rolekit.codec.weights import save_mimi
    from rolekit.lm.config import personaplex_7b
    from rolekit.text import TOKENIZER_FILE, padded_tokenizer

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    lm_cfg = lm_cfg or personaplex_7b()
    mimi_cfg = mimi_cfg or mimi_202407(num_codebooks=N_CODEBOOKS)
    with FileLock(str(folder.with_name(folder.name + ".lock"))):
        if (folder / "config.json").is_file():
            return folder
        remove_leftovers(folder)
        _check_can_build(folder, lm_cfg)
        with replaced_folder(folder) as tmp:
            write_random_lm(tmp / LM_FILE, lm_cfg, seed, progress)
            mimi = random_mimi(mimi_cfg, seed)
            save_mimi(mimi, tmp / MIMI_FILE)
            vocab = lm_cfg.text_card
            shutil.copyfile(padded_tokenizer(tmp / ".tokenizer.model", vocab), tmp / TOKENIZER_FILE)
            (tmp / ".tokenizer.model").unlink()
            write_pt_voices(tmp / LM_FILE, lm_cfg, mimi, tmp / "voices")
            config = {
                "rolekit_model": RANDOM_7B_VERSION if lm_cfg == personaplex_7b() else f"random-{seed}",
                "random_weights": True,
                "label": RANDOM_7B_LABEL,
                "lm_kwargs": lm_cfg.to_kyutai(),
            }
            (tmp / "README.txt").write_text(RANDOM_7B_LABEL + "\n")
            (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder


def _check_can_build(folder: Path, lm_cfg: Any) -> None:
    """Refuse before writing anything (ModelError naming the folder) what would fail after the LM's
    ~17 GB: no torch for the .pt voices, or too little free disk for the folder."""
    import importlib.util

    from rolekit.lm.weights import nvidia_keys

    if importlib.util.find_spec("torch") is None:
        raise ModelError(
            problems=[
                Problem(
                    "its voice presets are .pt files, written with torch: pip install 'rolekit[convert]'",
                    str(folder),
                )
            ]
        )
    need = sum(int(np.prod(shape)) * 2 for shape in nvidia_keys(lm_cfg).values()) + _FOLDER_EXTRA_BYTES
    free = shutil.disk_usage(folder.parent).free
    if free < need:
        raise ModelError(
            problems=[
                Problem(
                    f"needs {need / 1e9:.1f} GB of free disk, {free / 1e9:.1f} GB free there", str(folder)
                )
            ]
        )


_FOLDER_EXTRA_BYTES = 600 * 10**6  # Mimi (~0.4 GB at full size), tokenizer, voices, headroom


def write_random_lm(
    path: Path, cfg: Any, seed: int = RANDOM_7B_SEED, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """`model.safetensors` in NVIDIA's names and shapes for `cfg`, bf16, streamed to disk.

    Every tensor is a window of one seeded block of N(0, 0.02) values starting at an offset taken
    from its name (crc32: the same bytes in every process); RMSNorm `alpha`s are 1."""
    from rolekit.lm.weights import nvidia_keys

    keys = nvidia_keys(cfg)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in keys.items():
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(seed)
    f32 = (_WEIGHT_STD * rng.standard_normal(_BLOCK)).astype(np.float32)
    block = (f32.view(np.uint32) >> 16).astype(np.uint16)  # bf16 = the upper half of fp32 (truncated)
    one = np.uint16(0x3F80)  # bf16 1.0
    done = 0
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for name, shape in keys.items():
            left = int(np.prod(shape))
            if name.endswith(".alpha"):
                f.write(np.full(left, one, np.uint16).tobytes())
                left = 0
            start = zlib.crc32(name.encode()) % 4096
            while left:
                take = min(left, _BLOCK - start)
                f.write(block[start : start + take].tobytes())
                left -= take
                start = 0
            done += int(np.prod(shape)) * 2
            if progress is not None:
                progress(done, offset)
    return {"tensors": len(keys), "bytes": offset}


def write_pt_voices(lm_file: Path, cfg: Any, mimi: Any, folder: Path) -> None:
    """18 presets as NVIDIA ships them: `voices/NAME.pt` = {"embeddings": [T, 1, 1, D] bf16 (the
    summed input embeddings of the voice prompt phase), "cache": [1, 17, 4] int64 (the token ring)}."""
    import torch

    from rolekit.lm.checkpoint import SafetensorsFile

    lm = SafetensorsFile(lm_file)
    tables = [lm.get("text_emb.weight")] + [lm.get(f"emb.{i}.weight") for i in range(cfg.n_q)]  # [V, D]
    initial = np.array([cfg.text_card] + [cfg.card] * (N_STREAMS - 1), np.int32)
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(VOICES):
        codes = encode_voice(mimi, synthetic_voice(i, RANDOM_VOICE_SECONDS), name)
        inputs, ring = voice_prompt_phase(codes, initial)  # [T, 17], [17, 4]
        emb = sum(
            mx.where(
                mx.array(inputs[:, k] == -1)[:, None], 0.0, tables[k][mx.array(np.maximum(inputs[:, k], 0))]
            ).astype(mx.float32)
            for k in range(N_STREAMS)
        )
        emb16 = torch.from_numpy(np.array(emb.astype(mx.float32))).to(torch.bfloat16)
        data = {"embeddings": emb16[:, None, None, :], "cache": torch.from_numpy(ring.astype(np.int64))[None]}
        torch.save(data, str(folder / f"{name}.pt"))
