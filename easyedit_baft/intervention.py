"""The BaFT intervention: a gated update of a hidden state inside a rank-r subspace.

    Phi(h) = h + R^T ( g(h) * (W h + b - R h) )
    g(h)   = sigmoid( (U h + c) / tau ),  h RMS-normalised first when gate_input_norm is on

R (r x d) has orthonormal rows. With g == 1 this is LoReFT (Wu et al., 2024).
Continual editing may grow the rank: grow(k) freezes every basis so far and adds k trainable ones,
orthogonal to the frozen ones, so later edits cannot overwrite what earlier edits wrote.
This module is math only: it knows nothing of models, layers or training.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn
from torch.nn.utils import parametrizations

# Frozen bases (after grow), as buffers: R, W, b, U, c of every basis before the trainable block.
FROZEN_BUFFERS = ("frozen_rotation", "frozen_source_weight", "frozen_source_bias",
                  "frozen_gate_weight", "frozen_gate_bias")


def loreft(h: torch.Tensor, R: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The LoReFT update h + R^T (W h + b - R h), written as in the paper (reference for tests)."""
    return h + (h @ W.T + b - h @ R.T) @ R


def orthogonal_complement(rows: torch.Tensor) -> torch.Tensor:
    """Orthonormal rows spanning the space orthogonal to `rows` (m x d, orthonormal): (d - m) x d."""
    _, _, vh = torch.linalg.svd(rows.double(), full_matrices=True)
    return vh[rows.shape[0]:].to(rows.dtype)


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
    ):
        super().__init__()
        if rank > hidden_size:
            raise ValueError(f"rank={rank} exceeds hidden_size={hidden_size}; use rank <= {hidden_size}")
        self.hidden_size = hidden_size
        self.temperature, self.gate_mode = float(temperature), gate_mode
        self.gate_init_bias, self.gate_init_std = gate_init_bias, gate_init_std
        self.gate_input_norm = gate_input_norm
        self.n_frozen = 0  # bases frozen by grow(); the trainable block follows them
        self._build_block(rank, None, generator)
        # How strongly past edits opened each basis (incremental load balancing).
        self.register_buffer("basis_usage", torch.zeros(rank))
        self.last_gates: torch.Tensor | None = None  # set while record_gates is on
        self.record_gates = False

    def _build_block(self, rank: int, complement: torch.Tensor | None, generator: torch.Generator | None) -> None:
        """A fresh trainable block of `rank` bases, inside the row space of `complement` (None: all of R^d)."""
        # nn.Linear's default init and the parametrization draw from the global RNG: fork it, so that
        # building (at the first edit, at grow, at load) neither depends on nor advances it.
        with torch.random.fork_rng(devices=[]):
            inner = self.hidden_size if complement is None else complement.shape[0]
            rotation = nn.Linear(inner, rank, bias=False)
            nn.init.orthogonal_(rotation.weight, generator=generator)
            # The parametrization keeps R's rows orthonormal through every optimiser step; it completes
            # R to a square matrix with the global RNG, so seed that from `generator`.
            if generator is not None:
                torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            self.rotation = parametrizations.orthogonal(rotation)
            self.source = nn.Linear(self.hidden_size, rank)  # W, b: the learned target coordinates
            self.gate_proj = nn.Linear(self.hidden_size, rank)  # U, c: one gate per basis
        if complement is not None:
            # The block's R is Q @ complement: orthonormal rows, orthogonal to every frozen basis.
            self.register_buffer("complement", complement)
        self.block_rank = rank
        with torch.no_grad():
            # W = R and b = 0 make the update exactly zero: an untrained edit changes nothing.
            self.source.weight.copy_(self.block_R)
            self.source.bias.zero_()
            self.gate_proj.weight.normal_(0.0, self.gate_init_std, generator=generator)
            self.gate_proj.bias.fill_(self.gate_init_bias)

    @property
    def rank(self) -> int:
        return self.n_frozen + self.block_rank

    @property
    def block_R(self) -> torch.Tensor:
        """The trainable block's rows of R."""
        complement = getattr(self, "complement", None)
        return self.rotation.weight if complement is None else self.rotation.weight @ complement

    def _bases(self, trainable_only: bool = False) -> Tuple[torch.Tensor, ...]:
        """R, W, b, U, c of the trainable block, or of every basis (frozen first)."""
        block = (self.block_R, self.source.weight, self.source.bias, self.gate_proj.weight, self.gate_proj.bias)
        if self.n_frozen == 0 or trainable_only:
            return block
        frozen = [getattr(self, name) for name in FROZEN_BUFFERS]
        return tuple(torch.cat([f, t]) for f, t in zip(frozen, block))

    @property
    def R(self) -> torch.Tensor:
        return self._bases()[0]

    def _gates(self, h: torch.Tensor, U: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.gate_mode == "ones":
            return torch.ones(*h.shape[:-1], U.shape[0], dtype=h.dtype, device=h.device)
        if self.gate_input_norm:
            # Residual-stream norms vary by orders of magnitude across positions and layers;
            # gating on the direction keeps the sigmoid out of saturation.
            h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        return torch.sigmoid((h @ U.T + c) / self.temperature)

    def gates(self, h: torch.Tensor, trainable_only: bool = False) -> torch.Tensor:
        """g(h) in (0, 1)^r for every position of h (..., d); trainable_only: the trainable block's."""
        _, _, _, U, c = self._bases(trainable_only)
        return self._gates(h, U, c)

    def change(self, h: torch.Tensor, record: bool = False, trainable_only: bool = False) -> torch.Tensor:
        """Phi(h) - h in float32: R^T (g(h) * (W h + b - R h)); trainable_only: the trainable block's part."""
        x = h.to(torch.float32)
        R, W, b, U, c = self._bases(trainable_only)
        # (W - R) h + b equals W h + b - R h, and is exactly zero when W == R and b == 0.
        coords = x @ (W - R).T + b
        g = self._gates(x, U, c)
        if record:
            self.last_gates = g
        return (g * coords) @ R

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return (h.to(torch.float32) + self.change(h, record=self.record_gates)).to(h.dtype)

    @torch.no_grad()
    def grow(self, rank: int, generator: torch.Generator | None = None) -> None:
        """Freeze every basis so far and add `rank` trainable ones orthogonal to them (identity at init)."""
        if self.rank + rank > self.hidden_size:
            raise ValueError(
                f"grow_rank={rank}: {self.rank} bases are in use and the hidden size is {self.hidden_size}; "
                "use a smaller grow_rank, or fewer sequential edits per model")
        frozen = [t.detach().clone() for t in self._bases()]
        device = frozen[0].device
        self.make_room(self.rank, rank, generator, orthogonal_complement(frozen[0]))
        for name, tensor in zip(FROZEN_BUFFERS, frozen):
            getattr(self, name).copy_(tensor)
        self.to(device)

    def make_room(self, n_frozen: int, block_rank: int, generator: torch.Generator | None = None,
                  complement: torch.Tensor | None = None) -> None:
        """Shape the module for n_frozen frozen bases and a fresh block (values are set by the caller)."""
        d = self.hidden_size
        if generator is None:  # placeholder values (a load overwrites them); leave the global RNG alone
            generator = torch.Generator().manual_seed(0)
        if complement is None:
            complement = torch.zeros(d - n_frozen, d)
        shapes = ((n_frozen, d), (n_frozen, d), (n_frozen,), (n_frozen, d), (n_frozen,))
        for name, shape in zip(FROZEN_BUFFERS, shapes):
            self.register_buffer(name, torch.zeros(shape))
        usage = torch.zeros(n_frozen + block_rank)
        usage[: min(len(self.basis_usage), len(usage))] = self.basis_usage[: len(usage)]
        self.basis_usage = usage
        self.n_frozen = n_frozen
        del self.rotation, self.source, self.gate_proj
        self._build_block(block_rank, complement.to(torch.float32), generator)

    def num_parameters(self) -> int:
        """Trainable numbers: R (through its r x d' rotation), W and U (r x d each), b and c (r each)."""
        inner = self.rotation.weight.shape[1]
        return self.block_rank * inner + 2 * self.block_rank * self.hidden_size + 2 * self.block_rank
