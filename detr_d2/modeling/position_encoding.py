"""Spatial positional encodings (paper appendix A.4): padding mask (B, H, W) (True = padded) ->
(B, d, H, W). Channel order as the original's: sine is (y, x), learned is (x, y)."""

import math

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """Fixed 2-D sine encoding of the running count of valid pixels (independent of the padding),
    with ``normalize`` rescaled to (0, scale] over each image's valid extent."""

    def __init__(self, num_pos_feats=128, temperature=10000.0, normalize=True, scale=2 * math.pi):
        super().__init__()
        self.num_pos_feats = num_pos_feats  # channels per axis: d / 2
        self.temperature, self.normalize, self.scale = temperature, normalize, scale

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """Returns (B, 2 * num_pos_feats, H, W) float32."""
        valid = (~mask).to(torch.float32)
        y = valid.cumsum(1)  # 1-based row index among valid pixels
        x = valid.cumsum(2)
        if self.normalize:
            eps = 1e-6
            y = y / (y[:, -1:, :] + eps) * self.scale
            x = x / (x[:, :, -1:] + eps) * self.scale
        # frequency of channel pair k: temperature^(2k / num_pos_feats), shared by its sin and cos
        k = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        freq = self.temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_y = self._interleave(y[..., None] / freq)
        pos_x = self._interleave(x[..., None] / freq)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    @staticmethod
    def _interleave(t: torch.Tensor) -> torch.Tensor:
        """(B, H, W, F) angles -> (B, H, W, F): sin of even channels, cos of odd ones."""
        return torch.stack((t[..., 0::2].sin(), t[..., 1::2].cos()), dim=4).flatten(3)


class PositionEmbeddingLearned(nn.Module):
    """Learned absolute encoding: one embedding per row and per column (up to ``max_size``)."""

    def __init__(self, num_pos_feats: int = 128, max_size: int = 50):
        super().__init__()
        self.row_embed = nn.Embedding(max_size, num_pos_feats)
        self.col_embed = nn.Embedding(max_size, num_pos_feats)
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """Returns (B, 2 * num_pos_feats, H, W); rows/cols beyond max_size fail."""
        b, h, w = mask.shape
        cols = self.col_embed(torch.arange(w, device=mask.device))  # (W, F)
        rows = self.row_embed(torch.arange(h, device=mask.device))  # (H, F)
        pos = torch.cat((cols[None].expand(h, w, -1), rows[:, None].expand(h, w, -1)), dim=-1)
        return pos.permute(2, 0, 1)[None].expand(b, -1, -1, -1)


class NoPositionEmbedding(nn.Module):
    """No spatial encoding (paper Table 3, first row): zeros."""

    def __init__(self, num_pos_feats: int = 128):
        super().__init__()
        self.num_pos_feats = num_pos_feats

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        b, h, w = mask.shape
        return mask.new_zeros((b, 2 * self.num_pos_feats, h, w), dtype=torch.float32)


def build_position_encoding(kind: str, hidden_dim: int) -> nn.Module:
    """kind: MODEL.DETR.POSITION_EMBEDDING ("sine" | "learned" | "none")."""
    table = {
        "sine": PositionEmbeddingSine,
        "learned": PositionEmbeddingLearned,
        "none": NoPositionEmbedding,
    }
    if kind not in table:
        raise ValueError(f"MODEL.DETR.POSITION_EMBEDDING {kind!r} is not one of {sorted(table)}")
    return table[kind](hidden_dim // 2)
