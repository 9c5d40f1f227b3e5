"""DETR's mask head (paper Sec. 4.4, Fig. 8): per-query attention maps over the encoder memory,
refined by a small FPN-like convolutional head into one mask logit map per query at stride 4."""

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MultiHeadAttentionMap(nn.Module):
    """Attention weights (no values) of each query over every position, for M heads (the
    official submodule names)."""

    def __init__(self, query_dim: int, hidden_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q_linear = nn.Linear(query_dim, hidden_dim)
        self.k_linear = nn.Linear(query_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.scale = (hidden_dim / num_heads) ** -0.5
        for layer in (self.q_linear, self.k_linear):
            nn.init.zeros_(layer.bias)
            nn.init.xavier_uniform_(layer.weight)

    def forward(self, query: Tensor, memory: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """query: (B, N, d) final decoder outputs; memory: (B, d, h, w); mask: (B, h, w) bool, True
        at padding (zero weight). Returns (B, N, M, h, w) weights; as in the released model one
        softmax normalizes each query's weights over heads *and* positions jointly."""
        b, n, _ = query.shape
        h, w = memory.shape[-2:]
        q = self.q_linear(query).view(b, n, self.num_heads, -1)
        # the key projection is a 1x1 convolution on the memory map: (B, M, d/M, h, w)
        k = F.conv2d(memory, self.k_linear.weight[:, :, None, None], self.k_linear.bias)
        k = k.view(b, self.num_heads, -1, h, w)
        weights = torch.einsum("bnmc,bmchw->bnmhw", q * self.scale, k)
        if mask is not None:
            weights = weights.masked_fill(mask[:, None, None], float("-inf"))
        weights = weights.flatten(2).softmax(-1).view(b, n, self.num_heads, h, w)
        return self.dropout(weights)


class MaskHead(nn.Module):
    """FPN-like head: the projected features (repeated per query) and each query's M attention
    maps go through two conv-GN-ReLU blocks (``lay1``, ``lay2``), then three times: upsample
    (nearest) to the next finer backbone feature, add it through a 1x1 ``adapter``, conv-GN-ReLU
    (``lay3``..``lay5``); ``out_lay`` predicts 1 channel. Widths halve from d / 2 to d / 16.

    Args: in_channels d + M; fpn_channels: the 3 backbone features' channels, coarse to fine;
    context_dim d; num_groups: GroupNorm groups (8 in DETR; d / 16 must be a multiple of it).
    """

    def __init__(self, in_channels: int, fpn_channels: List[int], context_dim: int, num_groups=8):
        super().__init__()
        if len(fpn_channels) != 3:
            raise ValueError(f"MaskHead adds exactly 3 backbone features, got {len(fpn_channels)}")
        dims = [in_channels] + [context_dim // 2**i for i in range(1, 5)]  # output of lay1..5
        for i, (c_in, c_out) in enumerate(zip([in_channels] + dims[:4], dims), start=1):
            setattr(self, f"lay{i}", nn.Conv2d(c_in, c_out, 3, padding=1))
            setattr(self, f"gn{i}", nn.GroupNorm(num_groups, c_out))
        for i, c in enumerate(fpn_channels):
            setattr(self, f"adapter{i + 1}", nn.Conv2d(c, dims[i + 1], 1))
        self.out_lay = nn.Conv2d(dims[4], 1, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def _block(self, i: int, x: Tensor) -> Tensor:
        return F.relu(getattr(self, f"gn{i}")(getattr(self, f"lay{i}")(x)))

    def forward(self, features: Tensor, attention: Tensor, fpn_features: List[Tensor]) -> Tensor:
        """features: (B, d, h, w) the transformer's input; attention: (B, N, M, h, w);
        fpn_features: 3 maps (B, C_i, H_i, W_i), coarse to fine. Returns (B, N, H_3, W_3)."""
        b, n = attention.shape[:2]
        x = torch.cat([features.repeat_interleave(n, dim=0), attention.flatten(0, 1)], dim=1)
        x = self._block(2, self._block(1, x))
        for i, fpn in enumerate(fpn_features):
            fpn = getattr(self, f"adapter{i + 1}")(fpn).repeat_interleave(n, dim=0)
            x = self._block(i + 3, fpn + F.interpolate(x, size=fpn.shape[-2:], mode="nearest"))
        x = self.out_lay(x)
        return x.reshape(b, n, *x.shape[-2:])
