"""Turn `--model` into loaded parts: the embedded `tiny` random model, a local folder or a hub id.

`tiny` is built once, deterministically, under `$ROLEKIT_CACHE/models/tiny-v2` (default
`~/.cache/rolekit`), in the real MLX layout: LM files written by `lm.weights.save_lm_mlx`, Mimi in
Kyutai naming, the tiny SentencePiece model, and 18 preset voices made by running the voice prompt
phase on short synthetic audio. Its weights are random: it produces noise, never speech.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from rolekit.codec.config import MIMI_FILE
from rolekit.errors import AudioInputError, ModelError
from rolekit.frames import FRAME_SAMPLES, N_CODEBOOKS, N_STREAMS, SAMPLE_RATE, VOICES
from rolekit.hub import rolekit_cache

TINY = "tiny"
TINY_VERSION = "tiny-v2"
TINY_LABEL = "tiny random-weight model: it produces noise, not speech (for tests and demos of the plumbing)"
TINY_SEED = 20260101
TINY_VOICE_SECONDS = 1.2


@dataclass
class ModelBundle:
    lm: Any  # rolekit.lm.model.LM
    mimi: Any  # rolekit.codec.mimi.Mimi
    tokenizer: Any  # rolekit.text.Tokenizer
    model_dir: Path
    model_id: str
    is_random: bool

    @property
    def label(self) -> str:
        return TINY_LABEL if self.is_random else self.model_id


@dataclass
class VoicePrompt:
    """A voice for the prefill: stored embeddings + ring cache (preset) or Mimi codes (audio)."""

    embeddings: np.ndarray | None  # [E, D] float32
    codes: np.ndarray | None  # [8, T] int32
    cache: np.ndarray | None  # [17, 4] int32
    source: str = ""

    @property
    def frames(self) -> int:
        """Prefill frames this voice takes: E stored embeddings replay after one priming frame (E + 1)."""
        if self.embeddings is not None:
            return int(self.embeddings.shape[0]) + 1
        return int(self.codes.shape[-1]) if self.codes is not None else 0

    @property
    def identity(self) -> str:
        """sha256 of the voice content (part of the prefill cache key)."""
        h = hashlib.sha256()
        for arr in (self.embeddings, self.codes, self.cache):
            h.update(b"-" if arr is None else np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()


# What a model needs from a hub repo, in either layout (NVIDIA's PyTorch folder or the MLX one);
# NVIDIA's repo also holds a web UI (dist.tgz) that rolekit never downloads.
MODEL_FILES = ["*.safetensors", "*.model", "*.json", "voices*.tgz", "voices/*"]  # globs: all optional


def resolve(spec: str) -> Path:
    """`tiny` -> the embedded model folder (built on first use); else a local folder or hub id."""
    if spec == TINY:
        folder = rolekit_cache() / "models" / TINY_VERSION
        if not (folder / "config.json").is_file():
            build_tiny(folder)
        return folder
    from rolekit.hub import resolve_model

    return resolve_model(spec, MODEL_FILES)


def model_id_of(folder: Path) -> str:
    """A short id that changes when the weights change (name + config + weight file sizes/mtimes)."""
    cfg = folder / "config.json"
    text = cfg.read_text() if cfg.is_file() else ""
    try:
        if json.loads(text or "{}").get("rolekit_model") == TINY_VERSION:
            return TINY_VERSION
    except json.JSONDecodeError:
        pass
    h = hashlib.sha256(text.encode())
    for f in sorted(folder.glob("*.safetensors")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return f"{folder.name}-{h.hexdigest()[:12]}"


def load(spec: str) -> ModelBundle:
    from rolekit.codec.blas import note_reference_blas
    from rolekit.codec.weights import load_mimi
    from rolekit.lm.weights import load_lm, read_config
    from rolekit.text import TOKENIZER_FILE, Tokenizer

    folder = resolve(spec)
    note_reference_blas()
    lm = load_lm(folder)
    mimi = load_mimi(folder, num_codebooks=N_CODEBOOKS)
    if mimi.num_codebooks < N_CODEBOOKS:
        raise ModelError(
            f"{folder}: Mimi has {mimi.num_codebooks} codebooks, PersonaPlex needs {N_CODEBOOKS}"
        )
    tok = folder / TOKENIZER_FILE
    if not tok.is_file():
        raise ModelError(f"{folder}: no {TOKENIZER_FILE}")
    is_random = bool(read_config(folder).get("random_weights", False))
    return ModelBundle(lm, mimi, Tokenizer(tok), folder, model_id_of(folder), is_random)


def load_voice(bundle: ModelBundle, name_or_path: str) -> VoicePrompt:
    """A preset name (NATF2...) or a .safetensors / .pt / .wav file -> VoicePrompt."""
    from rolekit.persona.voices import voice_file

    path = voice_file(bundle.model_dir, name_or_path)
    suffix = path.suffix.lower()
    if suffix == ".wav":
        from rolekit.audio.wav import read_audio

        return voice_from_audio(bundle.mimi, read_audio(path), str(path))
    if suffix == ".pt":
        tensors = _read_pt(path)
    else:
        tensors = {k: np.array(v.astype(mx.float32)) for k, v in mx.load(str(path)).items()}
    return _voice_from_tensors(tensors, path, bundle.lm.cfg.dim)


def voice_from_audio(mimi: Any, pcm: np.ndarray, source: str = "audio") -> VoicePrompt:
    """NVIDIA's voice WAV path: -24 LUFS, then Mimi-encoded one 1920-sample frame at a time."""
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
    out = np.array(mx.stack(codes, axis=1)).astype(np.int32)  # [8, T]
    return VoicePrompt(embeddings=None, codes=out, cache=None, source=source)


def _voice_from_tensors(tensors: dict[str, np.ndarray], path: Path, dim: int) -> VoicePrompt:
    if "embeddings" in tensors:
        emb = np.asarray(tensors["embeddings"], np.float32)
        if emb.ndim < 2 or emb.shape[-1] != dim or "cache" not in tensors:
            raise ModelError(
                f"{path}: voice embeddings {list(emb.shape)} (need [T, 1, 1, {dim}] and a cache)"
            )
        cache = np.asarray(tensors["cache"])
        if cache.size != N_STREAMS * 4:
            raise ModelError(f"{path}: voice cache has shape {list(cache.shape)}, expected [1, 17, 4]")
        cache = np.rint(cache.astype(np.float64)).astype(np.int32).reshape(N_STREAMS, 4)
        return VoicePrompt(embeddings=emb.reshape(-1, dim), codes=None, cache=cache, source=str(path))
    if "codes" in tensors:
        codes = np.rint(np.asarray(tensors["codes"], np.float64)).astype(np.int32)
        codes = codes.reshape(-1, codes.shape[-1])
        if codes.shape[0] != N_CODEBOOKS:
            codes = codes.T
        return VoicePrompt(embeddings=None, codes=codes[:N_CODEBOOKS], cache=None, source=str(path))
    raise ModelError(f"{path}: no 'embeddings' or 'codes' tensor in this voice file")


def _read_pt(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise ModelError(f"{path}: a .pt voice needs torch (pip install 'rolekit[convert]')") from None
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in data.items()}
    except Exception as exc:
        raise ModelError(f"{path}: not a PersonaPlex voice .pt ({type(exc).__name__}: {exc})") from exc


# ---------------------------------------------------------------- the tiny model


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
    from rolekit.codec.mimi import Mimi
    from rolekit.codec.weights import save_mimi
    from rolekit.lm.model import LM
    from rolekit.lm.weights import lm_tensors, save_lm_mlx
    from rolekit.text import TINY_TOKENIZER, TOKENIZER_FILE

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        lm_cfg, mimi_cfg = tiny_configs()
        mx.random.seed(TINY_SEED)
        lm = LM(lm_cfg)
        mimi = Mimi(mimi_cfg)
        mimi.load_weights(_random_mimi_weights(mimi))
        probe = Mimi(mimi_cfg)  # runs the encoder (which may cache derived arrays); mimi stays clean
        probe.load_weights(_codebook_free(mimi))
        _randomize_codebooks(probe)
        mimi.load_weights(
            [(n, a) for n, a in _flat(probe) if n.endswith(("embedding_sum", "cluster_usage"))], strict=False
        )
        mimi.prepare()
        mx.eval(lm.parameters(), mimi.parameters())
        extra = {"rolekit_model": TINY_VERSION, "random_weights": True, "label": TINY_LABEL}
        save_lm_mlx(lm_tensors(lm), tmp, lm_cfg, bits=None, extra_config=extra)
        save_mimi(mimi, tmp / MIMI_FILE)
        shutil.copyfile(TINY_TOKENIZER, tmp / TOKENIZER_FILE)
        (tmp / "README.txt").write_text(TINY_LABEL + "\n")
        write_tiny_voices(lm, mimi, tmp / "voices")
        try:
            tmp.rename(folder)
        except OSError:
            if not (folder / "config.json").is_file():  # not a concurrent build that won: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _flat(module: Any) -> list[tuple[str, mx.array]]:
    from mlx.utils import tree_flatten

    return list(tree_flatten(module.parameters()))


def _codebook_free(module: Any) -> list[tuple[str, mx.array]]:
    return _flat(module)


def _random_mimi_weights(mimi: Any) -> list[tuple[str, mx.array]]:
    """Variance-preserving random weights for every Mimi tensor (a fresh Mimi holds zeros)."""
    rng = np.random.default_rng(TINY_SEED + 1)
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


def _randomize_codebooks(mimi: Any) -> None:
    """A fresh Mimi has all-zero codebooks: draw centroids around the latents of calibration audio.

    Level by level, centroids ~ N(mean, std) of the residual left by the previous levels, so that
    different sounds get different codes (a plain random table maps every frame to one code).
    """
    rng = np.random.default_rng(TINY_SEED)
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
        voice = voice_from_audio(mimi, synthetic_voice(i), name)
        inputs, ring = voice_prompt_phase(voice.codes, initial)
        emb = lm.embed(mx.array(inputs.T[None]))[0]  # [T-1, D]: LMGen's saved input embeddings
        tensors = {
            "embeddings": emb.astype(mx.float32)[:, None, None, :],
            "cache": mx.array(ring.astype(np.float32))[None],  # [1, 17, 4], float like the MLX ports
        }
        mx.save_safetensors(
            str(folder / f"{name}.safetensors"), tensors, metadata={"format": "personaplex-voice"}
        )
