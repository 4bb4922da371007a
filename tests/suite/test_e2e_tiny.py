"""End to end on the tiny random model: `rolekit test` with the real engine, batched, resumed."""

import json

import pytest

from rolekit.cli.app import main
from rolekit.frames import FRAME_SECONDS
from rolekit.models import TINY_VERSION
from rolekit.record import SessionRecord, is_complete
from rolekit.text import TINY_TOKENIZER, Tokenizer

PASS = """persona: shop
lead_in: 0.5
tail: 1.0
seed: 3
user:
  - say: "Hello, I need a refund."
expect:
  - not_says: {contains: zzzqqq, source: monologue}
"""
FAIL = PASS.replace("not_says", "agent_says").replace("seed: 3", "seed: 4")


def _cli(args):
    with pytest.raises(SystemExit) as ex:
        main(args)
    return ex.value.code


@pytest.mark.slow
def test_rolekit_test_on_tiny_model(project, tmp_path_factory, monkeypatch, capsys):
    monkeypatch.setenv("ROLEKIT_CACHE", str(tmp_path_factory.getbasetemp() / "rolekit-cache"))
    (project / "scenarios" / "pass.yaml").write_text(PASS)
    (project / "scenarios" / "fail.yaml").write_text(FAIL)
    out = project / "transcripts"
    args = ["test", "scenarios", "--model", "tiny", "--no-transcribe", "--out", str(out)]
    assert _cli([*args, "--jobs", "2", "--junit", str(project / "junit.xml")]) == 1
    captured = capsys.readouterr()
    text = captured.out
    assert "1 passed, 1 failed, 0 errors" in text and "FAIL fail/r0" in text
    # off a terminal: plain one-line stage events on stderr (one batch of two runs: jobs 2)
    events = [line.split("] ", 1)[1] for line in captured.err.splitlines() if line.startswith("[")]
    stages = [e.split(": ", 1)[1].split(" (")[0] for e in events if e.startswith("fail/r0, pass/r0: ")]
    assert stages[:2] == ["prefill", "conversation"], captured.err
    assert "plan: 2 runs to do" in events and "\x1b" not in captured.err

    rec = SessionRecord.load(out / "pass" / "r0")
    say = rec.events[0]
    assert say["start"] == 0.5 and say["kind"] == "say"
    assert len(rec.text_ids) == round((say["end"] + 1.0) / FRAME_SECONDS + 0.5)  # lead-in + speech + tail
    assert len(rec.agent_pcm) == len(rec.user_pcm) == len(rec.text_ids) * 1920
    assert rec.agent_codes.shape == (len(rec.text_ids), 8)
    assert rec.meta["model_id"] == TINY_VERSION and rec.meta["is_random_model"] is True
    assert rec.meta["batch"] == 2 and rec.meta["seed"] == 3 and rec.meta["prefill_frames"] > 0
    tok = Tokenizer(TINY_TOKENIZER)
    words = [(i, p) for i, p in zip(rec.text_ids, rec.text_pieces, strict=True) if i > 3]
    assert words and all(p == tok.piece(i) for i, p in words)
    for name in ("metrics.json", "assertions.json", "report.html"):
        assert (out / "pass" / "r0" / name).is_file()
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert {r["scenario"]: r["status"] for r in rows} == {"pass": "pass", "fail": "fail"}
    assert 'failures="1"' in (project / "junit.xml").read_text()
    assert (out / "report.html").is_file() and (out / "summary.md").is_file()

    # --resume: both runs are finished, nothing runs again, the same verdict comes back
    stamp = (out / "pass" / "r0" / "meta.json").stat().st_mtime_ns
    assert _cli([*args, "--resume"]) == 1
    assert "2 resumed" in capsys.readouterr().out
    assert (out / "pass" / "r0" / "meta.json").stat().st_mtime_ns == stamp
    assert len((out / "results.jsonl").read_text().splitlines()) == 2
    assert _cli([*args, "--filter", "pass"]) == 0
    assert is_complete(out / "pass" / "r0")
