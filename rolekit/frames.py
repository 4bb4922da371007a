"""Every constant of the PersonaPlex stream format, and the plain data passed between layers.

LEAF module: imports nothing from rolekit and never imports mlx.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 24_000
FRAME_RATE = 12.5
FRAME_SAMPLES = 1920  # one step = one 80 ms frame
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE

# Stream layout of the 17 token streams (index into the [B, 17, T] token grid).
N_CODEBOOKS = 8  # Mimi codebooks used per audio stream
TEXT_STREAM = 0
AGENT_STREAMS = tuple(range(1, 1 + N_CODEBOOKS))  # 1..8
USER_STREAMS = tuple(range(1 + N_CODEBOOKS, 1 + 2 * N_CODEBOOKS))  # 9..16
N_STREAMS = 1 + 2 * N_CODEBOOKS
DELAYS = (0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1)
MAX_DELAY = max(DELAYS)

# Special text ids (PersonaPlex SentencePiece vocabulary).
EPAD = 0  # end of padding: the model is about to speak a word
BOS = 1
EOS = 2
PAD = 3  # silence on the text stream
TEXT_SPECIAL_NAMES = {EPAD: "EPAD", BOS: "BOS", EOS: "EOS", PAD: "PAD"}
ZERO_TOKEN = -1  # embeds to an exact zero vector
UNGENERATED_TOKEN = -2

# Mimi codes of silence (agent stream during prompts) and of a 440 Hz sine (user stream during prompts).
SILENCE_TOKENS = (948, 243, 1178, 546, 1736, 1030, 1978, 2008)
SINE_TOKENS = (430, 1268, 381, 1611, 1095, 1495, 56, 472)

PROMPT_SILENCE_FRAMES = int(0.5 * FRAME_RATE)  # 6 frames of silence around the text prompt
CONTEXT_FRAMES = 3000  # temporal transformer context = 240 s
# PersonaPlex's default sampling (NVIDIA's server): the one source of these numbers
SAMPLING_DEFAULTS = {"text_temperature": 0.7, "text_top_k": 25, "audio_temperature": 0.8, "audio_top_k": 250}
SYSTEM_TAG = "<system>"

VOICES = (
    "NATF0", "NATF1", "NATF2", "NATF3",
    "NATM0", "NATM1", "NATM2", "NATM3",
    "VARF0", "VARF1", "VARF2", "VARF3", "VARF4",
    "VARM0", "VARM1", "VARM2", "VARM3", "VARM4",
)  # fmt: skip


def seconds_to_frames(seconds: float) -> int:
    """Whole frames needed to cover `seconds` of audio (rounded up)."""
    return int(np.ceil(round(seconds * FRAME_RATE, 6)))


def frames_to_seconds(frames: int) -> float:
    return frames / FRAME_RATE


@dataclass(frozen=True)
class PrefillPlan:
    """What the engine replays before the conversation starts (plain data, no mlx).

    Order (NVIDIA LMGen.step_system_prompts): voice prompt, `silence_frames` of silence,
    one frame per text id, `silence_frames` of silence.
    """

    voice: str  # preset name (e.g. "NATF2") or a path to a .pt/.safetensors/.wav voice file
    text_ids: tuple[int, ...]
    silence_frames: int = PROMPT_SILENCE_FRAMES
    voice_frames: int | None = None  # known once the voice file has been read
    content_hash: str = ""
    rendered_text: str = ""
    persona: str = ""
    sampling: dict[str, float] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        """Prefill frames, counting the voice only when its length is known."""
        return (self.voice_frames or 0) + 2 * self.silence_frames + len(self.text_ids)

    @property
    def remaining_frames(self) -> int:
        return CONTEXT_FRAMES - self.frames


@dataclass
class StepOutput:
    """What one engine step produces for a batch of B conversations."""

    pcm: np.ndarray  # [B, 1920] float32 agent audio (zeros until the first frame is out)
    text: np.ndarray  # [B] int text ids (PAD while nothing is out yet)
    audio: np.ndarray  # [B, 8] int agent codes (-1 while nothing is out yet)
    ready: bool = True  # False for the priming steps that produce no frame yet
