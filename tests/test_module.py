"""Training: a real short run on the shared VGG weights, resuming, and adding a style."""

import dataclasses
import os
import shutil
import signal
import warnings
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from support import DATA, needs_data, write_images
from styletrain.checkpoint import load_transformer, read_checkpoint
from styletrain.data import PhotoDataModule, PhotoDataset
from styletrain.errors import UserError
from styletrain.module import StyleTransferModule, lr_factor
from styletrain.train import TrainerOptions, fit

FAST = dict(style_size=32, width=4, num_residuals=1)


def tiny_module(*styles: Path, **options) -> StyleTransferModule:
    """A net small enough to train in seconds, against a randomly initialised VGG."""
    return StyleTransferModule([str(p) for p in styles], vgg_weights="random", **{**FAST, **options})


def tiny_data(photos: Path, **options) -> PhotoDataModule:
    """32 px crops, batches of 2, two photos held out, decoded in the test's process."""
    return PhotoDataModule(str(photos), **{"image_size": 32, "batch_size": 2, "num_workers": 0, "val_count": 2,
                                           **options})


def quick(max_steps: int, **kw) -> TrainerOptions:
    return TrainerOptions(max_steps=max_steps, accelerator="cpu", val_every=max_steps, checkpoint_every=max_steps,
                          progress=False, **kw)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    write_images(tmp_path / "photos", 6)
    return tmp_path / "photos"


@needs_data
def test_real_vgg_training_run_lowers_the_loss(tmp_path, vgg_weights):
    content = tmp_path / "content"
    content.mkdir()
    for src in sorted((DATA / "train").glob("*.jpg"))[:10]:
        (content / src.name).symlink_to(src)
    module = StyleTransferModule([str(DATA / "styles" / "mosaic.jpg")], style_size=128, width=8,
                                 num_residuals=2, vgg_weights=str(vgg_weights))
    data = PhotoDataModule(str(content), image_size=64, batch_size=4, num_workers=0, val_count=2)
    val = PhotoDataset(data.val_files, 64, train=False)
    batch = torch.stack([val[0], val[1]])

    def loss_now() -> float:
        with torch.no_grad():
            out = module.net.train()(batch)
            return module.perceptual_loss(out, torch.ones(2, 1), content=batch).total.item()

    before = loss_now()
    fit(module, data, tmp_path / "run", quick(30))
    after = loss_now()
    assert after < 0.5 * before, (before, after)
    meta = read_checkpoint(tmp_path / "run" / "last.ckpt")["styletrain"]
    assert meta["style_names"] == ["mosaic"] and meta["global_step"] == 30
    assert meta["data"]["image_size"] == 64 and meta["loss"]["content_layer"] == "relu3_3"


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["state_dict"]


def test_resumes_from_last_checkpoint(tmp_path, photos, monkeypatch):
    """A resumed attempt carries on the weights, the optimizer, the step and the training time."""
    styles = write_images(tmp_path / "styles", 1, seed=1)
    make = partial(tiny_module, styles[0])
    data = partial(tiny_data, photos)
    last = fit(make(), data(), tmp_path / "run", quick(3))
    first = read_checkpoint(last)
    assert first["styletrain"]["global_step"] == 3
    fit(make(), data(), tmp_path / "run", quick(3))  # already there: no step, the very same weights
    assert all(torch.equal(v, _weights(last)[k]) for k, v in first["state_dict"].items())
    steps = []
    original = StyleTransferModule.training_step
    monkeypatch.setattr(StyleTransferModule, "training_step",
                        lambda self, *a: steps.append(self.global_step) or original(self, *a))
    fit(make(), data(), tmp_path / "run", quick(5))
    second = read_checkpoint(last)
    assert steps == [3, 4] and second["styletrain"]["global_step"] == 5
    adam = second["optimizer_states"][0]["state"][0]
    assert int(adam["step"]) == 5  # Adam's moments carried on; a fresh optimizer would be at 2
    assert second["styletrain"]["train_seconds"] > first["styletrain"]["train_seconds"]
    assert (tmp_path / "run" / "samples").is_dir()


def test_resuming_a_run_of_other_styles_or_another_net_is_refused_and_keeps_it(tmp_path, photos):
    styles = write_images(tmp_path / "styles", 2, seed=1)
    data = partial(tiny_data, photos)
    last = fit(tiny_module(styles[0]), data(), tmp_path / "run",
               quick(2))
    kept = last.read_bytes()
    other_style = tiny_module(styles[1])
    wider = tiny_module(styles[0], width=8)
    for module in (other_style, wider):
        with pytest.raises(UserError, match="--no-resume"):
            fit(module, data(), tmp_path / "run", quick(4))
        assert last.read_bytes() == kept
    fit(wider, data(), tmp_path / "run", quick(1), resume=False)  # what the user asked for: a fresh run there
    assert read_checkpoint(last)["styletrain"]["net"]["width"] == 8


def test_no_resume_starts_afresh_in_the_same_folder(tmp_path, photos, caplog):
    styles = write_images(tmp_path / "styles", 1, seed=1)
    make = partial(tiny_module, styles[0])
    data = partial(tiny_data, photos)
    fit(make(), data(), tmp_path / "run", quick(3))
    caplog.set_level("INFO", logger="styletrain")
    last = fit(make(), data(), tmp_path / "run", quick(1), resume=False)
    assert read_checkpoint(last)["styletrain"]["global_step"] == 1 and "resuming" not in caplog.text


def test_a_resumed_run_with_batches_on_the_device_does_not_replay_the_first_attempts(tmp_path, photos, monkeypatch):
    """The GPU recipes cut batches on the device and resume every few minutes: each attempt must go
    on to new crops, not start the same random sequence again."""
    styles = write_images(tmp_path / "styles", 1, seed=1)
    seen = []
    step = StyleTransferModule.training_step
    monkeypatch.setattr(StyleTransferModule, "training_step",
                        lambda self, batch, *a: seen.append(batch.clone()) or step(self, batch, *a))
    for steps in (3, 6):
        module = tiny_module(styles[0])
        data = tiny_data(photos, on_device=True)
        fit(module, data, tmp_path / "run", quick(steps))
    assert len(seen) == 6 and not any(torch.equal(a, b) for a, b in zip(seen[:3], seen[3:]))


def _stop(how: str) -> None:
    if how == "ctrl-c":
        raise KeyboardInterrupt
    os.kill(os.getpid(), signal.SIGTERM)  # as kill, timeout and job schedulers end a run


@pytest.mark.parametrize("how, raised, saved_step", [
    ("ctrl-c", KeyboardInterrupt, 2),  # not Lightning's exit(1): the CLI reports it, exit code 130
    ("sigterm", SystemExit, 3),  # the step under way finishes; exit code 143 (Lightning's own exit is 0)
])
def test_a_stopped_run_saves_the_step_it_was_at_and_the_next_attempt_resumes_there(tmp_path, photos, monkeypatch,
                                                                                     how, raised, saved_step):
    styles = write_images(tmp_path / "styles", 1, seed=1)
    make, data = partial(tiny_module, styles[0]), partial(tiny_data, photos)
    original = StyleTransferModule.training_step

    def stopped_at_step_2(self, batch, batch_idx):
        if self.global_step == 2:
            _stop(how)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(StyleTransferModule, "training_step", stopped_at_step_2)
    with pytest.raises(raised) as stopped:
        fit(make(), data(), tmp_path / "run", quick(10))
    if raised is SystemExit:
        assert stopped.value.code == 143
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # Lightning's handler is gone again
    assert read_checkpoint(tmp_path / "run" / "last.ckpt")["styletrain"]["global_step"] == saved_step
    monkeypatch.undo()
    steps = []
    monkeypatch.setattr(StyleTransferModule, "training_step",
                        lambda self, *a: steps.append(self.global_step) or original(self, *a))
    last = fit(make(), data(), tmp_path / "run", quick(4))
    assert steps == list(range(saved_step, 4)) and read_checkpoint(last)["styletrain"]["global_step"] == 4
    assert sorted(p.name for p in (tmp_path / "run").glob("*.ckpt")) == ["last.ckpt"]  # never last-v1.ckpt


def test_a_runs_log_holds_no_lightning_adverts_or_deprecations_of_its_own(tmp_path, photos, capfd, caplog):
    styles = write_images(tmp_path / "styles", 1, seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tiny_module(styles[0]), tiny_data(photos), tmp_path / "run", quick(1))
    out, err = capfd.readouterr()
    assert "litlogger" not in out + err + caplog.text
    assert not [w for w in caught if "LeafSpec" in str(w.message)]


def test_checkpoints_are_renamed_into_place_not_moved_from_the_temporary_folder(tmp_path, photos, monkeypatch):
    """Lightning writes in the system's temporary folder and moves the file: across file systems that is
    a copy, and a kill during it truncates last.ckpt. A move that fails shows which way the file went."""
    styles = write_images(tmp_path / "styles", 1, seed=1)
    module = tiny_module(styles[0])
    data = tiny_data(photos)

    def no_move(*args, **kwargs):
        raise OSError("shutil.move used to save a checkpoint")

    monkeypatch.setattr(shutil, "move", no_move)
    last = fit(module, data, tmp_path / "run", dataclasses.replace(quick(2), checkpoint_every=1))
    assert read_checkpoint(last)["styletrain"]["global_step"] == 2
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.suffix == ".ckpt" or p.name.startswith(".")) \
        == ["last.ckpt"]  # no part file left behind


def test_init_from_starts_a_fresh_run_from_a_checkpoints_weights_and_records_it(tmp_path, photos, caplog):
    styles = write_images(tmp_path / "styles", 1, seed=1)
    make = partial(tiny_module, styles[0])
    data = partial(tiny_data, photos)
    first = fit(make(), data(), tmp_path / "first", quick(3))
    caplog.set_level("INFO", logger="styletrain")
    started = make()
    second = fit(started, data(), tmp_path / "second", quick(0), init_from=first)  # 0 steps: the weights as loaded
    assert "consider --warmup-steps" in caplog.text  # a fresh Adam at full rate: the user is told
    loaded, trained = (load_transformer(path)[0].state_dict() for path in (second, first))
    assert loaded.keys() == trained.keys() and all(torch.equal(loaded[k], trained[k]) for k in loaded)
    fit(make(), data(), tmp_path / "second", quick(2), init_from=first)  # resumed: the record survives
    assert f"--init-from {first} is not used" in caplog.text  # it only starts a run: the user is told
    with pytest.raises(UserError, match="--init-from .*nope.ckpt: no such file"):  # a typo fails, resuming or not
        fit(make(), data(), tmp_path / "second", quick(3), init_from=tmp_path / "nope.ckpt")
    meta = load_transformer(second)[1]
    assert meta.global_step == 2
    assert meta.started_from["checkpoint"] == str(first) and meta.started_from["global_step"] == 3
    third = fit(make(), data(), tmp_path / "third", quick(1), init_from=second)  # a chain of runs stays on record
    chain = load_transformer(third)[1].started_from
    assert (chain["checkpoint"], chain["global_step"]) == (str(second), 2)
    assert (chain["started_from"]["checkpoint"], chain["started_from"]["global_step"]) == (str(first), 3)
    with pytest.raises(UserError, match="--init-from"):
        other = tiny_module(styles[0], width=6)
        fit(other, data(), tmp_path / "fourth", quick(1), init_from=first)


def test_init_from_a_narrower_net_widens_it_with_the_same_output(tmp_path, photos, caplog):
    styles = write_images(tmp_path / "styles", 1, seed=1)
    data = tiny_data(photos)
    make = lambda width: tiny_module(styles[0], width=width)  # noqa: E731
    narrow = fit(make(4), data, tmp_path / "narrow", quick(2))
    wide_module = make(8)
    caplog.set_level("INFO", logger="styletrain")
    wide = fit(wide_module, data, tmp_path / "wide", quick(0), init_from=narrow)
    assert "widening" in caplog.text
    (narrow_net, _), (wide_net, meta) = load_transformer(narrow), load_transformer(wide)
    assert wide_net.width == 8 and meta.started_from["widened_from"] == 4
    x = torch.rand(1, 3, 40, 40)
    torch.testing.assert_close(wide_net(x), narrow_net(x), rtol=0, atol=1e-5)
    painting = write_images(tmp_path / "other", 1, seed=2)[0].rename(tmp_path / "other" / "another.png")
    other = tiny_module(painting, width=8)
    with pytest.raises(UserError, match="'width': 4"):  # another style: refused, naming the checkpoint's own net
        fit(other, data, tmp_path / "other_run", quick(0), init_from=narrow)


def test_warmup_ramps_the_learning_rate_and_resumes_where_it_was(tmp_path, photos):
    styles = write_images(tmp_path / "styles", 1, seed=1)
    make = partial(tiny_module, styles[0], warmup_steps=8)
    data = partial(tiny_data, photos)
    module = make()
    fit(module, data(), tmp_path / "run", quick(2))
    assert module.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 * 3 / 8)  # rate for step 3
    resumed = make()
    fit(resumed, data(), tmp_path / "run", quick(4))
    # the ramp goes on where it was (a restarted one would be at 3/8 again)
    assert resumed.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 * 5 / 8)
    done = make()
    fit(done, data(), tmp_path / "run", quick(9))
    assert done.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3)  # ramp done after 8
    plain = make()
    plain.hparams.warmup_steps = 0
    assert isinstance(plain.configure_optimizers(), torch.optim.Adam)


def test_cosine_decay_brings_the_rate_to_zero_at_max_steps(tmp_path, photos):
    assert [round(lr_factor(s, warmup=2, total=6), 3) for s in range(7)] == [0.5, 1, 1, 0.854, 0.5, 0.146, 0]
    styles = write_images(tmp_path / "styles", 1, seed=1)
    make = partial(tiny_module, styles[0], warmup_steps=2, lr_decay="cosine")
    data = partial(tiny_data, photos)
    module = make()
    fit(module, data(), tmp_path / "run", quick(6))
    assert module.trainer.global_step == 6
    assert module.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(UserError, match="--max-steps above --warmup-steps"):
        fit(make(), data(), tmp_path / "short", quick(2))


def test_a_resumed_run_trains_at_the_rate_it_is_given(tmp_path, photos, caplog):
    """Lightning restores the optimizer's rate from the checkpoint: a new --lr must not be ignored while the
    checkpoint records it."""
    styles = write_images(tmp_path / "styles", 1, seed=1)
    data = partial(tiny_data, photos)
    fit(tiny_module(styles[0], lr=1e-3), data(), tmp_path / "run",
        quick(2))
    caplog.set_level("INFO", logger="styletrain")
    resumed = tiny_module(styles[0], lr=1e-4)
    last = fit(resumed, data(), tmp_path / "run", quick(3))
    stored = read_checkpoint(last)
    assert stored["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    assert stored["styletrain"]["lr"] == pytest.approx(1e-4) and "training at lr 0.0001 from step 2" in caplog.text
    with_warmup = tiny_module(styles[0], lr=2e-4, warmup_steps=8)
    fit(with_warmup, data(), tmp_path / "run", quick(4))  # a schedule: the new rate times the factor at step 4
    assert with_warmup.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(2e-4 * 5 / 8)


def test_the_progress_bar_counts_the_runs_steps_up_to_max_steps(tmp_path, photos):
    """Not the batches of one pass over the photos: a resumed run shows where it is in the whole run."""
    styles = write_images(tmp_path / "styles", 1, seed=1)
    make = partial(tiny_module, styles[0])
    data = partial(tiny_data, photos)
    fit(make(), data(), tmp_path / "run", quick(2))
    resumed = make()
    fit(resumed, data(), tmp_path / "run", dataclasses.replace(quick(5), progress=True))  # 2 batches an epoch
    bar = resumed.trainer.progress_bar_callback.train_progress_bar
    assert (bar.initial, bar.n, bar.total) == (2, 5, 5)


def test_a_cosine_decay_added_on_resume_still_ends_at_zero(tmp_path, photos):
    """The schedule follows the trainer's step: a scheduler new to a resumed run starts its own count at 0."""
    styles = write_images(tmp_path / "styles", 1, seed=1)
    data = partial(tiny_data, photos)
    fit(tiny_module(styles[0]), data(), tmp_path / "run", quick(4))
    decayed = tiny_module(styles[0], lr_decay="cosine")
    fit(decayed, data(), tmp_path / "run", quick(8))
    assert decayed.trainer.global_step == 8
    assert decayed.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_multi_style_training_teaches_every_style(tmp_path, photos):
    styles = write_images(tmp_path / "styles", 3, seed=2)
    module = tiny_module(*styles)
    assert module.style_names == ["img0", "img1", "img2"] and module.net.num_styles == 3
    data = tiny_data(photos)
    net, meta = load_transformer(fit(module, data, tmp_path / "run", quick(8)))
    assert meta.style_names == ["img0", "img1", "img2"] and meta.net["norm"] == "conditional_instance"
    scale = net.norm_layers()[0].scale
    for k in range(3):  # each style's row started at 1 and has been trained
        assert not torch.equal(scale[k], torch.ones_like(scale[k])), f"style {k} never trained"
    x = torch.rand(1, 3, 32, 32)
    outputs = [net(x, torch.eye(3)[k:k + 1]) for k in range(3)]
    assert not torch.allclose(outputs[0], outputs[1]) and not torch.allclose(outputs[1], outputs[2])
    (log,) = (tmp_path / "run" / "logs").glob("*/metrics.csv")
    columns = set(log.read_text().splitlines()[0].split(","))
    assert {f"{stage}/{name}" for stage in ("train", "val")
            for name in ("loss", "content_loss", "style_loss", "tv_loss")} <= columns


def test_tensorboard_gets_the_loss_terms_and_the_sample_grid(tmp_path, photos):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                            reason="needs tensorboard (a styletrain dependency)")
    styles = write_images(tmp_path / "styles", 2, seed=4)
    module = tiny_module(*styles)
    data = tiny_data(photos)
    fit(module, data, tmp_path / "run", quick(3))
    (version,) = (tmp_path / "run" / "logs").iterdir()
    assert (version / "metrics.csv").is_file() and list(version.glob("events.out.tfevents.*"))
    events = event_accumulator.EventAccumulator(str(version))
    events.Reload()
    tags = events.Tags()
    assert {f"{stage}/{name}" for stage in ("train", "val")
            for name in ("loss", "content_loss", "style_loss", "tv_loss")} <= set(tags["scalars"])
    assert events.Scalars("train/loss") and events.Scalars("val/style_loss")
    (image,) = events.Images("samples")
    assert image.step == 3 and image.width > image.height > 32  # photos + 2 styles side by side


def test_adding_a_style_keeps_old_styles_bit_identical(tmp_path, photos):
    styles = write_images(tmp_path / "styles", 3, seed=3)
    data = partial(tiny_data, photos)
    base = fit(tiny_module(*styles[:2]), data(), tmp_path / "base", quick(2))
    extended = fit(tiny_module(styles[2], base_checkpoint=str(base)), data(), tmp_path / "extended", quick(4))
    old, _ = load_transformer(base)
    new, meta = load_transformer(extended)
    assert meta.style_names == ["img0", "img1", "img2"] and new.num_styles == 3
    x = torch.rand(1, 3, 40, 36)
    for k in range(2):
        w_old, w_new = torch.eye(2)[k:k + 1], torch.eye(3)[k:k + 1]
        assert torch.equal(old(x, w_old), new(x, w_new)), f"style {k} changed"
    new_state, old_state = new.state_dict(), old.state_dict()
    for name, value in old_state.items():
        if name.endswith(("scale", "shift")):
            assert torch.equal(new_state[name][:2], value)
            assert not torch.equal(new_state[name][2], value.mean(0)), "new style row did not train"
        else:
            assert torch.equal(new_state[name], value), name


def test_base_must_be_multi_style(tmp_path, single_ckpt):
    style = write_images(tmp_path / "styles", 1)[0]
    with pytest.raises(UserError, match="single-style net"):
        StyleTransferModule([str(style)], base_checkpoint=str(single_ckpt), vgg_weights="random")


def test_duplicate_style_names_are_rejected(tmp_path):
    a = write_images(tmp_path / "a", 1)[0]
    b = write_images(tmp_path / "b", 1)[0]
    with pytest.raises(UserError, match="unique"):
        StyleTransferModule([str(a), str(b)], vgg_weights="random")


def test_identity_row_trains_with_the_styles(tmp_path, photos):
    styles = write_images(tmp_path / "styles", 2, seed=9)
    module = tiny_module(*styles, identity=True)
    data = PhotoDataModule(str(photos), image_size=32, batch_size=3, num_workers=0, val_count=2)
    _, loss_rows = module._style_choice(3, "val")
    assert loss_rows.tolist() == [[1, 0], [0, 1], [0, 0]]  # the identity row is trained on content alone
    last = fit(module, data, tmp_path / "run", quick(6))
    net, meta = load_transformer(last)
    assert meta.style_names == ["img0", "img1", "identity"] and net.num_styles == 3
    norms = [m for m in net.modules() if hasattr(m, "scale")]
    assert any(not torch.equal(m.scale[2], torch.ones_like(m.scale[2])) for m in norms)  # its row was trained


def test_validation_scores_every_photo_under_every_style(tmp_path, photos, monkeypatch):
    styles = write_images(tmp_path / "styles", 3, seed=9)
    module = tiny_module(*styles)
    data = tiny_data(photos)
    seen = []
    step = StyleTransferModule._shared_step

    def watched(self, batch, stage):
        if stage == "val":
            seen.append((batch, self._style_choice(batch.shape[0], stage)[0].argmax(1).tolist()))
        return step(self, batch, stage)

    monkeypatch.setattr(StyleTransferModule, "_shared_step", watched)
    fit(module, data, tmp_path / "run", quick(1))
    (batch, picks), = seen
    assert picks == [0, 1, 2, 0, 1, 2]  # two photos, each under all three styles
    assert torch.equal(batch[0], batch[2]) and torch.equal(batch[3], batch[5]) and not torch.equal(batch[0], batch[3])


def test_ddp_ranks_draw_their_own_styles_and_crops(tmp_path):
    """Lightning's seed_everything gives every rank the same seed; each rank must then re-seed its own."""
    styles = write_images(tmp_path / "styles", 3, seed=9)
    module = tiny_module(*styles)
    draws = []
    for rank in (0, 1):
        torch.manual_seed(7)  # what seed_everything did on both
        module._trainer = SimpleNamespace(world_size=2, global_rank=rank, optimizers=[], lr_scheduler_configs=[])
        module.on_train_start()
        draws.append(module._style_choice(64, "train")[0])
    module._trainer = None
    assert not torch.equal(draws[0], draws[1])  # the two ranks' style picks differ


def test_max_time_limits_each_attempt_not_the_run(tmp_path, photos):
    """A resumed run gets its own --max-time: the GPU session trains in 10-minute attempts."""
    styles = write_images(tmp_path / "styles", 1, seed=9)
    data = partial(tiny_data, photos)
    module = partial(tiny_module, styles[0])
    options = quick(100_000, max_time="00:00:00:01")
    first = read_checkpoint(fit(module(), data(), tmp_path / "run", options))["global_step"]
    second = read_checkpoint(fit(module(), data(), tmp_path / "run", options))["global_step"]
    assert 0 < first < second


def test_a_resumed_attempt_does_not_replay_the_first_attempts_photos(tmp_path, monkeypatch):
    photos = write_images(tmp_path / "photos", 24)
    styles = write_images(tmp_path / "styles", 1, seed=9)
    seen: list[int] = []
    original = PhotoDataset.__getitem__

    def recording(self, index):  # training photos only (the 2 validation photos are a dataset of 2)
        if len(self) > 2:
            seen.append(index)
        return original(self, index)

    monkeypatch.setattr(PhotoDataset, "__getitem__", recording)
    data = partial(tiny_data, photos[0].parent)
    module = partial(tiny_module, styles[0])
    fit(module(), data(), tmp_path / "run", quick(3))
    first, seen[:] = list(seen), []
    fit(module(), data(), tmp_path / "run", quick(6))
    assert len(first) == len(seen) == 6 and seen != first


def test_identity_cannot_be_added_to_a_base(tmp_path, multi_ckpt):
    style = write_images(tmp_path / "styles", 1, seed=9)[0]
    with pytest.raises(UserError, match="--identity trains a new multi-style net"):
        StyleTransferModule([str(style)], vgg_weights="random", identity=True, base_checkpoint=str(multi_ckpt))
