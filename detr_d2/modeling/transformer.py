"""DETR's encoder-decoder transformer (paper Sec. 3.2, appendix A.3). Sequences are (S, B, d),
``nn.MultiheadAttention``'s default, so submodule names and weights match the original."""

import copy
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _with_pos(x: Tensor, pos: Optional[Tensor]) -> Tensor:
    return x if pos is None else x + pos


def _residual(x: Tensor, norm: nn.Module, dropout: nn.Module, sublayer, pre: bool) -> Tensor:
    """One residual sub-layer, pre-norm or post-norm (the paper)."""
    if pre:
        return x + dropout(sublayer(norm(x)))
    return norm(x + dropout(sublayer(x)))


def _feed_forward_modules(d_model: int, dim_feedforward: int, dropout: float):
    """``linear1``, ``dropout``, ``linear2``, then the residual's LayerNorm and dropout."""
    linear1, linear2 = nn.Linear(d_model, dim_feedforward), nn.Linear(dim_feedforward, d_model)
    return linear1, nn.Dropout(dropout), linear2, nn.LayerNorm(d_model), nn.Dropout(dropout)


def _feed_forward(layer: nn.Module, x: Tensor) -> Tensor:
    return layer.linear2(layer.dropout(F.relu(layer.linear1(x))))


class TransformerEncoderLayer(nn.Module):
    """Self-attention, then (unless ``use_ffn`` is False, paper Table 4) the feed-forward
    network, each with its residual, LayerNorm and dropout."""

    def __init__(self, d_model, nhead, dim_feedforward, dropout, normalize_before, use_ffn):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        if use_ffn:
            self.linear1, self.dropout, self.linear2, self.norm2, self.dropout2 = (
                _feed_forward_modules(d_model, dim_feedforward, dropout)
            )
        self.normalize_before, self.use_ffn = normalize_before, use_ffn

    def forward(self, src: Tensor, key_padding_mask: Tensor, pos: Optional[Tensor]) -> Tensor:
        """src, pos: (HW, B, d); key_padding_mask: (B, HW) True at padding; pos may be None.
        Returns (HW, B, d)."""

        def self_attention(x):
            q = k = _with_pos(x, pos)
            return self.self_attn(q, k, x, key_padding_mask=key_padding_mask, need_weights=False)[0]

        pre = self.normalize_before
        src = _residual(src, self.norm1, self.dropout1, self_attention, pre)
        if self.use_ffn:
            src = _residual(src, self.norm2, self.dropout2, lambda x: _feed_forward(self, x), pre)
        return src


class TransformerDecoderLayer(nn.Module):
    """Self-attention among the queries, cross-attention to the memory, then (unless ``use_ffn``
    is False) the feed-forward network, each with its residual, LayerNorm and dropout."""

    def __init__(self, d_model, nhead, dim_feedforward, dropout, normalize_before, use_ffn):
        super().__init__()
        self.normalize_before, self.use_ffn = normalize_before, use_ffn
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)
        if use_ffn:
            self.linear1, self.dropout, self.linear2, self.norm3, self.dropout3 = (
                _feed_forward_modules(d_model, dim_feedforward, dropout)
            )

    def forward(self, tgt, memory, memory_key_padding_mask, pos, query_pos) -> Tensor:
        """tgt, query_pos: (N, B, d); memory, pos: (HW, B, d); memory_key_padding_mask: (B, HW)
        True at padding; pos / query_pos may be None. Returns (N, B, d)."""

        def self_attention(x):
            q = k = _with_pos(x, query_pos)
            return self.self_attn(q, k, x, need_weights=False)[0]

        def cross_attention(x):
            q, k, mask = _with_pos(x, query_pos), _with_pos(memory, pos), memory_key_padding_mask
            return self.multihead_attn(q, k, memory, key_padding_mask=mask, need_weights=False)[0]

        pre = self.normalize_before
        tgt = _residual(tgt, self.norm1, self.dropout1, self_attention, pre)
        tgt = _residual(tgt, self.norm2, self.dropout2, cross_attention, pre)
        if self.use_ffn:
            tgt = _residual(tgt, self.norm3, self.dropout3, lambda x: _feed_forward(self, x), pre)
        return tgt


class LayerStack(nn.Module):
    """``num_layers`` copies of ``layer`` and a LayerNorm (the encoder's: final, pre-norm only;
    the decoder's: applied to every layer's output), run by :class:`Transformer`."""

    def __init__(self, layer: nn.Module, num_layers: int, norm: Optional[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(num_layers)])
        self.norm = norm


class Transformer(nn.Module):
    """Encoder-decoder over a flattened feature map, decoding N object queries in parallel.

    Args:
        pos_at: "every" adds the spatial encoding to the queries and keys of every attention
            layer over the image (paper), "input" only to the encoder input (paper Table 3).
        query_pos_at: "every" adds the object queries to the queries (and self-attention keys) of
            every decoder layer (paper), "input" feeds them only as the decoder's input.
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        normalize_before: bool = False,
        use_ffn: bool = True,
        pos_at: str = "every",
        query_pos_at: str = "every",
    ):
        super().__init__()
        for key, value in (("POSITION_EMBEDDING_AT", pos_at), ("QUERY_POS_AT", query_pos_at)):
            if value not in ("every", "input"):
                raise ValueError(f"MODEL.DETR.{key} must be 'every' or 'input', got {value!r}")
        args = (d_model, nhead, dim_feedforward, dropout, normalize_before, use_ffn)
        encoder_norm = nn.LayerNorm(d_model) if normalize_before else None
        self.encoder = LayerStack(TransformerEncoderLayer(*args), num_encoder_layers, encoder_norm)
        decoder_norm = nn.LayerNorm(d_model)
        self.decoder = LayerStack(TransformerDecoderLayer(*args), num_decoder_layers, decoder_norm)
        self.d_model, self.pos_at, self.query_pos_at = d_model, pos_at, query_pos_at
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src: Tensor, mask: Tensor, query_embed: Tensor, pos_embed: Tensor):
        """src: (B, d, H, W) projected features; mask: (B, H, W) bool, True at padding;
        query_embed: (N, d); pos_embed: (B, d, H, W). Returns hs (L, B, N, d), every decoder
        layer's output, and the memory (B, d, H, W)."""
        b, c, h, w = src.shape
        src = src.flatten(2).permute(2, 0, 1)  # (HW, B, d)
        pos = pos_embed.flatten(2).permute(2, 0, 1)
        mask = mask.flatten(1)
        query = query_embed.unsqueeze(1).expand(-1, b, -1)  # (N, B, d)
        if self.pos_at == "input":
            src, pos = src + pos, None
        if self.query_pos_at == "input":
            tgt, query_pos = query, None
        else:
            tgt, query_pos = torch.zeros_like(query), query
        for layer in self.encoder.layers:
            src = layer(src, mask, pos)
        memory = src if self.encoder.norm is None else self.encoder.norm(src)
        hs = []
        for layer in self.decoder.layers:
            tgt = layer(tgt, memory, mask, pos, query_pos)
            hs.append(self.decoder.norm(tgt))
        return torch.stack(hs).transpose(1, 2), memory.permute(1, 2, 0).view(b, c, h, w)
