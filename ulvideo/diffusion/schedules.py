"""Log-SNR schedules lambda(t) on t in [0, 1], decreasing, with exact -dlambda/dt (UL_METHOD §1)."""

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor


class Schedule(ABC):
    """A decreasing log-SNR schedule. Subclasses implement `logsnr(t)` and `neg_dlogsnr_dt(t)`."""

    logsnr_max: float
    logsnr_min: float

    def __call__(self, t: Tensor) -> Tensor:
        return self.logsnr(t)

    @abstractmethod
    def logsnr(self, t: Tensor) -> Tensor: ...

    @abstractmethod
    def neg_dlogsnr_dt(self, t: Tensor) -> Tensor: ...

    def inverse(self, logsnr: Tensor) -> Tensor:
        """t such that lambda(t) = logsnr, by bisection (exact schedules override it)."""
        lo, hi = torch.zeros_like(logsnr), torch.ones_like(logsnr)
        for _ in range(60):
            mid = (lo + hi) / 2
            above = self.logsnr(mid) > logsnr
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return (lo + hi) / 2

    def validate(self, points: int = 257) -> None:
        """Raise if lambda(t) is not strictly decreasing with a positive -dlambda/dt on [0, 1]."""
        t = torch.linspace(0, 1, points, dtype=torch.float64)
        lam, rate = self.logsnr(t), self.neg_dlogsnr_dt(t)
        if not (torch.isfinite(lam).all() and torch.isfinite(rate).all()):
            raise ValueError(f"{self!r}: lambda(t) or -dlambda/dt is not finite on [0, 1]")
        if not (lam[1:] < lam[:-1]).all() or not (rate > 0).all():
            raise ValueError(
                f"{self!r}: lambda(t) must be strictly decreasing in t (t=0 is the least noisy end); "
                "swap logsnr_max and logsnr_min"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(logsnr_max={self.logsnr_max}, logsnr_min={self.logsnr_min})"


class LinearLogSNR(Schedule):
    """lambda(t) = lmax + t (lmin - lmax). The latent schedule: 5 -> -15 (UL_METHOD §3; [ours])."""

    def __init__(self, logsnr_max: float = 5.0, logsnr_min: float = -15.0):
        self.logsnr_max, self.logsnr_min = float(logsnr_max), float(logsnr_min)
        self.validate()

    def logsnr(self, t: Tensor) -> Tensor:
        return self.logsnr_max + t * (self.logsnr_min - self.logsnr_max)

    def neg_dlogsnr_dt(self, t: Tensor) -> Tensor:
        return torch.full_like(t, self.logsnr_max - self.logsnr_min)

    def inverse(self, logsnr: Tensor) -> Tensor:
        return (self.logsnr_max - logsnr) / (self.logsnr_max - self.logsnr_min)


class ShiftedCosine(Schedule):
    """Truncated, shifted cosine schedule of simple diffusion / SiD2 (UL_METHOD §4, §5).

    lambda(t) = -2 log tan(u) + shift, u = u_min + t (u_max - u_min), with [u_min, u_max] chosen
    so that lambda spans exactly [logsnr_min, logsnr_max]; the draws of lambda centre on `shift`
    (the density of lambda peaks there). `for_resolution` gives simple diffusion's shift.
    """

    def __init__(self, shift: float = 0.0, logsnr_max: float = 15.0, logsnr_min: float = -15.0):
        self.shift = float(shift)
        self.logsnr_max, self.logsnr_min = float(logsnr_max), float(logsnr_min)
        self.u_min = math.atan(math.exp(-(self.logsnr_max - self.shift) / 2))
        self.u_max = math.atan(math.exp(-(self.logsnr_min - self.shift) / 2))
        self.validate()

    @classmethod
    def for_resolution(
        cls,
        resolution: float,
        reference_resolution: float = 64,
        logsnr_max: float = 15.0,
        logsnr_min: float = -15.0,
    ) -> "ShiftedCosine":
        """simple diffusion's schedule for `resolution` px: shift = 2 log(reference / resolution)."""
        if resolution <= 0 or reference_resolution <= 0:
            raise ValueError(
                f"resolutions must be positive, got {resolution}, {reference_resolution}"
            )
        return cls(2.0 * math.log(reference_resolution / resolution), logsnr_max, logsnr_min)

    def _u(self, t: Tensor) -> Tensor:
        return self.u_min + t * (self.u_max - self.u_min)

    def logsnr(self, t: Tensor) -> Tensor:
        return -2.0 * torch.log(torch.tan(self._u(t))) + self.shift

    def neg_dlogsnr_dt(self, t: Tensor) -> Tensor:
        # d/du [-2 log tan u] = -4 / sin(2u)
        return 4.0 * (self.u_max - self.u_min) / torch.sin(2.0 * self._u(t))

    def inverse(self, logsnr: Tensor) -> Tensor:
        u = torch.atan(torch.exp(-(logsnr - self.shift) / 2))
        return (u - self.u_min) / (self.u_max - self.u_min)


def stratified_t(batch: int, device=None, generator: torch.Generator | None = None) -> Tensor:
    """Low-variance t ~ U[0, 1]: one uniform draw per stratum [i/B, (i+1)/B), shuffled over the batch."""
    u = torch.rand(batch, device=device, generator=generator, dtype=torch.float64)
    perm = torch.randperm(batch, device=device, generator=generator)
    return ((perm + u) / batch).float()
