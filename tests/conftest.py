"""Suite-wide test settings: never touch the network, keep the torch oracle fast."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_TORCH_COMPILE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Commands default to the real model (nvidia/personaplex-7b-v1); tests run on the embedded random one.
os.environ.setdefault("ROLEKIT_MODEL", "tiny")

# Same as the CLI: MLX on Linux binds to the system OpenBLAS when it is loaded before mlx.
from rolekit.codec.blas import preload_openblas  # noqa: E402

preload_openblas()
