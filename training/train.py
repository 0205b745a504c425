#!/usr/bin/env python3
"""Train an IllExpNet (attention net with eq. 3, enhancement net with eq. 4) on synthetic eq. 5 pairs.

    python training/train.py --config training/configs/mixed.yaml [--device cpu|cuda] [--amp] [--resume]
                             [--out runs/] [--seed 0] [--threads N] [--max-steps N] [--minutes M]
                             [--export models/mixed.pt] [--init-from mixed] [--lr 3e-4] [--batch-size B]
                             [--crop C] [--val-every N] [--checkpoint-every N] [--stop RULE] [--train-dir DIR]
                             [--pause-after M] [--overwrite]

Writes to OUT/NAME/: checkpoint.pt (model + optimizer + data-generator state, what --resume continues from),
best.pt (weights only, in the shipped model format, best validation score so far), log.csv and curves.png. A
folder that holds an earlier run is refused unless --resume (continue it) or --overwrite (start afresh).

The recipe: Adam with a cosine learning rate from train.lr down to lr * lr_min_ratio over max_steps or the
wall-clock budget (--minutes), whichever ends first (after a linear ramp over train.warmup_steps, 0 = none);
batches synthesised on the training device (training/data.py, TensorPatchSource); validation every val_every
steps on fixed held-out draws of each kind (under, over, mixed-region, mild, well-exposed), logged per kind; a
warm start (--init-from) validates its starting weights first, logged as step 0. The score that picks best.pt
is the mean of the per-kind PSNRs (each capped at 35 dB). Stopping (train.stop): `val_plateau` (val_patience validations
without a better score), `paper` (the smoothed loss has not improved by min_delta for `patience` batches: the
paper's rule) or `none`. With --export, best.pt is copied there at the end if its validation score beats the
file already there (evaluated on the same validation pairs).

A run may train in legs (a borrowed GPU allows 10 minutes per command): --pause-after M ends this leg when the run's
clock reaches M minutes, validating its last weights (a leg that is never resumed keeps its best) and leaving an
exact checkpoint, but exporting nothing; --resume with the same --minutes (and no --pause-after, or a later one)
continues it on the same cosine: the same weights as a run that did not pause.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from illexp_ros.core.fast import DEFAULT_FIT, GuidedFit, fast_forward, run_network  # noqa: E402
from illexp_ros.core.losses import attention_loss, enhancement_loss, view_consistency_loss  # noqa: E402
from illexp_ros.core.metrics import psnr  # noqa: E402
from illexp_ros.core.networks import build_model, parameter_count  # noqa: E402
from illexp_ros.runtime.errors import EnhancerError, error_line  # noqa: E402
from illexp_ros.runtime.model_io import guided_fit_meta, load_model, save_model  # noqa: E402
from training.arguments import int_at_least, thread_count  # noqa: E402
from training.config import (  # noqa: E402
    VAL_KINDS,
    ConfigError,
    RunConfig,
    apply_overrides,  # noqa: E402
    load_config,
    name_is_inherited,
    named_overrides,
)
from training.data import TensorPatchSource, config_photos, config_validation_sets  # noqa: E402
from training.precise_bn import fixed_draw_state, with_precise_bn  # noqa: E402


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# Per-kind validation PSNR counts at most this much in the score: past it a frame's change is invisible (RMS error
# < 4.6 / 255), and only the well-exposed kind gets there. 40 dB until the night of 2026-11-27: the score then
# rewarded well-exposed gains between 35 and 40 dB on the 16 validation photos as much as any correcting kind's,
# and the candidates it ranked highest were the ones that lost most on the 18 confirmation photos. Over the six
# files scored on both (the shipped mixed_fast, two fine-tunes, two weight soups, a view-consistency run), the rank
# correlation between the validation and the confirmation scores is -0.03 with the cap at 40 and 0.94 at 35.
PSNR_CAP = 35.0


def validation_score(psnr_by_kind: dict[str, float]) -> float:
    """The mean over kinds of each kind's PSNR capped at PSNR_CAP: what checkpoint selection, stopping and export
    compare (and level_diagnosis.py prints)."""
    return float(np.mean([min(v, PSNR_CAP) for v in psnr_by_kind.values()]))


@torch.no_grad()
def validate(model, val_sets: dict, device: str, fast_short_side: int | None, chunk: int = 8,
             fit: GuidedFit = DEFAULT_FIT) -> dict[str, float]:
    """Mean PSNR per kind of draw on the fixed validation pairs (fast mode through `fit` when fast_short_side),
    and `score` (validation_score)."""
    was_training = model.training
    model.eval()
    result = {}
    for kind, pairs in val_sets.items():
        scores = []
        for i in range(0, len(pairs), chunk):
            group = pairs[i:i + chunk]
            same = len({p[1].shape for p in group}) == 1
            batches = [group] if same else [[p] for p in group]
            for b in batches:
                x = torch.from_numpy(np.stack([p[1] for p in b]).transpose(0, 3, 1, 2).copy()).to(device)
                out, _ = run_network(model, x, fast_short_side, fit)
                out = out.float().permute(0, 2, 3, 1).cpu().numpy()
                scores += [psnr(o, p[2]) for o, p in zip(out, b)]
        result[kind] = float(np.mean(scores))
    result["score"] = validation_score(result)
    model.train(was_training)
    return result


def plot_curves(csv_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(csv_path.open()))
    if not rows:
        return
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    train_rows = [r for r in rows if r["loss_att"]]  # the closing validation row of a run has no losses
    steps = [int(r["step"]) for r in train_rows]
    ax[0].plot(steps, [float(r["loss_ema"]) for r in train_rows], label="total (EMA)")
    ax[0].plot(steps, [float(r["loss_att"]) for r in train_rows], label="attention eq.3", alpha=0.5)
    ax[0].plot(steps, [float(r["loss_enh"]) for r in train_rows], label="enhancement eq.4", alpha=0.5)
    ax[0].set_yscale("log")
    ax[0].set_xlabel("step")
    ax[0].legend(fontsize=8)
    for col in ("val_psnr", *(f"val_{k}" for k in VAL_KINDS)):
        vals = [(int(r["step"]), min(float(r[col]), 50.0)) for r in rows if r.get(col)]
        if vals:
            ax[1].plot(*zip(*vals), marker=".", label="score" if col == "val_psnr" else col[4:],
                       linewidth=2.5 if col == "val_psnr" else 1.0)
    ax[1].set_xlabel("step")
    ax[1].set_ylabel("validation PSNR (dB)")
    if ax[1].lines:  # no validation row yet early in a run
        ax[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)


class StopRequest:
    """Ctrl-C / SIGTERM while training (a context manager): the run stops after the step, validation and log row
    in progress, so the checkpoint it writes is exact and --resume continues as an uninterrupted run would (a
    step cut in half had already drawn its batch and moved BatchNorm's statistics). A second signal stops at
    once (KeyboardInterrupt); the last periodic checkpoint then stands."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # only there can Python handle signals
            self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ntrain.py: stopping after this step (signal again to stop at once)", file=sys.stderr, flush=True)


def learning_rate(cfg: RunConfig, step: int, elapsed: float) -> float:
    """Cosine from lr to lr * lr_min_ratio over train.max_steps or the time budget, whichever ends first. The
    schedule follows the config's max_steps, not a --max-steps cap, so a run cut short and resumed (or
    continued with a larger cap) stays on the same curve. With train.warmup_steps W, the step taken after `step`
    steps gets (step + 1) / W of that while step < W."""
    t = cfg.train
    ramp = min(1.0, (step + 1) / t.warmup_steps) if t.warmup_steps > 0 else 1.0
    if t.schedule == "constant":
        return t.lr * ramp
    progress = step / t.max_steps
    if t.minutes > 0:
        progress = max(progress, elapsed / (60.0 * t.minutes))
    progress = min(progress, 1.0)
    low = t.lr * t.lr_min_ratio
    return ramp * (low + 0.5 * (t.lr - low) * (1.0 + math.cos(math.pi * progress)))


LOG_HEADER = ["step", "loss_att", "loss_enh", "loss_ema", "lr", "val_psnr", *(f"val_{k}" for k in VAL_KINDS),
              "elapsed_s"]


def warm_start(model, init_from: str) -> str:
    """Load a model file's weights; a tone-head model started from an rgb-head file gets its output layer
    zeroed (the identity), since the same layer means something else there. Returns a note for the meta."""
    init, info = load_model(init_from)
    fit_weights(model, init.state_dict(), f"--init-from {init_from}")
    if getattr(model.enhancement, "head", "rgb") == "tone" and info["model_config"].get("head", "rgb") != "tone":
        model.enhancement.reset_output_layer()
        return f"{init_from} (body only: output layer reset for the tone head)"
    return str(init_from)


def fit_weights(model: torch.nn.Module, state: dict, source: str) -> None:
    """model.load_state_dict(state); ValueError in one line when the network of `source` is not the config's
    (torch lists every mismatched tensor over many lines)."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        ours, theirs = model.state_dict(), state
        missing = sorted(set(ours) - set(theirs))
        shapes = [k for k in ours if k in theirs and ours[k].shape != theirs[k].shape]
        detail = (f"{len(shapes)} tensors of another shape (first {shapes[0]}: {tuple(theirs[shapes[0]].shape)} "
                  f"where the config's network has {tuple(ours[shapes[0]].shape)})" if shapes
                  else f"{len(missing)} tensors missing (first {missing[0]})" if missing else error_line(exc))
        raise ValueError(f"{source} does not fit the network of this config: {detail}; the config's 'model' "
                         "section (widths, attention_width, ...) must match the file's") from None


class StepTimer:
    """Wall-clock milliseconds per phase of one training step (training/profile_step.py)."""

    PHASES = ("data", "forward", "loss", "backward", "optimizer")

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._t = time.perf_counter()

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.ms[phase] = self.ms.get(phase, 0.0) + 1000.0 * (now - self._t)
        self._t = now


def training_model(cfg: RunConfig, device: str) -> torch.nn.Module:
    """The network a config trains, on `device`, in channels_last: faster convolutions on the GPU (cuDNN) and on
    the CPU too (oneDNN; training/profile_step.py at 2 threads: paper-sized net at 96 px ~1.35 -> ~0.95 s per
    step, fast net ~3 %)."""
    return build_model(cfg.model).to(device).to(memory_format=torch.channels_last)


def weight_average(model: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of the weights and of the BatchNorm statistics (None when decay is 0).

    Why (beyond the paper): with batches of 8 that mix very different draws (dark, blown-out, well-exposed),
    the last step's weights and BatchNorm statistics move from one validation to the next by up to 0.6 dB
    (the 68-minute CPU run of mixed_fast: 18.6-19.2 dB at learning rates of 1-3e-5), and picking the best of
    those fluctuations selects noise. The average is smoother and usually better (Polyak averaging).
    """
    if decay <= 0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def training_step(model, opt, source, cfg: RunConfig, fast: int | None, amp: bool = False,
                  timer: StepTimer | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimisation step on a fresh batch; returns (loss, attention loss, enhancement loss), detached."""
    mark = timer.mark if timer is not None else (lambda phase: None)
    cuda = source.device.type == "cuda"
    offset = None
    if cfg.train.view_shift:
        deg, ref, em_t, offset = source.view_pairs(cfg.train.batch_size // 2, cfg.data.crop, cfg.train.view_shift)
    else:
        deg, ref, em_t = source.batch(cfg.train.batch_size, cfg.data.crop)
    deg = deg.contiguous(memory_format=torch.channels_last)
    mark("data")
    # bf16 autocast on the GPU only (8-14x slower on CPUs without bf16 units); losses in fp32.
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and cuda):
        if fast:
            out, em = fast_forward(model, deg, fast, *cfg.train.guided_fit())
        else:
            em = model.attention(deg) if model.attention is not None else None
            # The attention net learns from eq. 3 only (as in the paper); the map it hands on is detached.
            enh_in = deg if em is None else torch.cat([deg, em.detach()], dim=1)
            out = model.enhancement(enh_in)
    mark("forward")
    loss_att = attention_loss(em.float(), em_t) if em is not None else torch.zeros((), device=deg.device)
    loss_enh = enhancement_loss(out.float(), ref, l1_weight=cfg.train.l1_weight,
                                mse_weight=cfg.train.mse_weight)
    loss = loss_att + loss_enh
    if offset is not None and cfg.train.view_consistency:
        first, second = out.float().chunk(2)
        loss = loss + cfg.train.view_consistency * view_consistency_loss(first, second, offset)
    mark("loss")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    mark("backward")
    if cfg.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
    opt.step()
    mark("optimizer")
    return loss.detach(), loss_att.detach(), loss_enh.detach()


def train(cfg: RunConfig, device: str, out_root: Path, seed: int, resume: bool, export: Path | None,
          max_steps: int | None = None, progress: bool = True, amp: bool = False,
          pause_after: float | None = None) -> dict:
    from tqdm import tqdm

    t0 = time.time()
    seed_everything(seed)
    run_dir = out_root / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    train_files, held = config_photos(cfg.data)
    val_sets = config_validation_sets(cfg.data, held)
    source = TensorPatchSource(train_files, cfg.data, seed, device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest kernels

    model = training_model(cfg, device)
    init_note = None
    if cfg.train.init_from and not resume:
        init_note = warm_start(model, cfg.train.init_from)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)  # the paper: Adam, default betas
    averaged = weight_average(model, cfg.train.weight_average)
    evaluated = averaged.module if averaged is not None else model  # what validation, best.pt and export see
    step, best_val, best_ema, since_best, ema, val_since_best = 0, -np.inf, np.inf, 0, None, 0
    last_val_step = -1
    ckpt_path = run_dir / "checkpoint.pt"
    log_path = run_dir / "log.csv"
    if resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        try:
            ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
            raise ValueError(f"--resume: {ckpt_path} cannot be read ({error_line(exc)}); start a new run or "
                             "--init-from its best.pt") from exc
        if not isinstance(ck, dict) or "source" not in ck:
            raise ValueError(f"--resume: {ckpt_path} was written by an older train.py; start a new run "
                             "(--init-from its best.pt)")
        fit_weights(model, ck["model"], f"--resume: {ckpt_path}")
        opt.load_state_dict(ck["optimizer"])
        if averaged is not None:
            if ck.get("averaged") is None:
                raise ValueError(f"--resume: {ckpt_path} has no averaged weights (train.weight_average was off)")
            averaged.load_state_dict(ck["averaged"])
        step, best_val, best_ema, since_best, ema = (ck["step"], ck["best_val"], ck["best_ema"],
                                                     ck["since_best"], ck["ema"])
        val_since_best = ck.get("val_since_best", 0)
        # A run resumed after it ended (its budget spent, max_steps reached) must not validate its last step again.
        last_val_step = ck.get("last_val_step", -1)
        source.set_state(ck["source"])
        torch.set_rng_state(ck["torch_rng"])
        init_note = ck.get("init_note")
        t0 -= ck.get("elapsed", 0.0)  # times in the log and the model meta count the whole run
        if log_path.exists():  # rows an interrupted run logged after its last checkpoint are redone: drop them
            with log_path.open(newline="") as f:
                rows = list(csv.DictReader(f))
            # Rewritten under today's header: a run logged before a validation kind was added keeps its columns.
            with log_path.open("w", newline="") as f:
                out = csv.DictWriter(f, LOG_HEADER, restval="", extrasaction="ignore")
                out.writeheader()
                out.writerows(r for r in rows if r.get("step") and int(r["step"]) <= step)
    else:  # a fresh run in this folder: nothing of an earlier one may pass for its own (--export ships best.pt)
        for stale in (log_path, run_dir / "best.pt", ckpt_path, run_dir / "curves.png"):
            stale.unlink(missing_ok=True)
    new_log = not log_path.exists()
    log_f = log_path.open("a", newline="")
    writer = csv.writer(log_f)
    if new_log:
        writer.writerow(LOG_HEADER)

    def weights_finite() -> bool:
        """A step can ruin the weights before its loss shows it: such weights are never checkpointed. The
        averaged copy too, which validation, best.pt and export use."""
        params = [*model.parameters(), *(averaged.module.parameters() if averaged is not None else ())]
        return all(bool(torch.isfinite(p).all()) for p in params)

    def save_checkpoint() -> None:
        """Written whole or not at all (a temporary file renamed): a run killed mid-save keeps the last one."""
        tmp = ckpt_path.with_name(ckpt_path.name + ".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                    "best_val": best_val, "best_ema": best_ema, "since_best": since_best, "ema": ema,
                    "val_since_best": val_since_best, "last_val_step": last_val_step, "source": source.state(),
                    "init_note": init_note, "torch_rng": torch.get_rng_state(), "elapsed": time.time() - t0,
                    "averaged": averaged.state_dict() if averaged is not None else None}, tmp)
        os.replace(tmp, ckpt_path)

    limit = max_steps or cfg.train.max_steps
    fast = cfg.train.fast_short_side
    fit = cfg.train.guided_fit()
    # The same batches for every BatchNorm measurement of the run (seeded apart from the training stream).
    bn_draws = fixed_draw_state(seed + 104729, device)
    last_val: dict[str, float] = {}

    def validate_and_keep() -> list[str]:
        """Validate, keep best.pt if the score improved; returns the log cells."""
        nonlocal last_val, last_val_step, best_val, val_since_best
        checked = evaluated
        if cfg.train.precise_bn_batches:
            checked = with_precise_bn(evaluated, source, bn_draws, cfg.train.precise_bn_batches,
                                      cfg.train.batch_size, cfg.data.crop, fast)
        last_val, last_val_step = validate(checked, val_sets, device, fast, fit=fit), step
        if last_val["score"] > best_val:
            best_val, val_since_best = last_val["score"], 0
            save_model(run_dir / "best.pt", checked, cfg.model, cfg.name,
                       meta={"step": step, "val_psnr": round(last_val["score"], 3),
                             "val_by_kind": {k: round(v, 2) for k, v in last_val.items() if k != "score"},
                             "device": device, "config": cfg.name, "fast_short_side": fast,
                             **(guided_fit_meta(fit) if fast else {}),
                             "init_from": init_note, "lr": cfg.train.lr,
                             "weight_average": cfg.train.weight_average, "grad_clip": cfg.train.grad_clip,
                             "l1_weight": cfg.train.l1_weight, "mse_weight": cfg.train.mse_weight,
                             "precise_bn_batches": cfg.train.precise_bn_batches,
                             "train_seconds": round(time.time() - t0, 1)})
        else:
            val_since_best += 1
        bar.set_postfix(loss="-" if ema is None else f"{ema:.4f}", val=f"{last_val['score']:.2f}",
                        best=f"{best_val:.2f}")
        return [f"{last_val['score']:.3f}"] + [f"{last_val[k]:.3f}" if k in last_val else "" for k in VAL_KINDS]

    def validation_only_row() -> list[str]:
        """A log row with a validation and no training step (a warm start's step 0, a run's closing one)."""
        return [step, "", "", "" if ema is None else f"{ema:.6f}", "", *validate_and_keep(),
                f"{time.time() - t0:.1f}"]

    n_params = parameter_count(model)
    stop_reason = "max_steps"
    bar = tqdm(total=limit, initial=step, desc=cfg.name, disable=not progress, dynamic_ncols=True)
    # Ctrl-C / SIGTERM end the run like the stopping rule does, between two steps: checkpoint, curves, summary and
    # export.
    stopped_at_once = diverged = paused = False
    with StopRequest() as stop:
        try:
            if init_note is not None and step == 0:
                # A warm start's own score first, measured as every later one: the curve then shows whether the
                # run improves on where it began, and best.pt stays the starting weights unless a step beats them.
                writer.writerow(validation_only_row())
            model.train()
            while step < limit:
                # The stopping rules before a step, not after it: a run that stopped on them and is resumed
                # takes no further step (it trained, validated and logged one more at each resume).
                if cfg.train.stop == "paper" and since_best >= cfg.train.patience:
                    stop_reason = f"no improvement > {cfg.train.min_delta} for {cfg.train.patience} batches"
                    break
                if cfg.train.stop == "val_plateau" and val_since_best >= cfg.train.val_patience:
                    stop_reason = f"validation plateau ({cfg.train.val_patience} validations without a better score)"
                    break
                if stop.requested:
                    stop_reason = "interrupted"
                    break
                elapsed = time.time() - t0
                if cfg.train.minutes > 0 and elapsed >= 60.0 * cfg.train.minutes:
                    stop_reason = f"time budget ({cfg.train.minutes:g} min)"
                    break
                if pause_after is not None and elapsed >= 60.0 * pause_after:
                    stop_reason, paused = f"paused at {pause_after:g} min (--resume continues the run)", True
                    break
                lr = learning_rate(cfg, step, elapsed)
                for group in opt.param_groups:
                    group["lr"] = lr
                loss, loss_att, loss_enh = training_step(model, opt, source, cfg, fast, amp=amp)
                if averaged is not None:
                    averaged.update_parameters(model)
                step += 1
                value = loss.item()
                if not math.isfinite(value):  # the weights are lost: keep the last checkpoint and best.pt
                    stop_reason, diverged = f"diverged: non-finite loss ({value}) at step {step}", True
                    break
                ema = value if ema is None else cfg.train.ema * ema + (1 - cfg.train.ema) * value
                if ema < best_ema - cfg.train.min_delta:
                    best_ema, since_best = ema, 0
                else:
                    since_best += 1
                val_cells = [""] * (1 + len(VAL_KINDS))
                if step % cfg.train.val_every == 0 or step == limit:
                    val_cells = validate_and_keep()
                writer.writerow([step, f"{loss_att.item():.6f}", f"{loss_enh.item():.6f}", f"{ema:.6f}", f"{lr:.3g}",
                                 *val_cells, f"{time.time() - t0:.1f}"])
                bar.update(1)
                if step % cfg.train.checkpoint_every == 0:
                    if not weights_finite():
                        stop_reason, diverged = f"diverged: non-finite weights at step {step}", True
                        break
                    log_f.flush()
                    save_checkpoint()
                    plot_curves(log_path, run_dir / "curves.png")
            if not diverged and not weights_finite():  # the last steps' weights: neither validated nor saved
                stop_reason, diverged = f"diverged: non-finite weights at step {step}", True
            # A run ended by its time budget: its last weights are validated too. Not an interrupted one: that
            # validation would count towards the plateau rule and could write best.pt, which the resumed run's
            # uninterrupted twin does not do. A paused leg is validated all the same: the leg after it may never
            # come (a GPU lease that ran out), and validation changes no weights.
            if stop_reason != "interrupted" and not diverged and step > max(last_val_step, 0):
                writer.writerow(validation_only_row())
        except KeyboardInterrupt:  # the second signal: mid-step, so the state is not one to resume from
            stop_reason, stopped_at_once = "interrupted at once", True
    bar.close()
    if stopped_at_once or diverged:
        kept = (f"{ckpt_path} keeps its last periodic checkpoint" if ckpt_path.is_file()
                else "no checkpoint was written yet")
        print(f"train.py: {'diverged' if diverged else 'stopped at once'}; {kept}", file=sys.stderr)
    else:
        save_checkpoint()
    log_f.close()
    plot_curves(log_path, run_dir / "curves.png")
    summary = {"name": cfg.name, "steps": step, "best_val_psnr": round(float(best_val), 3), "stop": stop_reason,
               "parameters": n_params, "device": device, "seconds": round(time.time() - t0, 1),
               "run_dir": str(run_dir)}
    if last_val:
        summary["last_val_by_kind"] = " ".join(f"{k} {v:.2f}" for k, v in last_val.items() if k != "score")
    if export is not None and not diverged and not paused and (run_dir / "best.pt").exists():  # the last leg exports
        summary["exported"] = maybe_export(run_dir / "best.pt", export, val_sets, device, fast)
    return summary


def maybe_export(best: Path, target: Path, val_sets: dict, device: str, fast: int | None) -> str:
    """Copy best.pt over target only if it scores higher on the same validation pairs (each file through the
    guided fit it records, as the runtime runs it)."""
    new_model, new_info = load_model(best)
    new_score = validate(new_model.to(device), val_sets, device, fast, fit=new_info["guided_fit"])["score"]
    if target.exists():
        try:
            old_model, old_info = load_model(target)
            old_score = validate(old_model.to(device), val_sets, device, fast, fit=old_info["guided_fit"])["score"]
        except Exception:  # noqa: BLE001 - an unreadable old file is simply replaced
            old_score = -np.inf
        if old_score >= new_score:
            return f"kept {target} ({old_score:.2f} dB >= new {new_score:.2f} dB)"
    target.parent.mkdir(parents=True, exist_ok=True)
    # copied whole, then renamed: an interrupted copy must not leave a broken file where a shipped model was
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(best, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return f"wrote {target} ({new_score:.2f} dB on validation)"


def output_problem(run_dir: Path, may_replace_run: bool, export: Path | None) -> str | None:
    """What would make this run destroy a file it should not, said before training: an earlier run in run_dir
    (a fresh run deletes its files: a 3-second run replaced a long run's best.pt), an --export target that is not a
    model file (it was taken for nothing to beat: the run's own config was written over)."""
    earlier = [name for name in ("checkpoint.pt", "best.pt") if (run_dir / name).exists()]
    if earlier and not may_replace_run:
        return (f"{run_dir} holds an earlier run ({', '.join(earlier)}): --resume continues it, --overwrite starts "
                f"afresh (deleting it), --name picks another folder")
    if export is not None and export.exists():
        try:
            load_model(export)
        except Exception as exc:  # noqa: BLE001 - whatever the file is, it is not one to replace
            return f"--export {export} exists and is not a model file ({error_line(exc)}); not replaced"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--out", default="runs", help="output root (default runs/)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/NAME/checkpoint.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in OUT/NAME even if it holds an earlier run (its files are deleted)")
    p.add_argument("--threads", type=thread_count, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--max-steps", type=int_at_least(1), default=None, help="override train.max_steps")
    p.add_argument("--export", default=None, help="copy best weights here if they beat the file there")
    p.add_argument("--init-from", default=None,
                   help="override train.init_from: warm-start from this model name or file (e.g. the shipped one)")
    p.add_argument("--lr", type=float, default=None, help="override train.lr (e.g. lower, to fine-tune)")
    p.add_argument("--minutes", type=float, default=None,
                   help="override train.minutes: wall-clock budget (the cosine schedule spans it)")
    p.add_argument("--pause-after", type=float, default=None, metavar="M",
                   help="end this leg when the run has trained M minutes (all legs together), leaving a checkpoint "
                        "that --resume continues on the same schedule (the cosine still spans --minutes)")
    p.add_argument("--batch-size", type=int, default=None, help="override train.batch_size")
    p.add_argument("--crop", type=int, default=None, help="override data.crop (multiple of 8)")
    p.add_argument("--val-every", type=int, default=None, help="override train.val_every")
    p.add_argument("--checkpoint-every", type=int, default=None, help="override train.checkpoint_every")
    p.add_argument("--stop", default=None, help="override train.stop: val_plateau | paper | none")
    p.add_argument("--train-dir", default=None, help="override data.train_dir (the clean photos)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config value, e.g. --set data.well_prob=0.35 (repeatable)")
    p.add_argument("--name", default=None, help="override the run name (the folder under --out)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not re.fullmatch(r"cpu|cuda(:\d+)?", args.device):
        p.error(f"--device must be cpu, cuda or cuda:N, got {args.device!r}")
    if args.export and Path(args.export).is_dir():  # said now, not after hours of training
        p.error(f"--export {args.export} is a folder: give the model file to write")
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.init_from:
        cfg.train.init_from = args.init_from
    if args.lr is not None:
        if not 0 < args.lr < math.inf:
            print(f"error: --lr must be a finite number > 0, got {args.lr}", file=sys.stderr)
            return 2
        cfg.train.lr = args.lr
    if args.pause_after is not None and not 0 < args.pause_after < math.inf:
        print(f"error: --pause-after must be a finite number of minutes > 0, got {args.pause_after}",
              file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda asked for, but torch sees no CUDA GPU", file=sys.stderr)
        return 2
    if args.amp and not args.device.startswith("cuda"):
        print("error: --amp is for --device cuda (bf16 autocast is 8-14x slower on CPUs without bf16 units)",
              file=sys.stderr)
        return 2
    # The named flags are shorthands for --set, so they get the same checks as the file.
    named = {"train.minutes": args.minutes, "train.batch_size": args.batch_size, "data.crop": args.crop,
             "train.val_every": args.val_every, "train.checkpoint_every": args.checkpoint_every,
             "train.stop": args.stop, "data.train_dir": args.train_dir}
    overrides = named_overrides(named)
    if args.name:
        cfg.name = args.name
    elif name_is_inherited(args.config):
        print(f"error: {args.config} takes the name {cfg.name!r} from its base: its run would replace the base's "
              f"in {Path(args.out) / cfg.name}; set `name:` in the file or pass --name", file=sys.stderr)
        return 2
    try:
        apply_overrides(cfg, overrides + args.set)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    problem = output_problem(Path(args.out) / cfg.name, args.resume or args.overwrite,
                             Path(args.export) if args.export else None)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.export:
            Path(args.export).parent.mkdir(parents=True, exist_ok=True)  # an unwritable one said before training
        summary = train(cfg, args.device, Path(args.out), args.seed, args.resume,
                        Path(args.export) if args.export else None, args.max_steps, not args.no_progress,
                        amp=args.amp, pause_after=args.pause_after)
    except (FileNotFoundError, ValueError, EnhancerError) as exc:  # EnhancerError: a bad init_from model
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # --out or --export in a folder that cannot be written
        print(f"error: {error_line(exc)}", file=sys.stderr)
        return 2
    width = max(len(k) for k in summary)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in summary.items()))
    if summary["stop"].startswith("diverged"):
        resumable = (Path(summary["run_dir"]) / "checkpoint.pt").is_file()
        advice = ("resume from the last checkpoint with a lower --lr, or start again with one" if resumable
                  else "start again with a lower --lr (no checkpoint was written)")
        print(f"error: training {summary['stop']}; {advice}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
