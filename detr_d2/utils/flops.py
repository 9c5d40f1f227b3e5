"""fvcore op handles for the attention products that fvcore's defaults leave out.

fvcore counts one multiply-add (MAC) as one flop, the convention of the DETR paper's GFLOPs. Its
default handles cover ``aten::linear``, ``addmm``, ``bmm``, ``matmul``, ``einsum`` and
``_convolution``, but a traced ``nn.MultiheadAttention`` of current PyTorch reaches ops they miss:

* ``aten::scaled_dot_product_attention``: the slow path with ``need_weights=False`` (DETR's case);
  q @ k^T and attn @ v were uncounted.
* ``aten::baddbmm``: the slow path with ``need_weights=True`` and a mask; q @ k^T was uncounted.
* ``aten::_native_multi_head_attention``: the fused fast path (batch-first self-attention in eval,
  no autograd); the whole layer, projections included, was uncounted.

Each handle below takes the traced op's ``inputs`` / ``outputs`` (``torch._C.Value``) and returns
MACs; the attention products are reported under the operator name "attention".

``aten::batch_norm`` is not counted: detectron2 lists it among the ops to ignore
(``_IGNORED_OPS``), but ``set_op_handle(None)`` cannot drop a default fvcore handle, so it is
replaced by one that counts nothing. Frozen BN folds into the preceding convolution at inference.
"""

from collections import Counter
from math import prod
from typing import Any, Dict, List, Sequence

import torch
from detectron2.export import TracingAdapter
from detectron2.utils.analysis import FlopCountAnalysis
from fvcore.nn import ActivationCountAnalysis
from fvcore.nn.jit_handles import generic_activation_jit, get_shape

__all__ = [
    "ATTENTION_FLOP_HANDLES",
    "ATTENTION_ACTIVATION_HANDLES",
    "attention_macs",
    "flop_count_analysis",
    "activation_count_analysis",
]


def attention_macs(q_shape: Sequence[int], k_shape: Sequence[int], v_shape: Sequence[int]) -> int:
    """MACs of softmax(q k^T) v without the softmax: q (..., L, E), k (..., S, E), v (..., S, Ev).

    q @ k^T costs (...)*L*S*E and attn @ v (...)*L*S*Ev, with (...) the query's leading dims
    (e.g. batch, heads). A causal mask is not discounted: the kernels compute the full products.
    """
    rows = prod(q_shape[:-1])  # (...) * L
    src_len = k_shape[-2]
    return rows * src_len * (q_shape[-1] + v_shape[-1])


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> Counter:
    """``aten::scaled_dot_product_attention(query, key, value, attn_mask, ...)``."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    return Counter({"attention": attention_macs(q, k, v)})


def baddbmm_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``aten::baddbmm(self, batch1 (B, n, k), batch2 (B, k, m), beta, alpha)``: the bmm part,
    B*n*k*m; the scaled addition of ``self`` is elementwise and not counted."""
    b, n, k = get_shape(inputs[1])
    m = get_shape(inputs[2])[-1]
    return b * n * k * m


def no_flop_jit(inputs: List[Any], outputs: List[Any]) -> Counter:
    """Counted as nothing (not even a zero entry in the per-operator breakdown)."""
    return Counter()


def matmul_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``aten::matmul`` with numpy broadcasting and 1-D operands (fvcore's handle asserts on those
    and counts only the first operand's batch dims)."""
    a, b = (list(get_shape(x)) for x in inputs[:2])
    a = [1] + a if len(a) == 1 else a  # (k,) @ ... behaves as (1, k)
    b = b + [1] if len(b) == 1 else b  # ... @ (k,) behaves as (k, 1)
    batch = torch.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return prod(batch) * a[-2] * a[-1] * b[-1]


def native_mha_flop_jit(inputs: List[Any], outputs: List[Any]) -> Counter:
    """``aten::_native_multi_head_attention(query (B, L, E), key (B, S, E), value (B, S, E),
    embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias, mask, ...)``.

    Projections: q, k, v (E x E each, on L, S, S tokens) and the output (E x E on L tokens), under
    "linear" as for the slow path; products: 2 * B*L*S*E (heads * head_dim = E) under "attention".
    """
    b, tgt_len, embed_dim = get_shape(inputs[0])
    src_len = get_shape(inputs[1])[1]
    linear = b * (2 * tgt_len + 2 * src_len) * embed_dim * embed_dim
    attention = attention_macs(
        (b, tgt_len, embed_dim), (b, src_len, embed_dim), (b, src_len, embed_dim)
    )
    return Counter({"linear": linear, "attention": attention})


ATTENTION_FLOP_HANDLES = {
    "aten::scaled_dot_product_attention": sdpa_flop_jit,
    "aten::baddbmm": baddbmm_flop_jit,
    "aten::matmul": matmul_flop_jit,
    "aten::_native_multi_head_attention": native_mha_flop_jit,
}

# Activations = output elements of each counted op, as fvcore does for conv/linear/bmm.
ATTENTION_ACTIVATION_HANDLES = {
    "aten::scaled_dot_product_attention": generic_activation_jit(),
    "aten::baddbmm": generic_activation_jit(),
    "aten::_native_multi_head_attention": generic_activation_jit(),
}


def flop_count_analysis(
    model: torch.nn.Module, inputs: List[Dict], attention: bool = True
) -> FlopCountAnalysis:
    """Detectron2's FlopCountAnalysis (fvcore, detectron2's elementwise ops and batch norm ignored)
    of ``model`` on ``inputs`` (a detectron2 batch, list of dicts with "image"), with the attention
    handles unless ``attention`` is False. The model should be in eval mode."""
    analysis = FlopCountAnalysis(model, inputs).set_op_handle("aten::batch_norm", no_flop_jit)
    if attention:
        analysis.set_op_handle(**ATTENTION_FLOP_HANDLES)
    return analysis


def activation_count_analysis(
    model: torch.nn.Module, inputs: List[Dict]
) -> ActivationCountAnalysis:
    """fvcore's ActivationCountAnalysis of a detectron2 model, with the attention handles."""
    wrapper = TracingAdapter(model, inputs, allow_non_tensor=True)
    analysis = ActivationCountAnalysis(wrapper, wrapper.flattened_inputs)
    return analysis.set_op_handle(**ATTENTION_ACTIVATION_HANDLES)
