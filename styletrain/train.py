"""Running a training job: the Lightning Trainer, checkpoints, sample grids, resuming."""

from __future__ import annotations

import io
import logging
import signal
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, Timer, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.plugins import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torchvision.utils import make_grid, save_image

from styletrain.checkpoint import load_transformer, read_checkpoint
from styletrain.data import PhotoDataModule, PhotoDataset
from styletrain.errors import UserError, names_text
from styletrain.files import write_atomically
from styletrain.metadata import ModelMetadata
from styletrain.module import StyleTransferModule
from styletrain.runtime.variants import cpu_facts
from styletrain.transformer import widen

log = logging.getLogger(__name__)

MAX_GRID_STYLES = 8


class SampleGrid(Callback):
    """After each validation, write ``samples/step_NNNNNN.png``: the fixed validation photos
    (first column) and their stylizations, one column per style (at most 8). The same grid goes
    to TensorBoard as the image ``samples`` when the trainer has a ``TensorBoardLogger``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @torch.no_grad()
    def on_validation_end(self, trainer: L.Trainer, module: StyleTransferModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        # all the validation photos: under DDP rank 0's loader holds only its share of them
        data = trainer.datamodule
        val = PhotoDataset(data.val_files, data.hparams.image_size, train=False)
        photos = torch.stack([val[i] for i in range(len(val))]).to(module.device)
        columns = [photos]
        net = module.net
        was_training = net.training
        net.eval()
        for index in module.trained[:MAX_GRID_STYLES]:
            weights = torch.zeros(len(photos), len(module.style_names), device=module.device)
            weights[:, index] = 1
            columns.append(net(photos, weights).float())
        net.train(was_training)
        grid = make_grid(torch.stack(columns, dim=1).flatten(0, 1), nrow=len(columns), padding=2)
        self.folder.mkdir(parents=True, exist_ok=True)
        save_image(grid, self.folder / f"step_{trainer.global_step:06d}.png")
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("samples", grid.clamp(0, 1).cpu(), global_step=trainer.global_step)


class AttemptTimer(Timer):
    """``--max-time`` for this attempt alone. Lightning's own timer restores the time of earlier
    attempts from the checkpoint, so an attempt that resumed a run already past the limit stopped at once."""

    def load_state_dict(self, state_dict: dict) -> None:
        pass


class SaveOnInterrupt(Callback):
    """Ctrl-C or SIGTERM (``kill``, ``timeout``, a job scheduler's end of job): write ``last.ckpt``
    before Lightning exits, so that the next attempt resumes from the step it was at rather than from
    the last ``--checkpoint-every`` save (one process only: under DDP the save would wait on ranks
    that are gone). Lightning stops at the end of the step on SIGTERM, at once on Ctrl-C."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.signal: signal.Signals | None = None

    def on_exception(self, trainer: L.Trainer, module: StyleTransferModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.signal = signal.SIGINT
        elif isinstance(exception, SIGTERMException):
            self.signal = signal.SIGTERM
        if self.signal is not None and trainer.world_size == 1:
            trainer.save_checkpoint(self.path, weights_only=False)
            log.warning("%s at step %d: saved %s; run the same command to resume",
                        "interrupted" if self.signal == signal.SIGINT else "terminated", trainer.global_step,
                        self.path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file beside their path and renamed into place. Lightning's
    own save writes in the system's temporary folder and moves the file; when that folder is on
    another file system the move is a copy, and a kill during it truncates the only ``last.ckpt``."""

    def save_checkpoint(self, checkpoint: dict, path: str | Path, storage_options: object = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_atomically(path, lambda part: part.write_bytes(buffer.getbuffer()))


class RunProgressBar(TQDMProgressBar):
    """One bar for the whole run: step N of ``max_steps``, counting the steps of earlier attempts, with
    the time left. Lightning's own bar counts the batches of each pass over the photos ("Epoch 3: 120/224")."""

    def on_train_epoch_start(self, trainer: L.Trainer, *_: object) -> None:
        bar = self.train_progress_bar
        if bar.total != trainer.max_steps:  # this attempt's first epoch: start at the resumed step
            bar.reset(total=trainer.max_steps)
            bar.n = bar.last_print_n = bar.initial = trainer.global_step
        bar.set_description(f"Epoch {trainer.current_epoch}")

    def on_train_batch_end(self, trainer: L.Trainer, module: StyleTransferModule, *_: object) -> None:
        bar, step = self.train_progress_bar, trainer.global_step
        if self._should_update(step, bar.total):
            bar.update(step - bar.n)
            bar.set_postfix(self.get_metrics(trainer, module))


@dataclass
class TrainerOptions:
    """Run settings passed through to ``lightning.Trainer`` (devices, nodes and strategy for DDP)."""

    max_steps: int = 40_000
    max_time: str | None = None
    accelerator: str = "auto"
    devices: str | int = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str | None = None
    gradient_clip_val: float | None = None
    val_every: int = 500
    checkpoint_every: int = 500
    progress: bool = True
    seed: int = 0


def default_precision(accelerator: str) -> str:
    """bf16 autocast on GPUs that support it and on CPUs with native bf16 (AVX512-BF16 or AMX: 1.7x
    the float32 step there, loss tracking float32: benchmarks/RESULTS.md); float32 on other CPUs,
    which emulate bf16 far slower."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    if accelerator in ("auto", "cpu") and cpu_facts().bf16:
        return "bf16-mixed"
    return "32-true"


def fit(module: StyleTransferModule, data: PhotoDataModule, out: str | Path,
        options: TrainerOptions = TrainerOptions(), *, resume: bool = True,
        init_from: str | Path | None = None) -> Path:
    """Train until ``max_steps`` (or this attempt's ``max_time``), resuming from ``out/last.ckpt``.

    ``init_from``: a (slim) checkpoint of the same net whose weights start a run that has no
    ``last.ckpt`` to resume (e.g. on a fresh machine); the optimizer and step count start afresh.
    Returns the path of ``out/last.ckpt``, written at the end of every run, also one stopped by
    ``max_time``; Ctrl-C saves it and raises ``KeyboardInterrupt``, SIGTERM saves it and exits with
    status 143 (128 + SIGTERM, as the shell reports a process it ended).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for last.ckpt, samples/ and logs/")
    out.mkdir(parents=True, exist_ok=True)
    last = out / "last.ckpt"
    ckpt_path = last if resume and last.is_file() else None
    if init_from is not None and not Path(init_from).is_file():
        raise UserError(f"--init-from {init_from}: no such file; give a styletrain checkpoint (.ckpt)")
    resumed_step = 0
    if ckpt_path:
        # a safe load first: refuse anything but a styletrain checkpoint
        stored = read_checkpoint(ckpt_path)
        _check_same_run(module, ModelMetadata.from_dict(stored["styletrain"]), ckpt_path)
        resumed_step = int(stored.get("global_step", 0))
        log.info("resuming from %s (step %d)", ckpt_path, resumed_step)
        if init_from is not None:
            log.info("--init-from %s is not used: it only starts a run that has no last.ckpt", init_from)
    elif init_from is not None:
        _load_weights(module, init_from)
        if not module.hparams.get("warmup_steps"):
            log.warning("a fresh optimizer at lr %g from trained weights can undo them (measured: 2.4-2.7x the "
                        "loss after 100 steps at 1e-3); consider --warmup-steps 50 and --lr 1e-4",
                        module.hparams.lr)
    module.perceptual_loss  # build the loss network now: fail on missing VGG weights before training
    # The data order is not part of the checkpoint: seeding by the step keeps every resumed attempt
    # from replaying the photos and crops the first attempt began with.
    L.seed_everything(options.seed + resumed_step, workers=True, verbose=False)
    interrupt = SaveOnInterrupt(last)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_no_adverts)
    trainer = L.Trainer(
        default_root_dir=out,
        max_steps=options.max_steps,
        accelerator=options.accelerator,
        devices=options.devices,
        num_nodes=options.num_nodes,
        strategy=options.strategy,
        precision=options.precision or default_precision(options.accelerator),
        gradient_clip_val=options.gradient_clip_val,
        logger=loggers(out),
        callbacks=[
            # no version counter: Lightning would otherwise save to last-v1.ckpt whenever a last.ckpt it
            # did not write itself is there (after --no-resume, a moved folder, an early Ctrl-C)
            ModelCheckpoint(dirpath=out, save_last=True, save_top_k=0, enable_version_counter=False,
                            every_n_train_steps=options.checkpoint_every),
            SampleGrid(out / "samples"),
            interrupt,
            *([AttemptTimer(options.max_time, interval="step")] if options.max_time else []),
            *([RunProgressBar()] if options.progress else []),
        ],
        val_check_interval=options.val_every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        enable_progress_bar=options.progress,
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=min(50, options.val_every),
    )
    with warnings.catch_warnings():
        # Lightning warns on every mid-epoch resume that the loader cannot pick up where it was;
        # here it starts a fresh shuffle seeded by the step instead (above), which is intended.
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")
        # Lightning 2.6 on torch >= 2.10, once a run: its own use of a deprecated torch name, nothing to act on
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
        try:
            trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
        except SystemExit:
            if interrupt.signal == signal.SIGINT:  # Lightning turns Ctrl-C into exit(1): hand it on as what it was
                raise KeyboardInterrupt from None
            if interrupt.signal == signal.SIGTERM:  # Lightning's SIGTERMException would exit with status 0
                raise SystemExit(128 + signal.SIGTERM) from None
            raise
    trainer.save_checkpoint(last, weights_only=False)  # optimizer and loop state too, to resume
    return last


def _no_adverts(record: logging.LogRecord) -> bool:
    """Drops Lightning's "Tip: try installing litlogger" from every run's log."""
    return "litlogger" not in record.getMessage()


def loggers(out: Path) -> list[Logger]:
    """CSV and TensorBoard logs of the same run in one folder, ``out/logs/version_N/``
    (``metrics.csv`` and ``events.out.tfevents.*``); without ``tensorboard`` installed, CSV only."""
    csv = CSVLogger(out, name="logs")
    try:
        tensorboard = TensorBoardLogger(out, name="logs", version=csv.version, default_hp_metric=False)
    except ModuleNotFoundError:  # Lightning needs tensorboard or tensorboardX for it
        log.warning("no TensorBoard logs: `pip install tensorboard` to get them; CSV logs only")
        return [csv]
    return [csv, tensorboard]


def _check_same_run(module: StyleTransferModule, stored: ModelMetadata, path: Path) -> None:
    """Refuse to resume a run of other styles or another net: it would train the old weights towards
    the new styles (or fail deep in Lightning) and overwrite the old ``last.ckpt`` with the result."""
    if list(stored.style_names) == list(module.style_names) and stored.net == module.net.config():
        return
    raise UserError(f"{path} is a run of {names_text(stored.style_names)} with net {stored.net}; this run asks for "
                    f"{names_text(module.style_names)} with net {module.net.config()}. Give another --out for a new "
                    "run, or --no-resume to start this folder afresh (its last.ckpt is then replaced)")


def _load_weights(module: StyleTransferModule, path: str | Path) -> None:
    """Start from a checkpoint's net weights; it must hold the same styles and net config, except
    that a narrower net is widened to this run's width (the same function, ``transformer.widen``)."""
    net, meta = load_transformer(path)
    trained_width, width = net.width, module.net.width
    widens = ({**net.config(), "width": width} == module.net.config() and width > trained_width
              and width % trained_width == 0)
    if list(meta.style_names) != list(module.style_names) or (net.config() != module.net.config() and not widens):
        raise UserError(f"--init-from {path} holds {meta.style_names} with net {net.config()}; this run "
                        f"trains {module.style_names} with net {module.net.config()} (a narrower net can "
                        "start a run at a multiple of its width; anything else must match)")
    if widens:
        log.info("widening %s from width %d to %d: the same function, more channels to train", path, trained_width,
                 width)
        net = widen(net, width, generator=torch.Generator().manual_seed(0))  # the same wide net every time
    module.net.load_state_dict(net.state_dict())
    module.started_from = {"checkpoint": str(path), "global_step": meta.global_step,
                           "train_seconds": meta.train_seconds}
    if trained_width != width:
        module.started_from["widened_from"] = trained_width
    if meta.started_from:  # that model's own start: the whole chain of runs stays on record
        module.started_from["started_from"] = meta.started_from
    log.info("starting from the weights of %s (step %s there)", path, meta.global_step)
