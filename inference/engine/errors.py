"""Errors the engine raises on purpose; every one carries a message saying how to fix it."""


class EngineError(Exception):
    """Base class of every error the engine raises deliberately."""


class ModelNotFoundError(EngineError):
    """A model spec points at nothing we can load (missing path, HF id not cached offline)."""


class VocabularyMismatchError(EngineError):
    """Draft and target do not share a tokenizer/vocabulary, so drafts cannot be verified."""


class UnsupportedArchitectureError(EngineError):
    """The checkpoint is not a decoder-only causal LM that transformers can run."""


class BadModelFileError(EngineError):
    """The file is there but is no readable model (not GGUF, empty, cut short)."""
