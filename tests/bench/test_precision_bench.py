"""The precision benchmark on a tiny random model: every precision x drafter row, prompt reuse
rows, faithfulness columns, and speculation lossless at each precision."""

import json

from inference.engine.precision_bench import format_precision_table, run_precision_bench

SYSTEM = "You are the support assistant of a bike shop. Hours 10-19, tune-up $79, repairs in 2 days. " * 2
PROMPTS = [{"id": f"p{i}", "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]}
           for i, q in enumerate(["When are you open?", "How much is a tune-up?", "Do you fix e-bikes?"])]


def test_it_reports_every_row_and_reuses_prompts_exactly(tiny_model_dir, tmp_path):
    results = run_precision_bench(PROMPTS, target=str(tiny_model_dir), precisions=["int8"],
                                  drafters=["none", "lookup"], max_new_tokens=10, out_dir=tmp_path, reuse=True,
                                  progress=False)
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(results))
    assert not (tmp_path / "results.partial.json").exists()  # only a run cut short leaves one
    rows = {m["name"]: m for m in results["methods"]}
    assert list(rows) == ["hf_plain/fp32", "none/fp32", "none/fp32/reuse", "lookup/fp32", "lookup/fp32/reuse",
                          "none/int8", "none/int8/reuse", "lookup/int8", "lookup/int8/reuse"]
    for name, m in rows.items():
        assert m["prompts"] == 3 and m["tokens_per_s"] > 0, name
        if name != "hf_plain/fp32":
            assert m["lossless"] == 3, name  # drafts == no drafts at the same precision (and reuse)
    for name in ("none/fp32", "none/fp32/reuse", "lookup/fp32", "lookup/fp32/reuse"):
        assert rows[name]["identical_to_fp32"] == 3, name  # reuse is exact
    assert rows["hf_plain/fp32"]["speedup_vs_hf_fp32"] == 1.0
    for name in ("none/int8/reuse", "none/fp32/reuse"):  # prompts 2 and 3 share the system prompt's first chunk
        assert rows[name]["prompt_tokens_reused"] > 0.3, name
    assert rows["none/int8"]["prompt_tokens_reused"] == 0 and rows["none/fp32"]["prompt_tokens_reused"] == 0
    assert set(results["verify_cost"]) == {"fp32", "int8", "fp32-stock"}  # stock: what hf_plain runs
    table = format_precision_table(results)
    assert "none/int8/reuse" in table and "3/3" in table


def test_a_draft_model_row_is_named_by_its_precision_and_checked_for_losslessness(tiny_model_dir, tmp_path):
    spec = f"model:{tiny_model_dir}"  # a path holds "/", which must not be read as the row's precision
    results = run_precision_bench(PROMPTS[:2], target=str(tiny_model_dir), precisions=["bf16"],
                                  drafters=[spec, f"suffix+{spec}"], max_new_tokens=8, out_dir=tmp_path,
                                  hf_plain=False, progress=False)
    rows = {m["name"]: m for m in results["methods"]}
    assert list(rows) == ["none/fp32", "draft/fp32", "suffix+draft/fp32", "none/bf16", "draft/bf16",
                          "suffix+draft/bf16"]
    assert results["drafters"] == ["none", spec, f"suffix+{spec}"]
    for name in ("draft/fp32", "draft/bf16", "suffix+draft/bf16"):
        assert rows[name]["precision"] == name.split("/")[1]
        assert rows[name]["lossless"] == 2, name
        assert rows[name]["acceptance_rate"] > 0.9, name  # the target drafting for itself


def test_a_run_cut_short_keeps_the_prompts_it_finished(tiny_model_dir, tmp_path):
    import pytest

    from inference.engine.errors import EngineError

    too_long = {"id": "long", "messages": [{"role": "user", "content": "tune-up " * 2000}]}  # past the context
    with pytest.raises(EngineError):
        run_precision_bench([PROMPTS[0], too_long], target=str(tiny_model_dir), precisions=["fp32"],
                            drafters=["lookup"], max_new_tokens=6, out_dir=tmp_path, hf_plain=False, progress=False)
    partial = json.loads((tmp_path / "results.partial.json").read_text())
    assert partial["done"] == 1 and partial["total"] == 2
    assert set(partial["rows"]) == {"none/fp32", "lookup/fp32"}
    assert all(row["new_tokens"] > 0 for row in partial["rows"].values())
    assert not (tmp_path / "results.json").exists()


def test_hugging_faces_rows_run_the_stock_model_not_the_engines_kernels(tiny_model_dir):
    from torch import nn

    from inference.engine import Engine
    from inference.engine.bench import reference_model
    from inference.engine.packed import PackedLinear

    stock = reference_model(str(tiny_model_dir), "cpu", "fp32")
    assert type(stock.lm_head) is nn.Linear and stock.config._attn_implementation != "row_invariant"
    engine = Engine(target=str(tiny_model_dir), drafter="none", device="cpu", dtype="fp32")
    assert isinstance(engine.model.lm_head, PackedLinear) and engine.model is not stock
    assert reference_model(str(tiny_model_dir), "cpu", "int8") is Engine(
        target=str(tiny_model_dir), drafter="none", device="cpu", dtype="int8").model  # no stock int8: HF runs ours
