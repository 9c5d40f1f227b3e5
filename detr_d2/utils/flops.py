"""fvcore op handles for what a traced ``nn.MultiheadAttention`` of current PyTorch reaches and
fvcore's defaults miss: ``scaled_dot_product_attention`` (DETR's path), ``baddbmm`` (with
``need_weights`` and a mask), ``_native_multi_head_attention`` (the fused eval fast path) and
``matmul`` with broadcasting. One multiply-add (MAC) counts as one flop, as the DETR paper's GFLOPs;
the attention products (q k^T, attn v) are reported under the operator name "attention"."""

from collections import Counter
from math import prod
from typing import Any, Dict, List, Sequence

import torch
from detectron2.export import TracingAdapter
from detectron2.utils.analysis import FlopCountAnalysis
from fvcore.nn import ActivationCountAnalysis
from fvcore.nn.jit_handles import bmm_flop_jit, generic_activation_jit, get_shape


def attention_macs(q_shape: Sequence[int], k_shape: Sequence[int], v_shape: Sequence[int]) -> int:
    """MACs of softmax(q k^T) v without the softmax: q (..., L, E), k (..., S, E), v (..., S, Ev)
    cost (...)*L*S*(E + Ev). A causal mask is not discounted: the kernels compute it all."""
    return prod(q_shape[:-1]) * k_shape[-2] * (q_shape[-1] + v_shape[-1])


def matmul_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``aten::matmul`` with numpy broadcasting and 1-D operands (fvcore's handle asserts on those
    and counts only the first operand's batch dims)."""
    a, b = (list(get_shape(x)) for x in inputs[:2])
    a = [1] + a if len(a) == 1 else a  # (k,) @ ... behaves as (1, k)
    b = b + [1] if len(b) == 1 else b  # ... @ (k,) behaves as (k, 1)
    batch = torch.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return prod(batch) * a[-2] * a[-1] * b[-1]


def native_mha_flop_jit(inputs: List[Any], outputs: List[Any]) -> Counter:
    """``aten::_native_multi_head_attention(query (B, L, E), key (B, S, E), value, ...)``: the q,
    k, v and output projections (E x E on L, S, S, L tokens) under "linear", as for the slow path,
    and the products (2 B*L*S*E) under "attention"."""
    b, tgt_len, embed_dim = get_shape(inputs[0])
    src_len = get_shape(inputs[1])[1]
    linear = b * (2 * tgt_len + 2 * src_len) * embed_dim * embed_dim
    kv = (b, src_len, embed_dim)
    return Counter({"linear": linear, "attention": attention_macs((b, tgt_len, embed_dim), kv, kv)})


ATTENTION_FLOP_HANDLES = {
    # scaled_dot_product_attention(query, key, value, attn_mask, ...)
    "aten::scaled_dot_product_attention": lambda inputs, outputs: Counter(
        {"attention": attention_macs(*(get_shape(x) for x in inputs[:3]))}
    ),
    # baddbmm(self, batch1, batch2, beta, alpha): bmm's count (the addition is elementwise)
    "aten::baddbmm": lambda inputs, outputs: bmm_flop_jit(inputs[1:3], outputs),
    "aten::matmul": matmul_flop_jit,
    "aten::_native_multi_head_attention": native_mha_flop_jit,
}


def flop_count_analysis(model, inputs: List[Dict], attention: bool = True) -> FlopCountAnalysis:
    """Detectron2's FlopCountAnalysis of ``model`` (in eval mode) on ``inputs`` (a detectron2
    batch), with the attention handles unless ``attention`` is False. Batch norm is not counted
    (it folds into the convolution at inference): detectron2 lists it among its ignored ops, but
    ``set_op_handle(None)`` cannot drop a default fvcore handle, hence one that counts nothing.
    Its warnings are off: the caller reports unsupported ops (once, not per trace)."""
    analysis = FlopCountAnalysis(model, inputs).tracer_warnings("none")
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analysis.set_op_handle("aten::batch_norm", lambda *_: Counter())
    if attention:
        analysis.set_op_handle(**ATTENTION_FLOP_HANDLES)
    return analysis


def activation_count_analysis(model, inputs: List[Dict]) -> ActivationCountAnalysis:
    """fvcore's ActivationCountAnalysis of a detectron2 model: output elements of each counted op,
    attention included; warnings off, as above."""
    wrapper = TracingAdapter(model, inputs, allow_non_tensor=True)
    handles = ("scaled_dot_product_attention", "baddbmm", "_native_multi_head_attention")
    analysis = ActivationCountAnalysis(wrapper, wrapper.flattened_inputs).tracer_warnings("none")
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analysis.set_op_handle(**{f"aten::{op}": generic_activation_jit() for op in handles})
