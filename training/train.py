#!/usr/bin/env python3
"""Train an IllExpNet (attention net with eq. 3, enhancement net with eq. 4) on synthetic eq. 5 pairs.

    python training/train.py --config training/configs/mixed.yaml [--device cpu|cuda] [--resume]
                             [--out runs/] [--seed 0] [--threads N] [--max-steps N] [--export models/mixed.pt]
                             [--init-from mixed] [--lr 3e-4]

Writes to OUT/NAME/: checkpoint.pt (model + optimizer + RNG state, what --resume continues from), best.pt
(weights only, in the shipped model format, best validation PSNR so far), log.csv and curves.png.
Stops when the smoothed training loss has not improved by more than `min_delta` for `patience` batches (the
paper's rule: 300 batches, 1e-5), or at max_steps. With --export, best.pt is copied there at the end if its
validation PSNR beats the file already there (evaluated on the same validation split).
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from illexp_ros.core.fast import fast_forward  # noqa: E402
from illexp_ros.core.losses import attention_loss, enhancement_loss  # noqa: E402
from illexp_ros.core.metrics import psnr  # noqa: E402
from illexp_ros.core.networks import build_model, parameter_count  # noqa: E402
from illexp_ros.runtime.errors import EnhancerError  # noqa: E402
from illexp_ros.runtime.model_io import load_model, save_model  # noqa: E402
from training.config import ConfigError, RunConfig, load_config, resolve_data_dir  # noqa: E402
from training.data import PatchSource, fixed_pairs, list_images, split_holdout  # noqa: E402


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def forward(model, x: torch.Tensor, fast_short_side: int | None):
    if fast_short_side:
        return fast_forward(model, x, fast_short_side)
    return model(x)


@torch.no_grad()
def validate(model, pairs, device: str, fast_short_side: int | None) -> float:
    model.eval()
    scores = []
    for _, deg, ref in pairs:
        x = torch.from_numpy(deg.transpose(2, 0, 1)[None].copy()).to(device)
        out, _ = forward(model, x, fast_short_side)
        scores.append(psnr(out[0].permute(1, 2, 0).float().cpu().numpy(), ref))
    model.train()
    return float(np.mean(scores))


def plot_curves(csv_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(csv_path.open()))
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    ax[0].plot(steps, [float(r["loss_ema"]) for r in rows], label="total (EMA)")
    ax[0].plot(steps, [float(r["loss_att"]) for r in rows], label="attention eq.3", alpha=0.6)
    ax[0].plot(steps, [float(r["loss_enh"]) for r in rows], label="enhancement eq.4", alpha=0.6)
    ax[0].set_yscale("log")
    ax[0].set_xlabel("step")
    ax[0].legend()
    vals = [(int(r["step"]), float(r["val_psnr"])) for r in rows if r["val_psnr"]]
    if vals:
        ax[1].plot(*zip(*vals), marker=".")
    ax[1].set_xlabel("step")
    ax[1].set_ylabel("validation PSNR (dB)")
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def train(cfg: RunConfig, device: str, out_root: Path, seed: int, resume: bool, export: Path | None,
          max_steps: int | None = None, progress: bool = True) -> dict:
    from tqdm import tqdm

    t0 = time.time()
    seed_everything(seed)
    run_dir = out_root / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    files = list_images(resolve_data_dir(cfg.data.train_dir))
    train_files, held = split_holdout(files, cfg.data.val_fraction, cfg.data.val_seed)
    val_pairs = fixed_pairs(held, cfg.data, seed=cfg.data.val_seed, crop=cfg.data.val_crop,
                            max_images=cfg.data.max_val_images)
    rng = np.random.default_rng(seed)
    source = PatchSource(train_files, cfg.data, rng)

    model = build_model(cfg.model).to(device)
    if cfg.train.init_from and not resume:
        init, _ = load_model(cfg.train.init_from)
        model.load_state_dict(init.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)  # the paper: Adam, default betas
    step, best_val, best_ema, since_best, ema = 0, -np.inf, np.inf, 0, None
    ckpt_path = run_dir / "checkpoint.pt"
    log_path = run_dir / "log.csv"
    if resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, best_val, best_ema, since_best, ema = (ck["step"], ck["best_val"], ck["best_ema"],
                                                     ck["since_best"], ck["ema"])
        rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        t0 -= ck.get("elapsed", 0.0)  # times in the log and the model meta count the whole run
        if log_path.exists():  # rows an interrupted run logged after its last checkpoint are redone: drop them
            with log_path.open(newline="") as f:
                rows = list(csv.reader(f))
            with log_path.open("w", newline="") as f:
                csv.writer(f).writerows(rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= step])
    elif log_path.exists():
        log_path.unlink()
    new_log = not log_path.exists()
    log_f = log_path.open("a", newline="")
    writer = csv.writer(log_f)
    if new_log:
        writer.writerow(["step", "loss_att", "loss_enh", "loss_ema", "val_psnr", "elapsed_s"])

    def save_checkpoint() -> None:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                    "best_val": best_val, "best_ema": best_ema, "since_best": since_best, "ema": ema,
                    "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                    "elapsed": time.time() - t0}, ckpt_path)

    limit = max_steps or cfg.train.max_steps
    fast = cfg.train.fast_short_side
    n_params = parameter_count(model)
    stop_reason = "max_steps"
    model.train()
    bar = tqdm(total=limit, initial=step, desc=cfg.name, disable=not progress, dynamic_ncols=True)
    # Ctrl-C / SIGTERM end the run like the stopping rule does: checkpoint, curves, summary and export.
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while step < limit:
            deg, ref, em_t = (torch.from_numpy(a).to(device) for a in source.batch(cfg.train.batch_size,
                                                                                   cfg.data.crop))
            if fast:
                out, em = fast_forward(model, deg, fast)
                loss_att = attention_loss(em, em_t)
            else:
                em = model.attention(deg) if model.attention is not None else None
                # The attention net learns from eq. 3 only (as in the paper); the map it hands on is detached.
                enh_in = deg if em is None else torch.cat([deg, em.detach()], dim=1)
                out = model.enhancement(enh_in)
                loss_att = attention_loss(em, em_t) if em is not None else torch.zeros((), device=device)
            loss_enh = enhancement_loss(out, ref)
            loss = loss_att + loss_enh
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            value = loss.item()
            ema = value if ema is None else cfg.train.ema * ema + (1 - cfg.train.ema) * value
            if ema < best_ema - cfg.train.min_delta:
                best_ema, since_best = ema, 0
            else:
                since_best += 1
            val = ""
            if step % cfg.train.val_every == 0 or step == limit:
                val_psnr = validate(model, val_pairs, device, fast)
                val = f"{val_psnr:.3f}"
                if val_psnr > best_val:
                    best_val = val_psnr
                    save_model(run_dir / "best.pt", model, cfg.model, cfg.name,
                               meta={"step": step, "val_psnr": round(val_psnr, 3), "device": device,
                                     "config": cfg.name, "fast_short_side": fast,
                                     "init_from": cfg.train.init_from, "lr": cfg.train.lr,
                                     "train_seconds": round(time.time() - t0, 1)})
                bar.set_postfix(loss=f"{ema:.4f}", val_psnr=f"{val_psnr:.2f}", best=f"{best_val:.2f}")
            writer.writerow([step, f"{loss_att.item():.6f}", f"{loss_enh.item():.6f}", f"{ema:.6f}", val,
                             f"{time.time() - t0:.1f}"])
            bar.update(1)
            if step % cfg.train.checkpoint_every == 0:
                log_f.flush()
                save_checkpoint()
                plot_curves(log_path, run_dir / "curves.png")
            if since_best >= cfg.train.patience:
                stop_reason = f"no improvement > {cfg.train.min_delta} for {cfg.train.patience} batches"
                break
    except KeyboardInterrupt:
        stop_reason = "interrupted"
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    bar.close()
    save_checkpoint()
    log_f.close()
    plot_curves(log_path, run_dir / "curves.png")
    summary = {"name": cfg.name, "steps": step, "best_val_psnr": round(float(best_val), 3), "stop": stop_reason,
               "parameters": n_params, "device": device, "seconds": round(time.time() - t0, 1),
               "run_dir": str(run_dir)}
    if export is not None and (run_dir / "best.pt").exists():
        summary["exported"] = maybe_export(run_dir / "best.pt", export, val_pairs, device, fast)
    return summary


def maybe_export(best: Path, target: Path, val_pairs, device: str, fast: int | None) -> str:
    """Copy best.pt over target only if it scores higher on the same validation pairs."""
    new_model, _ = load_model(best)
    new_score = validate(new_model.to(device), val_pairs, device, fast)
    if target.exists():
        try:
            old_model, _ = load_model(target)
            old_score = validate(old_model.to(device), val_pairs, device, fast)
        except Exception:  # noqa: BLE001 - an unreadable old file is simply replaced
            old_score = -np.inf
        if old_score >= new_score:
            return f"kept {target} ({old_score:.2f} dB >= new {new_score:.2f} dB)"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best, target)
    return f"wrote {target} ({new_score:.2f} dB on validation)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--out", default="runs", help="output root (default runs/)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/NAME/checkpoint.pt")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--max-steps", type=int, default=None, help="override train.max_steps")
    p.add_argument("--export", default=None, help="copy best weights here if they beat the file there")
    p.add_argument("--init-from", default=None,
                   help="override train.init_from: warm-start from this model name or file (e.g. the shipped one)")
    p.add_argument("--lr", type=float, default=None, help="override train.lr (e.g. lower, to fine-tune)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.init_from:
        cfg.train.init_from = args.init_from
    if args.lr is not None:
        if not args.lr > 0:
            print(f"error: --lr must be > 0, got {args.lr}", file=sys.stderr)
            return 2
        cfg.train.lr = args.lr
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda asked for, but torch sees no CUDA GPU", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        summary = train(cfg, args.device, Path(args.out), args.seed, args.resume,
                        Path(args.export) if args.export else None, args.max_steps, not args.no_progress)
    except (FileNotFoundError, ValueError, EnhancerError) as exc:  # EnhancerError: a bad init_from model
        print(f"error: {exc}", file=sys.stderr)
        return 2
    width = max(len(k) for k in summary)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
