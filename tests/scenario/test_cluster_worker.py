"""A cluster worker loads the model with the driver's --dtype / --quant / --compat (no Ray needed)."""

from __future__ import annotations

from rolekit import models
from rolekit.models import LoadOptions
from rolekit.suite.worker import SuiteWorker


def test_worker_loads_with_the_drivers_load_options(monkeypatch):
    seen = []
    real = models.load

    def spy(spec, options=None, *args, **kwargs):
        seen.append((spec, options))
        return real(spec, options, *args, **kwargs)

    monkeypatch.setattr(models, "load", spy)
    options = LoadOptions(dtype="fp32", quant="auto", compat="nvidia")
    worker = SuiteWorker("tiny", prefill_cache=False, load=options)
    info = worker.ready()
    assert seen == [("tiny", options)]
    assert info["pid"] > 0
