"""`auto` precision: the probe measures every candidate against fp32 on this machine, picks the
fastest faithful one, caches the report, and the engine serves what it picked."""

from __future__ import annotations

import json

import pytest
import torch

from inference.engine import Engine
from inference.engine.kernels import missing_cpu_flags
from inference.engine.precision_probe import choose_precision, measure, probe

CPU = torch.device("cpu")
SMALL = {"prompts": 2, "reply_tokens": 8}


@pytest.fixture(scope="module")
def loose(tiny_target_dir) -> dict:
    """Every candidate passes: the choice is the fastest step."""
    return measure(tiny_target_dir, CPU, min_agreement=0.0, max_kl=float("inf"), **SMALL)


def test_it_measures_every_candidate_against_fp32(loose):
    results = loose["results"]
    assert set(results) == {"fp32", "int8", "int4", "int4a8"}
    assert ("error" in results["int4a8"]) == bool(missing_cpu_flags())  # measured wherever its kernels run
    assert results["fp32"] == {**results["fp32"], "agreement": 1.0, "kl": 0.0, "faithful": True}
    for name in ("int8", "int4"):
        r = results[name]
        assert 0.0 <= r["agreement"] <= 1.0 and r["kl"] >= 0.0 and r["step_ms"] > 0, (name, r)


def test_it_picks_the_fastest_faithful_precision(loose):
    results = loose["results"]
    assert loose["chosen"] == min(results, key=lambda n: results[n]["step_ms"])


def test_it_keeps_fp32_when_no_candidate_is_faithful(tiny_target_dir):
    strict = measure(tiny_target_dir, CPU, min_agreement=1.01, max_kl=-1.0, **SMALL)
    assert strict["chosen"] == "fp32"
    assert not strict["results"]["int8"]["faithful"] and not strict["results"]["int4"]["faithful"]


def test_a_quantised_precision_disagrees_with_fp32_somewhere(tiny_target_dir):
    """The measurement is real: int4 of a random tiny model moves its distributions (KL > 0)."""
    report = measure(tiny_target_dir, CPU, **SMALL)
    assert report["results"]["int4"]["kl"] > 0.0
    assert report["results"][report["chosen"]]["faithful"]


def test_it_caches_the_report_per_machine(tiny_target_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CHATNEXUS_MODEL_CACHE", str(tmp_path))
    first = probe(tiny_target_dir, CPU, **SMALL)
    files = list((tmp_path / "precision-probe").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == first
    files[0].write_text(json.dumps({**first, "chosen": "int8"}))  # what a cached report says is what is used
    assert choose_precision(tiny_target_dir, CPU, **SMALL).name == "int8"
    assert probe(tiny_target_dir, CPU, use_cache=False, **SMALL)["measured_at"]  # re-measures when asked


def test_the_engine_serves_the_precision_auto_chose(tiny_target_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CHATNEXUS_MODEL_CACHE", str(tmp_path))
    report = probe(tiny_target_dir, CPU)
    engine = Engine(target=tiny_target_dir, drafter="suffix", device="cpu", dtype="auto")
    assert engine.precision.name == report["chosen"]
    plain, _ = engine.generate_ids(engine.encode("abcabcabcabc"), max_new_tokens=24, drafter="none")
    drafted, _ = engine.generate_ids(engine.encode("abcabcabcabc"), max_new_tokens=24)
    assert drafted == plain


def test_auto_on_cuda_is_the_device_default():
    assert choose_precision("never-loaded", torch.device("cuda")).name == "fp32"  # no probe on CUDA


def test_step_times_times_every_model_in_the_same_rounds(tiny_target_dir):
    from inference.engine.loading import load_model
    from inference.engine.verify_cost import step_times

    fp32, _ = load_model(tiny_target_dir, device="cpu", dtype="fp32")
    int8, _ = load_model(tiny_target_dir, device="cpu", dtype="int8")
    times = step_times({"fp32": fp32, "int8": int8}, rounds=2)
    assert set(times) == {"fp32", "int8"} and all(0 < t < 10 for t in times.values())


def test_it_keeps_no_fp32_copy_a_worker_does_not_serve(tiny_target_dir):
    """The stock reference always goes after the probe; the engine's fp32 copy stays only if chosen."""
    from inference.engine.loading import _loaded

    report = measure(tiny_target_dir, CPU, min_agreement=0.0, max_kl=float("inf"), **SMALL)
    assert (tiny_target_dir, "cpu", "fp32", True) not in _loaded
    assert ((tiny_target_dir, "cpu", "fp32", False) in _loaded) == (report["chosen"] == "fp32")
