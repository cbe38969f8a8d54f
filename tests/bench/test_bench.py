"""The benchmark harness on a tiny random model: files, keys, and greedy token identity."""

import json
import shutil

from inference.engine.bench import format_table, run_bench, load_prompts, make_layer_draft

KEYS = {"target", "draft", "machine", "date", "max_new_tokens", "methods"}
METHOD_KEYS = {"name", "tokens_per_s", "speedup", "acceptance_rate", "mean_tokens_per_forward",
               "identical", "prompts"}


def test_it_writes_results_and_plot_with_identical_greedy_outputs(tiny_model_dir, prompt_file, tmp_path):
    draft = make_layer_draft(str(tiny_model_dir), 1, tmp_path / "draft")
    out = tmp_path / "out"
    methods = ["hf_plain", "hf_assisted", "hf_prompt_lookup", "none", "lookup", "lookup_k3", "draft"]
    results = run_bench(load_prompts(prompt_file), target=str(tiny_model_dir), draft=str(draft),
                        methods=methods, max_new_tokens=12, seed=0, device="cpu",
                        out_dir=out, progress=False)

    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert set(saved) == KEYS
    assert [m["name"] for m in saved["methods"]] == methods
    for m in saved["methods"]:
        assert METHOD_KEYS <= set(m)
        assert m["prompts"] == 3
        assert m["identical"] == 3, m["name"]  # greedy: every method reproduces hf_plain
        assert m["tokens_per_s"] > 0
    by_name = {m["name"]: m for m in saved["methods"]}
    assert by_name["hf_plain"]["speedup"] == 1.0
    assert by_name["lookup"]["mean_tokens_per_forward"] > 0
    assert (out / "speedup.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = format_table(results)
    assert "lookup_k3" in table and "3/3" in table


def test_hf_methods_stop_at_the_context_as_ours_do(tiny_model_dir, prompt_file, tmp_path):
    """A --max-new-tokens beyond the context: the engine clips it to the context, HF's generate ran
    past it (10**22: on and on, or an overflow inside assisted generation with a traceback)."""
    short = shutil.copytree(tiny_model_dir, tmp_path / "short")  # a 160-token context: ~80 new tokens
    config = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 160}))
    methods = ["hf_plain", "hf_assisted", "none"]
    for max_new_tokens in (400, 10 ** 22):
        results = run_bench(load_prompts(prompt_file)[:1], target=str(short), draft=str(short), methods=methods,
                            max_new_tokens=max_new_tokens, seed=0, device="cpu", out_dir=tmp_path / "out",
                            progress=False)
        assert [m["name"] for m in results["methods"]] == methods
        assert all(m["identical"] == 1 for m in results["methods"]), (max_new_tokens, results["methods"])
