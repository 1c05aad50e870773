"""The one optimisation loop behind Gatys, texture synthesis, DeepDream, inversion and visualisation.

``optimize`` minimises the sum of an objective's terms over the pixels of an image with L-BFGS (the
reference optimiser of Gatys et al.), Adam, or normalised gradient descent (DeepDream's step: the
gradient divided by its mean absolute value). Robustness transforms are applied before the objective,
step regularisers to the pixels after each step, and the pixels are then projected into [0, 1] (a
box constraint; without it L-BFGS from noise leaves the valid range and the final clamp undoes much
of its work).
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

    ``steps`` counts L-BFGS iterations (each about 1.25 objective evaluations) or Adam/ascent steps.
    The input is never changed.
    """
    if method not in METHODS:
        raise UserError(f"optimizer must be one of {', '.join(METHODS)}; got {method!r}")
    if steps < 0:
        raise UserError(f"steps must be non-negative; got {steps}")
    lr = DEFAULT_LR[method] if lr is None else lr
    x = image.detach().clone().requires_grad_(True)
    last: dict[str, float] = {}
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)

    def evaluate() -> Tensor:
        view = x
        for transform in transforms:
            view = transform(view)
        terms = objective(view)
        total = sum(terms.values())
        last.clear()
        last.update({k: float(v.detach()) for k, v in terms.items()}, total=float(total.detach()))
        return total

    def closure() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        total = evaluate()
        total.backward()
        return total

    try:
        if method == "lbfgs" and steps:
            optimizer = torch.optim.LBFGS([x], lr=lr, max_iter=1, history_size=100,
                                          tolerance_grad=0.0, tolerance_change=0.0)
        elif method == "adam":
            optimizer = torch.optim.Adam([x], lr=lr)
        else:
            optimizer = torch.optim.SGD([x], lr=lr)  # only for zero_grad; ascent steps are explicit
        for step in range(steps):
            if method == "ascent":
                closure()
                with torch.no_grad():
                    grad = x.grad
                    x.sub_(lr * grad / grad.abs().mean().clamp_min(1e-12))
            else:
                optimizer.step(closure)
            if not math.isfinite(last["total"]):
                raise FloatingPointError(f"{desc}: loss became non-finite at step {step}: {last}; "
                                         "lower the learning rate or the weights")
            with torch.no_grad():
                for regularise in regularisers:
                    regularise(x, step)
                x.clamp_(0.0, 1.0)
            bar.set_postfix({k: f"{v:.3g}" for k, v in last.items()}, refresh=False)
            bar.update()
        with torch.no_grad():
            evaluate()  # report the terms of the image returned, not of the last evaluation
    finally:
        bar.close()
    log.debug("%s: %d %s steps, final %s", desc, steps, method, last)
    return Result(x.detach(), dict(last))
