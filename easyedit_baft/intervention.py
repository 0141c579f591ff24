"""The BaFT intervention: a gated update of a hidden state inside a rank-r subspace.

    Phi(h) = h + R^T ( g(h) * (W h + b - R h) )
    g(h)   = sigmoid( (U (h - mu) + c) / tau ),  h RMS-normalised first when gate_input_norm is on
    mu     = the mean of (normalised) h over unrelated text at this layer with gate_center, else 0
    g_i(h) = 0 for a frozen basis i whose g_i(h) <= gate_floor (the trainable block stays smooth)

R (r x d) has orthonormal rows within each block of bases. With g == 1 this is LoReFT (Wu et al., 2024).
Continual editing grows the rank in blocks: grow(k) freezes every basis so far and adds k trainable ones,
so later edits cannot overwrite what earlier edits wrote. A new block is kept orthogonal to the frozen
bases while they fill at most ORTHOGONAL_SHARE of the hidden size; past that it is free (in the
last directions left, edits stopped holding). Each block's update is computed from h itself, so blocks add
up whatever their directions, and the gates keep them apart.
This module is math only: it knows nothing of models, layers or training.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

# Frozen bases (after grow), as buffers: R, W, b, U, c of every basis before the trainable block.
FROZEN_BUFFERS = ("frozen_rotation", "frozen_source_weight", "frozen_source_bias",
                  "frozen_gate_weight", "frozen_gate_bias")
# New blocks stay orthogonal to the frozen bases up to this share of the hidden size: orthogonal
# blocks kept locality better early in a sequence, but in the last quarter of directions left
# sequential edits stopped holding.
ORTHOGONAL_SHARE = 0.75
# The trainable block's parameters, in the same order.
BLOCK_PARAMETERS = ("rotation", "source_weight", "source_bias", "gate_weight", "gate_bias")


def loreft(h: torch.Tensor, R: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The LoReFT update h + R^T (W h + b - R h), written as in the paper (reference for tests)."""
    return h + (h @ W.T + b - h @ R.T) @ R


def orthonormal_rows(rows: torch.Tensor) -> torch.Tensor:
    """Orthonormal rows spanning the same space, by QR with signs fixed (so it is deterministic).

    Computed in float64 on the CPU (r x d is small; MPS has no float64), returned where rows live.
    """
    q, r = torch.linalg.qr(rows.detach().to("cpu", torch.float64).T)
    signs = torch.sign(torch.diagonal(r)).masked_fill(torch.diagonal(r) == 0, 1.0)
    return (q * signs).T.to(device=rows.device, dtype=rows.dtype)


class BaFTIntervention(nn.Module):
    """One layer's BaFT update; parameters are kept in float32 whatever the model's dtype."""

    def __init__(
        self,
        hidden_size: int,
        rank: int,
        temperature: float = 1.0,
        gate_init_bias: float = -3.0,
        gate_init_std: float = 0.0,
        gate_mode: str = "learned",
        generator: torch.Generator | None = None,
        gate_input_norm: bool = True,
        gate_floor: float = 0.0,
        gate_center: bool = False,
    ):
        super().__init__()
        if rank > hidden_size:
            raise ValueError(f"rank={rank} exceeds hidden_size={hidden_size}; use rank <= {hidden_size}")
        self.hidden_size = hidden_size
        self.temperature, self.gate_mode = float(temperature), gate_mode
        self.gate_init_bias, self.gate_init_std = gate_init_bias, gate_init_std
        self.gate_input_norm, self.gate_floor = gate_input_norm, float(gate_floor)
        self.n_frozen = 0  # bases frozen by grow(); the trainable block follows them
        # mu, set once by set_gate_center; None (and absent from the state dict) without gate_center.
        self.register_buffer("gate_center", torch.zeros(hidden_size) if gate_center else None)
        for name in FROZEN_BUFFERS:
            self.register_buffer(name, None)
        self._set_frozen(self._zero_frozen(0))
        self._new_block(rank, generator)
        # How strongly past edits opened each basis (incremental load balancing).
        self.register_buffer("basis_usage", torch.zeros(rank))
        self.last_gates: torch.Tensor | None = None  # set while record_gates is on
        self.record_gates = False

    def _zero_frozen(self, n: int) -> list:
        """Zero R, W, b, U, c for n frozen bases, in FROZEN_BUFFERS order."""
        d = self.hidden_size
        return [torch.zeros(n, d), torch.zeros(n, d), torch.zeros(n), torch.zeros(n, d), torch.zeros(n)]

    def _set_frozen(self, tensors) -> None:
        for name, tensor in zip(FROZEN_BUFFERS, tensors):
            setattr(self, name, tensor)
        self.n_frozen = tensors[0].shape[0]

    def _new_block(self, rank: int, generator: torch.Generator | None) -> None:
        """A fresh trainable block of `rank` orthonormal bases whose update is exactly zero."""
        d = self.hidden_size
        if rank > d:
            raise ValueError(f"grow_rank={rank} exceeds hidden_size={d}: a block holds at most {d} orthonormal "
                             f"bases; use grow_rank <= {d}")
        if generator is None:  # placeholder values (a load overwrites them); leave the global RNG alone
            generator = torch.Generator().manual_seed(0)
        rotation = self._outside_frozen(torch.randn(rank, d, generator=generator))
        gate_weight = torch.randn(rank, d, generator=generator) * self.gate_init_std
        self.rotation = nn.Parameter(rotation)
        # W = R and b = 0 make the update exactly zero: an untrained edit changes nothing.
        self.source_weight = nn.Parameter(rotation.clone())
        self.source_bias = nn.Parameter(torch.zeros(rank))
        self.gate_weight = nn.Parameter(gate_weight)
        self.gate_bias = nn.Parameter(torch.full((rank,), float(self.gate_init_bias)))

    def _outside_frozen(self, rows: torch.Tensor) -> torch.Tensor:
        """Orthonormal rows, orthogonal to the frozen bases while those and the rows fill at most
        ORTHOGONAL_SHARE of the hidden size."""
        frozen = self.frozen_rotation
        if 0 < frozen.shape[0] and frozen.shape[0] + rows.shape[0] <= ORTHOGONAL_SHARE * self.hidden_size:
            frozen = frozen.to(rows)
            rows = rows - (rows @ frozen.T) @ frozen
        return orthonormal_rows(rows)

    @property
    def block_rank(self) -> int:
        return self.rotation.shape[0]

    @property
    def rank(self) -> int:
        return self.n_frozen + self.block_rank

    def _block(self) -> Tuple[torch.Tensor, ...]:
        return tuple(getattr(self, name) for name in BLOCK_PARAMETERS)

    def _bases(self, trainable_only: bool = False) -> Tuple[torch.Tensor, ...]:
        """R, W, b, U, c of the trainable block, or of every basis (frozen first)."""
        block = self._block()
        if self.n_frozen == 0 or trainable_only:
            return block
        frozen = [getattr(self, name) for name in FROZEN_BUFFERS]
        return tuple(torch.cat([f, t]) for f, t in zip(frozen, block))

    @property
    def R(self) -> torch.Tensor:
        return self._bases()[0]

    def gate_input(self, h: torch.Tensor) -> torch.Tensor:
        """What U reads before centering: h, or h / rms(h) with gate_input_norm."""
        if not self.gate_input_norm:
            return h
        # Residual-stream norms vary by orders of magnitude across positions and layers;
        # gating on the direction keeps the sigmoid out of saturation.
        return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)

    @torch.no_grad()
    def set_gate_center(self, mu: torch.Tensor) -> None:
        if self.gate_center is None:
            raise ValueError("set_gate_center on an intervention built with gate_center=False")
        self.gate_center.copy_(mu.to(self.gate_center))

    def _gates(self, h: torch.Tensor, U: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.gate_mode == "ones":
            return torch.ones(*h.shape[:-1], U.shape[0], dtype=h.dtype, device=h.device)
        x = self.gate_input(h)
        if self.gate_center is not None:
            x = x - self.gate_center
        return torch.sigmoid((x @ U.T + c) / self.temperature)

    def _closed_below_floor(self, g: torch.Tensor, trainable_only: bool) -> torch.Tensor:
        # Many frozen edits each barely open add up to a shift of every input; shut them exactly.
        if self.gate_floor <= 0 or trainable_only or self.n_frozen == 0:
            return g
        frozen = g[..., :self.n_frozen]
        return torch.cat([frozen * (frozen > self.gate_floor), g[..., self.n_frozen:]], -1)

    def gates(self, h: torch.Tensor, trainable_only: bool = False) -> torch.Tensor:
        """g(h) in [0, 1)^r for every position of h (..., d); trainable_only: the trainable block's."""
        _, _, _, U, c = self._bases(trainable_only)
        return self._closed_below_floor(self._gates(h.to(torch.float32), U, c), trainable_only)

    def change(self, h: torch.Tensor, record: bool = False, trainable_only: bool = False) -> torch.Tensor:
        """Phi(h) - h in float32: R^T (g(h) * (W h + b - R h)); trainable_only: the trainable block's part."""
        x = h.to(torch.float32)
        R, W, b, U, c = self._bases(trainable_only)
        # (W - R) h + b equals W h + b - R h, and is exactly zero when W == R and b == 0.
        coords = x @ (W - R).T + b
        g = self._closed_below_floor(self._gates(x, U, c), trainable_only)
        if record:
            self.last_gates = g
        return (g * coords) @ R

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return (h.to(torch.float32) + self.change(h, record=self.record_gates)).to(h.dtype)

    @torch.no_grad()
    def retract(self) -> None:
        """Put the trainable block's R back on orthonormal rows (the optimiser moves it freely)."""
        self.rotation.copy_(self._outside_frozen(self.rotation))

    @torch.no_grad()
    def grow(self, rank: int, generator: torch.Generator | None = None) -> None:
        """Freeze every basis so far and add `rank` fresh trainable ones (identity at init)."""
        device = self.rotation.device
        self._set_frozen([t.detach().clone() for t in self._bases()])
        for name in BLOCK_PARAMETERS:
            delattr(self, name)
        self._new_block(rank, generator)
        self.basis_usage = torch.cat([self.basis_usage, torch.zeros(rank, device=self.basis_usage.device)])
        self.to(device)

    def snapshot(self) -> dict:
        """What an edit may change, to undo it: the block and the usage are copied, the frozen
        tensors only referenced (grow replaces them, nothing writes into them)."""
        return {"frozen": [getattr(self, name) for name in FROZEN_BUFFERS],
                "block": [t.detach().clone() for t in self._block()],
                "basis_usage": self.basis_usage.clone()}

    @torch.no_grad()
    def restore(self, snap: dict) -> None:
        self._set_frozen(snap["frozen"])
        for name, tensor in zip(BLOCK_PARAMETERS, snap["block"]):
            setattr(self, name, nn.Parameter(tensor.clone()))
        self.basis_usage = snap["basis_usage"].clone()

    def make_room(self, n_frozen: int, block_rank: int) -> None:
        """Shape the module for n_frozen frozen bases and a block of block_rank (values set by the caller)."""
        self._set_frozen(self._zero_frozen(n_frozen))
        for name in BLOCK_PARAMETERS:
            delattr(self, name)
        self._new_block(block_rank, None)
        self.basis_usage = torch.zeros(n_frozen + block_rank)

    def num_parameters(self) -> int:
        """Trainable numbers: R, W and U (r x d each), b and c (r each)."""
        return 3 * self.block_rank * self.hidden_size + 2 * self.block_rank
