"""The one optimisation loop behind Gatys, texture synthesis, DeepDream, inversion and visualisation.

``optimize`` minimises the sum of an objective's terms over the pixels of an image with L-BFGS (the
reference optimiser of Gatys et al.; one run with a strong-Wolfe line search, which stays stable
where plain L-BFGS steps can explode), Adam, or normalised gradient descent (DeepDream's step: the
gradient divided by its mean absolute value). Robustness transforms are applied before the objective
and step regularisers to the pixels after each Adam/ascent step.

The box constraint: the objective always sees the pixels clamped to [0, 1] (straight-through, so
gradients still flow), Adam/ascent steps project the pixels back into [0, 1], and the image
returned is the clamped one - so the reported losses are those of the image returned.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from styletrain.errors import UserError
from styletrain.reference.objectives import Objective
from styletrain.reference.transforms import StepRegulariser, Transform

log = logging.getLogger(__name__)

METHODS = ("lbfgs", "adam", "ascent")


@dataclass
class Result:
    """An optimised image (1, 3, H, W) in [0, 1] and its final loss terms (including ``total``)."""

    image: Tensor
    losses: dict[str, float]

DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02, "ascent": 0.01}


def optimize(
    image: Tensor,
    objective: Objective,
    *,
    steps: int,
    method: str = "lbfgs",
    lr: float | None = None,
    transforms: Sequence[Transform] = (),
    regularisers: Sequence[StepRegulariser] = (),
    progress: bool = False,
    desc: str = "optimize",
) -> Result:
    """Minimise ``objective`` over a copy of ``image``; returns the image and its final loss terms.

    ``steps`` counts Adam/ascent steps, or L-BFGS iterations, which are capped at 1.25 * ``steps``
    objective evaluations in all (so the cost is bounded as for the other methods). The input is
    never changed.
    """
    if method not in METHODS:
        raise UserError(f"optimizer must be one of {', '.join(METHODS)}; got {method!r}")
    if steps < 0:
        raise UserError(f"steps must be non-negative; got {steps}")
    if method == "lbfgs" and regularisers:
        raise ValueError("step regularisers need Adam or ascent steps; L-BFGS runs as one line-searched call")
    lr = DEFAULT_LR[method] if lr is None else lr
    x = image.detach().clamp(0.0, 1.0).requires_grad_(True)
    last: dict[str, float] = {}
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)

    def evaluate() -> Tensor:
        view = x + (x.clamp(0.0, 1.0) - x).detach()  # clamped values, identity gradient
        for transform in transforms:
            view = transform(view)
        terms = objective(view)
        total = sum(terms.values())
        last.clear()
        last.update({k: float(v.detach()) for k, v in terms.items()}, total=float(total.detach()))
        if not math.isfinite(last["total"]):
            raise UserError(f"{desc}: the loss became non-finite: {last}; lower the learning rate "
                                     "or the loss weights")
        return total

    def closure() -> Tensor:
        x.grad = None
        total = evaluate()
        total.backward()
        return total

    try:
        if method == "lbfgs" and steps:
            optimizer = torch.optim.LBFGS([x], lr=lr, max_iter=steps, max_eval=steps * 5 // 4 + 1,
                                          history_size=100, tolerance_grad=0.0, tolerance_change=0.0,
                                          line_search_fn="strong_wolfe")
            state = optimizer.state[x]

            def counted() -> Tensor:
                total = closure()
                bar.n = min(steps, state.get("n_iter", 0))
                bar.set_postfix({k: f"{v:.3g}" for k, v in last.items()})
                return total

            optimizer.step(counted)
        elif steps:
            optimizer = torch.optim.Adam([x], lr=lr) if method == "adam" else None
            for step in range(steps):
                closure()
                with torch.no_grad():
                    if optimizer is not None:
                        optimizer.step()
                    else:
                        x.sub_(lr * x.grad / x.grad.abs().mean().clamp_min(1e-12))
                    for regularise in regularisers:
                        regularise(x, step)
                    x.clamp_(0.0, 1.0)
                bar.set_postfix({k: f"{v:.3g}" for k, v in last.items()}, refresh=False)
                bar.update()
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
            evaluate()  # report the terms of the image returned, not of the last evaluation
    finally:
        bar.close()
    log.debug("%s: %d %s steps, final %s", desc, steps, method, last)
    return Result(x.detach(), dict(last))
