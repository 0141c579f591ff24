"""The BaFT intervention: a gated update of a hidden state inside a rank-r subspace.

    Phi(h) = h + R^T ( g(h) * (W h + b - R h) )
    g(h)   = sigmoid( (U h + c) / tau ),  h RMS-normalised first when gate_input_norm is on

R (r x d) has orthonormal rows. With g == 1 this is LoReFT (Wu et al., 2024).
This module is math only: it knows nothing of models, layers or training.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrizations


def loreft(h: torch.Tensor, R: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The LoReFT update h + R^T (W h + b - R h), written as in the paper (reference for tests)."""
    return h + (h @ W.T + b - h @ R.T) @ R


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
        self.hidden_size, self.rank = hidden_size, rank
        self.temperature, self.gate_mode = float(temperature), gate_mode
        self.gate_input_norm = gate_input_norm

        rotation = nn.Linear(hidden_size, rank, bias=False)
        nn.init.orthogonal_(rotation.weight, generator=generator)
        # The parametrization keeps R's rows orthonormal through every optimiser step. It completes
        # R to a square matrix with the global RNG, so seed that from `generator` and put it back.
        with torch.random.fork_rng(devices=[]):
            if generator is not None:
                torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            self.rotation = parametrizations.orthogonal(rotation)
        self.source = nn.Linear(hidden_size, rank)  # W, b: the learned target coordinates
        self.gate_proj = nn.Linear(hidden_size, rank)  # U, c: one gate per basis
        with torch.no_grad():
            # W = R and b = 0 make the update exactly zero: an untrained edit changes nothing.
            self.source.weight.copy_(self.rotation.weight)
            self.source.bias.zero_()
            self.gate_proj.weight.normal_(0.0, gate_init_std, generator=generator)
            self.gate_proj.bias.fill_(gate_init_bias)
        # How strongly past edits opened each basis (incremental load balancing).
        self.register_buffer("basis_usage", torch.zeros(rank))
        self.last_gates: torch.Tensor | None = None  # set while record_gates is on
        self.record_gates = False

    @property
    def R(self) -> torch.Tensor:
        return self.rotation.weight

    def gates(self, h: torch.Tensor) -> torch.Tensor:
        """g(h) in (0, 1)^r for every position of h (..., d)."""
        if self.gate_mode == "ones":
            return torch.ones(*h.shape[:-1], self.rank, dtype=h.dtype, device=h.device)
        if self.gate_input_norm:
            # Residual-stream norms vary by orders of magnitude across positions and layers;
            # gating on the direction keeps the sigmoid out of saturation.
            h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        return torch.sigmoid(self.gate_proj(h) / self.temperature)

    def change(self, h: torch.Tensor, record: bool = False) -> torch.Tensor:
        """Phi(h) - h in float32: R^T (g(h) * (W h + b - R h))."""
        x = h.to(torch.float32)
        R = self.R
        # (W - R) h + b equals W h + b - R h, and is exactly zero when W == R and b == 0.
        coords = x @ (self.source.weight - R).T + self.source.bias
        g = self.gates(x)
        if record:
            self.last_gates = g
        return (g * coords) @ R

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return (h.to(torch.float32) + self.change(h, record=self.record_gates)).to(h.dtype)

    def num_parameters(self) -> int:
        """Trainable numbers: R, W, U (r x d each) and b, c (r each): 3rd + 2r."""
        return 3 * self.rank * self.hidden_size + 2 * self.rank
