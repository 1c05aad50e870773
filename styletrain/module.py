"""The Lightning module that trains a transformer net against the frozen perceptual loss.

One style gives an instance-norm net; several give one conditional-instance-norm net whose batches
sample a style per photo. With ``base_checkpoint`` a trained multi-style net learns new styles by
training only their new scale/shift rows, every convolution and old row frozen (Dumoulin et al.).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import platform
import time
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from styletrain import __version__
from styletrain.checkpoint import load_transformer
from styletrain.errors import UserError
from styletrain.images import open_image, resize_side, to_tensor
from styletrain.losses import LossConfig, LossTerms, PerceptualLoss
from styletrain.metadata import ModelMetadata
from styletrain.styles import IDENTITY, style_name
from styletrain.transformer import TransformerNet

log = logging.getLogger(__name__)

DEFAULT_LOSS = LossConfig()


class StyleTransferModule(L.LightningModule):
    """Johnson et al.'s fast style transfer training, with Dumoulin et al.'s multi-style nets.

    The typed constructor is the configuration (saved with every checkpoint). The VGG loss network
    is built in ``setup`` and kept out of the checkpoint, so a checkpoint holds only the transformer.
    """

    def __init__(
        self,
        style_images: Sequence[str],
        *,
        style_size: int | None = 512,
        width: int = 32,
        num_residuals: int = 5,
        lr: float = 1e-3,
        warmup_steps: int = 0,
        lr_decay: str = "none",
        content_weight: float = DEFAULT_LOSS.content_weight,
        style_weight: float = DEFAULT_LOSS.style_weight,
        tv_weight: float = DEFAULT_LOSS.tv_weight,
        content_layer: str = DEFAULT_LOSS.content_layer,
        style_layers: Sequence[str] = DEFAULT_LOSS.style_layers,
        vgg_arch: str = DEFAULT_LOSS.arch,
        vgg_weights: str | None = None,
        channels_last: bool = False,
        compile: bool = False,
        base_checkpoint: str | None = None,
        identity: bool = False,
        recipe: str | None = None,
    ) -> None:
        super().__init__()
        if lr_decay not in ("none", "cosine"):
            raise UserError(f"lr_decay must be 'none' or 'cosine', not {lr_decay!r}")
        self.save_hyperparameters()
        self.loss_config = LossConfig(
            content_layer=content_layer, style_layers=tuple(style_layers), content_weight=content_weight,
            style_weight=style_weight, tv_weight=tv_weight, arch=vgg_arch,
        )
        new_names = [style_name(p) for p in style_images]
        if not new_names:
            raise UserError("give at least one --style image")
        if identity:
            if base_checkpoint is not None:
                raise UserError("--identity trains a new multi-style net; it cannot be added with --base")
            new_names.append(IDENTITY)  # a row trained with content and TV only: "no style"
        if base_checkpoint is None:
            self.style_names = new_names
            self.net = TransformerNet(len(new_names), width=width, num_residuals=num_residuals)
        else:
            self.net, meta = self._extend(base_checkpoint, len(new_names))
            self.style_names = meta.style_names + new_names
        if len(set(self.style_names)) != len(self.style_names):
            raise UserError(f"style names must be unique (they come from file names); got {self.style_names}")
        # indices (in the net) of the styles this run trains, in the order of ``style_images``
        self.trained = list(range(len(self.style_names) - len(new_names), len(self.style_names)))
        self._loss: PerceptualLoss | None = None
        self._seconds_before = 0.0  # training time of earlier runs of a resumed job
        self.started_from: dict[str, Any] | None = None  # set by train.fit for --init-from
        self._run_start: float | None = None
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        if compile:
            self.net.compile()  # in place: parameter names (and checkpoints) stay the same

    @staticmethod
    def _extend(base: str, extra: int) -> tuple[TransformerNet, ModelMetadata]:
        """The base net grown by ``extra`` styles; only their new rows will receive gradients."""
        net, meta = load_transformer(base)
        try:
            net.add_styles(extra)
        except ValueError:
            raise UserError(f"--base {base} is a single-style net; new styles can only be added to a "
                            "multi-style net") from None
        return net.train(), meta

    # -- setup ---------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self._loss is None and stage in ("fit", "validate"):
            self._set_loss(self.build_loss())

    def _set_loss(self, loss: PerceptualLoss) -> None:
        # Bypass nn.Module.__setattr__: the frozen VGG must not become a submodule, or it would be
        # saved in every checkpoint, wrapped by DDP and counted as part of the net.
        object.__setattr__(self, "_loss", loss)

    def build_loss(self) -> PerceptualLoss:
        """The perceptual loss with the Gram targets of this run's style images cached."""
        hp = self.hparams
        styles = []
        for path in hp.style_images:
            image = open_image(path)
            styles.append(to_tensor(resize_side(image, hp.style_size) if hp.style_size else image))
        loss = PerceptualLoss(self.loss_config, styles, weights=hp.vgg_weights)
        if hp.channels_last:  # as the net's output it takes; moving to a device keeps the layout
            loss.to(memory_format=torch.channels_last)
        if hp.compile:
            loss.vgg.compile()
        return loss

    @property
    def perceptual_loss(self) -> PerceptualLoss:
        if self._loss is None:
            self._set_loss(self.build_loss())
        if self._loss.vgg.mean.device != self.device:
            self._loss.to(self.device)
        return self._loss

    # -- steps ---------------------------------------------------------------------------------
    def _style_choice(self, batch_size: int, stage: str) -> tuple[Tensor, Tensor]:
        """Per-photo style: net weights (B, N_net) and loss weights (B, N_style_images), one-hot;
        the identity row's loss weights are all zero (no style term)."""
        k = len(self.trained)
        if stage == "train":
            pick = torch.randint(k, (batch_size,), device=self.device)
        else:  # fixed styles for validation, so its losses are comparable across steps
            pick = torch.arange(batch_size, device=self.device) % k
        loss_w = F.one_hot(pick, k)[:, :len(self.hparams.style_images)].float()
        net_w = F.one_hot(torch.tensor(self.trained, device=self.device)[pick], len(self.style_names)).float()
        return net_w, loss_w

    def _shared_step(self, batch: Tensor, stage: str) -> LossTerms:
        if self.hparams.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        net_w, loss_w = self._style_choice(batch.shape[0], stage)
        loss = self.perceptual_loss
        content_features = loss.content_features(batch)
        output = self.net(batch, net_w)
        terms = loss(output, loss_w, content_features=content_features)
        self.log_dict(
            {f"{stage}/{name}_loss": value for name, value in terms.items()},
            on_step=stage == "train", on_epoch=stage != "train", batch_size=batch.shape[0], sync_dist=stage != "train",
        )
        self.log(f"{stage}/loss", terms.total, prog_bar=True, on_step=stage == "train",
                 on_epoch=stage != "train", batch_size=batch.shape[0], sync_dist=stage != "train")
        return terms

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train").total

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        # every photo under every trained style (consecutive rows: _style_choice's "val" picks), so the
        # validation loss covers all styles of a multi-style net, the same ones at every step
        self._shared_step(batch.repeat_interleave(len(self.trained), dim=0), "val")

    def forward(self, image: Tensor, style_weights: Tensor | None = None) -> Tensor:
        return self.net(image, style_weights)

    def configure_optimizers(self) -> torch.optim.Optimizer | dict:
        """Adam. ``warmup_steps`` ramps its rate up linearly, which a run starting from trained weights
        needs (a fresh Adam at full rate undoes them: benchmarks/RESULTS.md); ``lr_decay="cosine"`` then
        brings it down to zero at the trainer's ``max_steps``, which settles the weights at the end."""
        params = [p for p in self.net.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.hparams.lr)
        warmup = self.hparams.get("warmup_steps", 0)
        decay = self.hparams.get("lr_decay", "none")
        if not warmup and decay == "none":
            return optimizer
        total = self.trainer.max_steps if decay == "cosine" else 0
        if decay == "cosine" and total <= warmup:
            raise UserError(f"--lr-decay cosine needs --max-steps above --warmup-steps ({warmup}); got {total}")
        # the schedule follows the trainer's step, not the scheduler's own count, which restarts at 0
        # when a resumed run adds a schedule the run began without
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: self._lr_factor())
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _lr_factor(self) -> float:
        """This run's schedule (``lr_factor``) at the trainer's current step."""
        step = self.trainer.global_step if self._trainer is not None else 0
        total = self.trainer.max_steps if self.hparams.get("lr_decay", "none") == "cosine" else 0
        return lr_factor(step, warmup=self.hparams.get("warmup_steps", 0), total=total)

    def _apply_lr(self) -> None:
        """Train at this run's ``lr``, also when resuming: Lightning restores the optimizer's and the
        scheduler's rates from the checkpoint, which would keep the old rate while the checkpoint
        records the new one."""
        lr = self.hparams.lr
        schedulers = [config.scheduler for config in self.trainer.lr_scheduler_configs]
        factor = self._lr_factor() if schedulers else 1.0
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                before = group.get("initial_lr", group["lr"])
                if before != lr:
                    log.info("training at lr %g from step %d (the run so far used %g)", lr, self.global_step, before)
                if schedulers:
                    group["initial_lr"] = lr
                else:  # a schedule the run began with and this attempt dropped
                    group.pop("initial_lr", None)
                group["lr"] = lr * factor
        for scheduler in schedulers:
            scheduler.base_lrs = [lr] * len(scheduler.base_lrs)

    # -- checkpoints ---------------------------------------------------------------------------
    def metadata(self) -> ModelMetadata:
        """What a checkpoint or exported model says about itself (read by ``load_transformer``)."""
        hp = self.hparams
        data = {}
        if self._trainer is not None and self.trainer.datamodule is not None:
            data = {k: v for k, v in self.trainer.datamodule.hparams.items() if k != "content_dir"}
            data["content_dir"] = str(self.trainer.datamodule.hparams.content_dir)
        return ModelMetadata(
            style_names=list(self.style_names), net=self.net.config(), loss=self.loss_config.to_dict(),
            style_images=[str(p) for p in hp.style_images], style_size=hp.style_size, lr=hp.lr,
            vgg_weights=str(hp.vgg_weights) if hp.vgg_weights else None, base_checkpoint=hp.base_checkpoint,
            recipe=hp.recipe, data=data, global_step=int(self.global_step), styletrain_version=__version__,
            started_from=self.started_from,
        )

    def on_train_start(self) -> None:
        self._run_start = time.monotonic()
        self._apply_lr()
        if self.trainer.world_size > 1:
            # seed_everything gave every rank the same seed: each would draw the same styles (and,
            # without loader workers, the same crops) for its share of the batch
            torch.manual_seed(torch.initial_seed() + 1000 * self.global_rank)

    def train_seconds(self) -> float:
        """Wall-clock training time so far, summed over resumed runs."""
        current = time.monotonic() - self._run_start if self._run_start is not None else 0.0
        return self._seconds_before + current

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = dataclasses.replace(self.metadata(), train_seconds=round(self.train_seconds(), 1),
                                   hardware=hardware())
        checkpoint["styletrain"] = meta.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stored = checkpoint.get("styletrain", {})
        self._seconds_before = float(stored.get("train_seconds", 0.0))
        self.started_from = stored.get("started_from")


def lr_factor(step: int, *, warmup: int, total: int) -> float:
    """The learning rate at optimizer ``step``, as a fraction of ``lr``: a linear ramp over ``warmup``
    steps, then flat, or (``total`` > 0) a half cosine from 1 down to 0 at step ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    if total <= 0:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))


def hardware() -> str:
    """The device that trains, for the checkpoint's record."""
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name()}"
    threads = torch.get_num_threads()
    return (f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{threads} thread{'s' if threads != 1 else ''}")

