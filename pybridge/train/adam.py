"""Adam on torch's fused kernel, without ``torch.optim``'s import of the compiler.

Every ``torch.optim`` optimizer imports ``torch._dynamo`` (and with it sympy, about 1.2 s of a fresh process) the
first time it is built or stepped, for compiler hooks a training loop that is not compiled never uses.
:class:`FusedAdam` calls the same kernel as ``torch.optim.Adam(fused=True)`` (``torch._fused_adam_``) with the
same state, so its updates are identical to the bit; where a torch build lacks the kernel,
:func:`make_adam` returns ``torch.optim.Adam`` instead.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class FusedAdam:
    """Adam with L2 weight decay (``torch.optim.Adam``'s, not AdamW's) for parameters of floating dtype."""

    def __init__(
        self, params: Iterable[torch.Tensor], lr: float, eps: float, weight_decay: float,
        betas: tuple[float, float] = (0.9, 0.999),
    ):
        self.params = list(params)
        self.lr, self.eps, self.weight_decay = float(lr), float(eps), float(weight_decay)
        self.beta1, self.beta2 = (float(b) for b in betas)
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient, one kernel call per (device, dtype)."""
        groups: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], ...]] = {}
        for p in self.params:
            if p.grad is None:
                continue
            state = self.state.get(p)
            if state is None:
                state = self.state[p] = {
                    "step": torch.zeros((), dtype=torch.float32, device=p.device),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }
            lists = groups.setdefault((p.device, p.dtype), ([], [], [], [], []))
            for values, item in zip(lists, (p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"])):
                values.append(item)
        for params, grads, exp_avgs, exp_avg_sqs, steps in groups.values():
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(
                params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=self.lr, beta1=self.beta1,
                beta2=self.beta2, weight_decay=self.weight_decay, eps=self.eps, maximize=False,
                grad_scale=None, found_inf=None,
            )


def make_adam(params: Iterable[torch.Tensor], lr: float, eps: float, weight_decay: float):
    """:class:`FusedAdam`, or ``torch.optim.Adam(fused=True)`` where this torch has no fused kernel to call."""
    if hasattr(torch, "_fused_adam_"):
        return FusedAdam(params, lr=lr, eps=eps, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, eps=eps, weight_decay=weight_decay, fused=True)
