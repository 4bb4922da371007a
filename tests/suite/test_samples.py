"""The sample scenarios in scenarios/ load, expand and compile against the sample personas."""

from pathlib import Path

from rolekit.suite.plan import plan_suite
from rolekit.suite.prepare import prepare_run
from rolekit.text import TINY_TOKENIZER, Tokenizer

ROOT = Path(__file__).resolve().parents[2]


def test_sample_scenarios_prepare(fake_tts, monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = plan_suite([ROOT / "scenarios"])
    assert len({r.scenario for r in runs}) >= 5
    tok = Tokenizer(TINY_TOKENIZER)
    for spec in runs:
        prepared = prepare_run(spec, tok, fake_tts)
        assert prepared.plan.text_ids and prepared.meta["persona_hash"]
        assert prepared.timeline.max_frames() < prepared.plan.remaining_frames
    voices = {r.key: prepare_run(r, tok, fake_tts).plan.voice for r in runs if r.scenario == "dental-booking"}
    assert sorted(voices.values()) == ["NATF0", "NATM2"]
