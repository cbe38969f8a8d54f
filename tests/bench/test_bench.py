"""The benchmark harness on a tiny random model: files, keys, and greedy token identity."""

import json

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
