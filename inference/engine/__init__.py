"""ChatNexus speculative-decoding engine: pure PyTorch + transformers, no Django.

    from inference.engine import Engine, BUNDLED_TARGET
    engine = Engine(target=BUNDLED_TARGET, drafter="suffix")      # or "lookup", "none", "model:<spec>"
    for delta in engine.stream([{"role": "user", "content": "Hello"}], max_new_tokens=64):
        print(delta, end="")
    print(engine.last_stats.as_dict())

Modules: loading (models, GGUF cache, vocab check) · drafters/ (none, lookup, suffix, model, combined) ·
verify (greedy + Leviathan et al. 2023 Algorithm 1) · decode (the loop) · draft_length
(adaptive k, capped by verify_cost's c_verify(k)) · precision (fp32/bf16/int8/int4 weights) ·
threads · text (streaming detokenisation, stop strings) · stats · engine (Engine, get_engine).
"""

from .drafters import DRAFTERS, Drafter, make_drafter
from .engine import Engine, get_engine
from .errors import EngineError, ModelNotFoundError, UnsupportedArchitectureError, VocabularyMismatchError
from .loading import BUNDLED_TARGET, load_model
from .stats import GenerationResult, GenerationStats

__all__ = [
    "BUNDLED_TARGET", "DRAFTERS", "Drafter", "Engine", "EngineError", "GenerationResult", "GenerationStats",
    "ModelNotFoundError", "UnsupportedArchitectureError", "VocabularyMismatchError", "get_engine",
    "load_model", "make_drafter",
]
