"""The adaptive draft length weighs expected accepted tokens against c_verify(k)."""

from __future__ import annotations

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
