"""The adaptive draft length weighs expected accepted tokens against c_verify(k)."""

from __future__ import annotations

import pytest

from inference.engine.draft_length import DraftLength, best_length, expected_tokens
from inference.engine.verify_cost import VerifyCost, measure_verify_cost


def flat(k):  # verifying k drafts costs one step whatever k (a memory-bound GPU)
    return 1.0


def steep(k):  # verifying grows faster than linearly with k (a compute-bound CPU kernel)
    return 1.0 + (k / 4) ** 2


def test_expected_tokens_is_leviathans_geometric_sum():
    assert expected_tokens(0.0, 5) == 1.0
    assert expected_tokens(1.0, 5) == 6.0
    assert abs(expected_tokens(0.5, 2) - 1.75) < 1e-12


def test_free_verification_drafts_the_most_and_costly_verification_fewer():
    assert best_length(0.9, flat, 0.0, 16) == 16
    assert best_length(0.9, steep, 0.0, 16) < 16
    assert best_length(0.3, steep, 0.0, 16) <= 2
    assert best_length(0.9, flat, 0.5, 16) < 16  # an expensive draft model drafts less


def test_the_cost_caps_the_streak_heuristic():
    free, costly = DraftLength(cost=flat), DraftLength(cost=steep)
    for _ in range(8):  # a long streak of full acceptance
        for length in (free, costly):
            k = length.next()
            length.update(k, k)
    assert free.next() == 16
    assert costly.next() < 16
    costly.update(costly.next(), 0)  # a rejection shrinks both the streak and α
    assert costly.next() == 1


def test_without_a_cost_it_is_the_old_heuristic():
    length = DraftLength()
    assert length.next() == 4
    length.update(4, 4)
    assert length.next() == 6
    length.update(6, 2)
    assert length.next() == 3


def test_verify_cost_interpolates_and_never_drops_below_one_step():
    cost = VerifyCost(ks=(0, 1, 3), relative=(1.0, 1.2, 2.0), step_s=0.01)
    assert cost(0) == 1.0 and cost(1) == 1.2
    assert abs(cost(2) - 1.6) < 1e-9
    assert cost(5) > 2.0  # extrapolated


def test_it_measures_a_model(tiny_engine):
    cost = measure_verify_cost(tiny_engine.model, ks=(0, 1, 4), reps=1)
    assert cost.relative[0] == 1.0 and cost.step_s > 0 and len(cost.relative) == 3


def test_warm_up_measures_the_costs_before_the_first_reply(tiny_target_dir):
    """The worker calls warm_up at start (CHATNEXUS_PRELOAD_MODEL=1): the first reply must not
    pay the c_verify measurement. A fresh engine (own model copy) shows the before and after."""
    import copy

    from inference.engine import Engine
    from inference.engine.verify_cost import _measured

    engine = Engine(target=tiny_target_dir, drafter="lookup", device="cpu", dtype="fp32")
    engine.model = copy.deepcopy(engine.model)  # not the process-wide shared model another test measured
    engine.drafter = engine.get_drafter("lookup")
    assert engine.model not in _measured
    engine.warm_up()
    assert engine.model in _measured
    plain = Engine(target=tiny_target_dir, drafter="none", device="cpu", dtype="fp32")
    plain.model = copy.deepcopy(plain.model)
    plain.warm_up()  # no drafts, nothing to measure
    assert plain.model not in _measured


def test_merging_two_curves_keeps_the_fastest_time_per_k():
    idle = VerifyCost(ks=(0, 1, 3), relative=(1.0, 1.2, 1.5), step_s=0.010)
    busy = VerifyCost(ks=(0, 1, 3), relative=(1.0, 2.0, 4.0), step_s=0.012)  # verify slowed more than a step
    merged = busy.merged(idle)
    assert merged.step_s == 0.010 and merged.relative == pytest.approx(idle.relative)
    slow_step = VerifyCost(ks=(0, 1, 3), relative=(1.0, 1.0, 1.0), step_s=0.013)  # k=3 at 13 ms beats idle's 15
    assert slow_step.merged(idle).seconds() == pytest.approx((0.010, 0.012, 0.013))
    assert idle.merged(slow_step).seconds() == pytest.approx((0.010, 0.012, 0.013))


def test_a_curve_timed_while_the_machine_was_busy_is_refined_once_it_is_old(tiny_target_dir):
    """A worker that started under load measured verifying as dearer than it is; with
    `verify_cost_refresh_s` set (the worker sets it), a later request times it again and keeps
    the faster times; without it the busy curve stays for the process's life."""
    import copy
    import time

    from inference.engine import Engine
    from inference.engine.verify_cost import _measured

    engine = Engine(target=tiny_target_dir, drafter="lookup", device="cpu", dtype="fp32", prefix_cache=False)
    engine.model = copy.deepcopy(engine.model)  # its own curve, not the shared model's
    engine.drafter = engine.get_drafter("lookup")
    real = measure_verify_cost(engine.model, reps=1)
    busy = VerifyCost(real.ks, tuple(r * (1 + 4 * (k > 0)) for k, r in zip(real.ks, real.relative)), real.step_s)
    long_ago = time.monotonic() - 3600

    _measured[engine.model] = (busy, long_ago)
    engine.generate_ids(engine.encode("abc abc abc"), max_new_tokens=4)  # refresh off: measured once
    assert _measured[engine.model] == (busy, long_ago)

    engine.verify_cost_refresh_s = 600
    engine.generate_ids(engine.encode("abc abc abc"), max_new_tokens=4)
    refined, at = _measured[engine.model]
    assert at > long_ago + 3000
    assert refined.relative[-1] < busy.relative[-1] / 2  # the busy verify times were 5x
    engine.generate_ids(engine.encode("abc abc abc"), max_new_tokens=4)  # young: not timed again
    assert _measured[engine.model] == (refined, at)


def test_the_worker_refreshes_its_curve_as_configured(settings, tiny_target_dir):
    from inference import runtime

    settings.CHATNEXUS_TARGET, settings.CHATNEXUS_DTYPE = tiny_target_dir, "fp32"
    settings.CHATNEXUS_DRAFTER, settings.CHATNEXUS_DEVICE = "lookup", "cpu"
    settings.CHATNEXUS_VERIFY_COST_REFRESH_S = 120
    assert runtime.engine_for().verify_cost_refresh_s == 120
    settings.CHATNEXUS_VERIFY_COST_REFRESH_S = 0
    assert runtime.engine_for().verify_cost_refresh_s is None
