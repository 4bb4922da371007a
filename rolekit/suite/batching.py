"""How a suite's runs are grouped into batches (`--jobs`): at most as many as one engine holds in
the memory left after the model (`Backend.fit_batch`), spread evenly where memory is the limit."""

from __future__ import annotations

from collections.abc import Callable

from rolekit.frames import CONTEXT_FRAMES
from rolekit.suite.backend import Backend


def plan_batches(
    lengths: list[tuple[int, int]],
    jobs: int,
    backend: Backend,
    note: Callable[[str], None] | None = None,
    reserve: int = 0,
) -> list[list[int]]:
    """Runs (by index, in plan order) grouped into consecutive batches of at most `jobs` runs, or
    of as many as `backend.fit_batch` lets one engine hold for the suite's longest prompt and
    positions (longest prompt + longest script: prompts in a batch are left-padded to its
    longest), whichever is fewer. `lengths`: per run, (prefill frames, conversation frames at
    most). Where memory is the limit, the runs are spread over the fewest batches evenly (one or
    two batch sizes, so few graphs to build) and `note` gets one line saying so. `reserve`: bytes
    of models the batches' process still loads (the Whisper model that transcribes them)."""
    n = len(lengths)
    cap = jobs
    if jobs > 1 and n > 1:
        prefill = max(p for p, _ in lengths)
        positions = batch_positions(lengths)
        fit = backend.fit_batch(prefill, positions, min(jobs, n), reserve=reserve)
        if fit < min(jobs, n):
            cap = fit
    if cap == jobs:
        return [list(range(i, min(i + jobs, n))) for i in range(0, n, jobs)]
    count = -(-n // cap)  # the fewest batches of at most `cap`
    sizes = [n // count + (1 if k < n % count else 0) for k in range(count)]
    if note:
        grounds = getattr(backend, "last_fit", None)
        why = f" ({grounds.describe()})" if grounds is not None else ""
        spread = " and ".join(str(x) for x in sorted(set(sizes), reverse=True))
        note(
            f"--jobs {jobs}: {cap} conversation{'s' if cap != 1 else ''} of up to {positions} positions "
            f"(prompt included) fit in the memory left after the model{why}: {n} runs in batches "
            f"of {spread}"
        )
    groups, start = [], 0
    for size in sizes:
        groups.append(list(range(start, start + size)))
        start += size
    return groups


def batch_positions(lengths: list[tuple[int, int]]) -> int:
    """LM positions of one batch of runs of (prefill frames, conversation frames at most); the
    engine stops a batch at the context (`CONTEXT_FRAMES`)."""
    return min(CONTEXT_FRAMES, max(p for p, _ in lengths) + max(f for _, f in lengths))
