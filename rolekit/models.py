"""Turn `--model` (+ `--dtype`, `--quant`, `--compat`) into loaded parts: the one loader of every command.

`--model`: the embedded `tiny` random model, `random-7b` (a full-size random model in NVIDIA's
layout, `rolekit.randmodel`), a local folder or a hub id. `tiny` is built once, deterministically,
under `$ROLEKIT_CACHE/models/tiny-v2` (default `~/.cache/rolekit`), in the real MLX layout: LM
files written by `lm.weights.save_lm_mlx`, Mimi in Kyutai naming, the tiny SentencePiece model,
and 18 preset voices made by running the voice prompt phase on short synthetic audio. Random
weights produce noise, never speech; bundles of them say so (`is_random`, `label`).

`load` applies the precision policy (`lm.precision`): the activation dtype from the device and
`--dtype`; for NVIDIA's bf16 checkpoint the weight format from `--quant` (q4 / q8 are converted
once into `$ROLEKIT_CACHE/models/<model-id>-<quant>/`, `convert.quantized_copy`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from rolekit.errors import ConfigError, ModelError
from rolekit.frames import N_CODEBOOKS, N_STREAMS
from rolekit.hub import rolekit_cache
from rolekit.randmodel import MIMI_FILE, RANDOM_7B_VERSION, TINY_LABEL, TINY_SEED, TINY_VERSION  # noqa: F401
from rolekit.text import RANDOM_7B as RANDOM_7B_SPEC

TINY = "tiny"
RANDOM_7B = RANDOM_7B_SPEC


@dataclass(frozen=True)
class LoadOptions:
    """How a model is loaded and run (the shared `--dtype`, `--quant`, `--compat`, `--kernels` options)."""

    dtype: str = "auto"  # activations: auto (bf16 on a GPU, fp32 on the CPU) | bf16 | fp16 | fp32
    quant: str = "auto"  # NVIDIA's bf16 checkpoint as: auto | bf16 | q8 | q4
    compat: str = "kyutai"  # kyutai | nvidia (the ring cache of NVIDIA's fork, LM and Mimi)
    batch: int = 1  # conversations stepped together (what `--quant auto` weighs)
    kernels: Any = None  # nn.kernels.Kernels (`--kernels`); None: Kernels.for_device()


@dataclass
class ModelBundle:
    lm: Any  # rolekit.lm.model.LM
    mimi: Any  # rolekit.codec.mimi.Mimi
    tokenizer: Any  # rolekit.text.Tokenizer
    model_dir: Path
    model_id: str
    is_random: bool
    quant: str = ""  # the weight format loaded: bf16 | q8 | q4 | fp32 | ...
    compat: str = "kyutai"
    random_label: str = TINY_LABEL
    kernels: Any = None  # the nn.kernels.Kernels policy engines of this model run (None: for the device)

    @property
    def label(self) -> str:
        return self.random_label if self.is_random else self.model_id

    @property
    def dtype(self) -> str:
        """The activation dtype, e.g. "bf16"."""
        from rolekit.lm.precision import dtype_name

        return dtype_name(self.lm.dtype)

    def describe(self) -> dict[str, Any]:
        """What a report or summary should say about the model (random weights are labelled)."""
        out = {"model": self.model_id, "dtype": self.dtype, "quant": self.quant, "compat": self.compat}
        out["random_weights"] = self.is_random
        if self.is_random:
            out["label"] = self.label
        return out


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


def resolve(spec: str, progress: Callable[[int, int], None] | None = None) -> Path:
    """`tiny` / `random-7b` -> the embedded model folder (built on first use); else a local folder or
    hub id. `progress(done, total)` follows the build of random-7b (~17 GB written once)."""
    if spec == TINY:
        folder = rolekit_cache() / "models" / TINY_VERSION
        if not (folder / "config.json").is_file():
            from rolekit.randmodel import build_tiny

            build_tiny(folder)
        return folder
    if spec == RANDOM_7B:
        from rolekit.randmodel import build_random_7b

        folder = rolekit_cache() / "models" / RANDOM_7B_VERSION
        if not (folder / "config.json").is_file():
            build_random_7b(folder, progress=progress)
        return folder
    from rolekit.hub import resolve_model

    return resolve_model(spec, MODEL_FILES)


def model_id_of(folder: Path) -> str:
    """A short id that changes when the weights change (name + config + weight file sizes/mtimes)."""
    cfg = folder / "config.json"
    text = cfg.read_text() if cfg.is_file() else ""
    try:
        named = json.loads(text or "{}").get("rolekit_model")
        if isinstance(named, str) and named:  # a model rolekit built (tiny, random-7b) or converted from one
            return named
    except json.JSONDecodeError:
        pass
    h = hashlib.sha256(text.encode())
    for f in sorted(folder.glob("*.safetensors")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return f"{folder.name}-{h.hexdigest()[:12]}"


def load(
    spec: str,
    options: LoadOptions | None = None,
    log: Callable[[str], None] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> ModelBundle:
    """Load `spec` as `options` say. `log` gets one line per decision (what was chosen and why);
    `progress(task, done, total)` follows a first-use build or conversion."""
    from rolekit.codec.blas import note_reference_blas
    from rolekit.codec.weights import load_mimi
    from rolekit.lm.precision import activation_dtype, device_kind
    from rolekit.lm.weights import load_lm, read_config
    from rolekit.text import TOKENIZER_FILE, Tokenizer

    options = options or LoadOptions()
    say = log or (lambda _line: None)
    if options.compat not in ("kyutai", "nvidia"):
        raise ConfigError(f"--compat: must be kyutai or nvidia, got {options.compat!r}")
    device = device_kind()
    dtype = activation_dtype(options.dtype, device)
    building = None if progress is None else (lambda d, t: progress(f"building {spec}", d, t))
    folder = resolve(spec, progress=building)
    folder, quant = _weights_folder(folder, options, device, say, progress)
    note_reference_blas()
    lm = load_lm(folder, dtype, options.compat)
    mimi = load_mimi(folder, num_codebooks=N_CODEBOOKS, compat=options.compat)
    if mimi.num_codebooks < N_CODEBOOKS:
        raise ModelError(
            f"{folder}: Mimi has {mimi.num_codebooks} codebooks, PersonaPlex needs {N_CODEBOOKS}"
        )
    tok = folder / TOKENIZER_FILE
    if not tok.is_file():
        raise ModelError(f"{folder}: no {TOKENIZER_FILE}")
    config = read_config(folder)
    is_random = bool(config.get("random_weights", False))
    label = str(config.get("label") or TINY_LABEL)
    bundle = ModelBundle(lm, mimi, Tokenizer(tok), folder, model_id_of(folder), is_random, quant)
    bundle.compat, bundle.random_label, bundle.kernels = options.compat, label, options.kernels
    say(f"model {bundle.model_id}: {quant} weights, {bundle.dtype} activations on {device}")
    return bundle


def _weights_folder(
    folder: Path,
    options: LoadOptions,
    device: str,
    say: Callable[[str], None],
    progress: Callable[[str, int, int], None] | None,
) -> tuple[Path, str]:
    """(the folder to load, its weight format): NVIDIA's bf16 checkpoint in the `--quant` chosen
    (converted once into the cache), an MLX-layout folder as it is."""
    from rolekit.lm.precision import choose_quant, memory_gb
    from rolekit.lm.weights import NVIDIA_FILE, read_config

    if not (folder / NVIDIA_FILE).exists():
        stored = _stored_format(folder, read_config(folder))
        if options.quant not in ("auto", stored):
            if stored not in ("bf16", "fp32") or options.quant == "bf16":
                raise ConfigError(
                    f"--quant {options.quant}: {folder} holds {stored} weights (MLX layout); "
                    "use --quant auto, or give NVIDIA's bf16 checkpoint"
                )
            return _quantize(folder, options.quant, say, progress), options.quant
        return folder, stored
    choice = choose_quant(options.quant, device, memory_gb(device), options.batch)
    say(f"--quant {options.quant}: {choice.quant} ({choice.reason})")
    if choice.quant == "bf16":
        return folder, "bf16"
    return _quantize(folder, choice.quant, say, progress), choice.quant


def _quantize(
    folder: Path, quant: str, say: Callable[[str], None], progress: Callable[[str, int, int], None] | None
) -> Path:
    from rolekit.convert import quantized_copy

    task = f"converting to {quant} (once)"
    report = None if progress is None else (lambda d, t: progress(task, d, t))
    out, converted = quantized_copy(folder, model_id_of(folder), quant, report)
    say(f"{'converted' if converted else 'using'} {quant} copy: {out}")
    return out


def _stored_format(folder: Path, config: dict[str, Any]) -> str:
    bits = (config.get("quantization") or {}).get("bits")
    if bits:
        return f"q{bits}"
    from rolekit.lm.checkpoint import SafetensorsFile

    f = SafetensorsFile(folder / "embeddings.safetensors")
    dtype = f.dtype(next(iter(f.keys())))
    return {"BF16": "bf16", "F16": "fp16", "F32": "fp32"}.get(dtype, dtype.lower())


def load_voice(bundle: ModelBundle, name_or_path: str) -> VoicePrompt:
    """A preset name (NATF2...) or a .safetensors / .pt / .wav file -> VoicePrompt."""
    from rolekit.persona.voices import voice_file

    path = voice_file(bundle.model_dir, name_or_path)
    suffix = path.suffix.lower()
    if suffix == ".wav":
        from rolekit.audio.wav import read_audio

        return voice_from_audio(bundle.mimi, read_audio(path), str(path))
    if suffix == ".pt":
        from rolekit.ptfile import read_pt

        tensors = read_pt(path)
    else:
        tensors = {k: np.array(v.astype(mx.float32)) for k, v in mx.load(str(path)).items()}
    return _voice_from_tensors(tensors, path, bundle.lm.cfg.dim)


def voice_from_audio(mimi: Any, pcm: np.ndarray, source: str = "audio") -> VoicePrompt:
    """NVIDIA's voice WAV path: -24 LUFS, then Mimi-encoded one 1920-sample frame at a time."""
    from rolekit.randmodel import encode_voice

    return VoicePrompt(embeddings=None, codes=encode_voice(mimi, pcm, source), cache=None, source=source)


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


def __getattr__(name: str) -> Any:
    """The random-model builders moved to `rolekit.randmodel`; the old names still resolve."""
    if name in _RANDMODEL_NAMES:
        from rolekit import randmodel

        return getattr(randmodel, name)
    raise AttributeError(name)


_RANDMODEL_NAMES = (
    "build_tiny",
    "tiny_configs",
    "synthetic_voice",
    "voice_prompt_phase",
    "write_tiny_voices",
)
