#!/usr/bin/env python3
"""Average the weights of several fine-tunes of one network (a "model soup"), greedily on validation.

    python training/weight_soup.py --config training/configs/mixed_fast.yaml --out soup.pt A.pt B.pt C.pt ...
                                   [--uniform] [--batches 128] [--batch-size 8] [--seed 1234] [--threads N]

Wortsman et al., "Model soups" (ICML 2022): networks fine-tuned from the same weights usually sit in one basin,
and the average of their weights can score higher than any of them, at no cost at inference. Greedy soup (the
default): every file is scored on the config's validation pairs (train.py's validate; never eval/), then, from
the best down, a file joins the soup only if the average with it scores higher than the soup without it.
--uniform averages them all. BatchNorm statistics do not average (a mean of variances is not the variance of
the averaged net), so every candidate's statistics, the single files' too, are measured afresh over the same
`--batches` training batches (training/precise_bn.py, as recalibrate_bn.py --all does). The files must share one
architecture and fast-mode setting. Prints each step and writes the soup with its ingredients in the file's
meta. Exit 0, or 2 with one line on an error.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from illexp_ros.runtime.errors import EnhancerError  # noqa: E402
from illexp_ros.runtime.model_io import load_model, save_model  # noqa: E402
from training.arguments import cannot_write, int_at_least, output_file, thread_count  # noqa: E402
from training.config import ConfigError, RunConfig, load_config  # noqa: E402
from training.data import TensorPatchSource, config_photos, config_validation_sets  # noqa: E402
from training.precise_bn import batchnorm_names, recalibrate  # noqa: E402
from training.train import validate  # noqa: E402


def average_weights(models: list[nn.Module]) -> nn.Module:
    """A copy of models[0] whose learned parameters are the mean of the models' (buffers: models[0]'s, to be
    measured again)."""
    soup = copy.deepcopy(models[0])
    with torch.no_grad():
        for name, param in soup.named_parameters():
            param.copy_(torch.stack([dict(m.named_parameters())[name].float() for m in models]).mean(0))
    return soup


class SoupScorer:
    """Measures a network's BatchNorm statistics over fixed training batches, then validates it."""

    def __init__(self, cfg: RunConfig, batches: int, batch_size: int, seed: int) -> None:
        self.cfg, self.batches, self.batch_size, self.seed = cfg, batches, batch_size, seed
        self.train_files, held = config_photos(cfg.data)
        self.val_sets = config_validation_sets(cfg.data, held)

    def __call__(self, model: nn.Module, fit) -> dict[str, float]:
        names = batchnorm_names(model)
        source = TensorPatchSource(self.train_files, self.cfg.data, self.seed, "cpu")  # the same batches each time
        fast = self.cfg.train.fast_short_side
        recalibrate(model, names, source, self.batches, self.batch_size, self.cfg.data.crop, fast)
        return validate(model, self.val_sets, "cpu", fast, fit=fit)


def _row(label: str, result: dict[str, float]) -> str:
    return f"{label:32s} {result['score']:6.2f} " + " ".join(f"{result[k]:6.2f}" for k in result if k != "score")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="model files fine-tuned from one network (two or more)")
    p.add_argument("--config", required=True, help="the training config whose validation pairs decide")
    p.add_argument("--out", required=True, type=output_file, help="where to write the soup")
    p.add_argument("--uniform", action="store_true", help="average every file instead of the greedy choice")
    p.add_argument("--batches", type=int_at_least(1), default=128)
    p.add_argument("--batch-size", type=int_at_least(1), default=8)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=thread_count, default=0)
    args = p.parse_args(argv)
    try:
        if len(args.models) < 2:
            raise ValueError("a soup needs two or more model files")
        if args.threads:
            torch.set_num_threads(args.threads)
        cfg = load_config(args.config)
        loaded = [load_model(path) for path in args.models]
        first = loaded[0][1]
        for path, (_, info) in zip(args.models[1:], loaded[1:]):
            if (info["model_config"], info["fast_short_side"]) != (first["model_config"], first["fast_short_side"]):
                raise ValueError(f"{path} is another network than {args.models[0]} (architecture or fast mode)")
        score = SoupScorer(cfg, args.batches, args.batch_size, args.seed)
        fit = first["guided_fit"]
        print(f"{'':32} {'score':>6} " + " ".join(f"{k:>6.6s}" for k in score.val_sets))
        singles = []
        for path, (model, _) in zip(args.models, loaded):
            result = score(copy.deepcopy(model), fit)
            print(_row(Path(path).parent.name + "/" + Path(path).name, result))
            singles.append((result["score"], path, model))
        singles.sort(key=lambda s: -s[0])
        if args.uniform:
            chosen = [s[1] for s in singles]
            soup = average_weights([s[2] for s in singles])
            best = score(soup, fit)
            print(_row(f"uniform soup of {len(chosen)}", best))
        else:
            chosen, members, soup = [singles[0][1]], [singles[0][2]], copy.deepcopy(singles[0][2])
            best = score(soup, fit)
            for _, path, model in singles[1:]:
                candidate = average_weights(members + [model])
                result = score(candidate, fit)
                joins = result["score"] > best["score"]
                print(_row(f"+ {Path(path).parent.name}: {'joins' if joins else 'left out'}", result))
                if joins:
                    chosen, members, soup, best = chosen + [path], members + [model], candidate, result
    except (ConfigError, EnhancerError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    meta = dict(first.get("meta", {}))
    sha = {path: info["sha256"] for path, (_, info) in zip(args.models, loaded)}
    meta["soup"] = {"ingredients": [{"file": path, "sha256": sha[path]} for path in chosen],
                    "rule": "uniform" if args.uniform else "greedy", "bn_batches": args.batches}
    meta["val_psnr"] = round(best["score"], 3)
    meta["val_by_kind"] = {k: round(v, 2) for k, v in best.items() if k != "score"}
    try:
        save_model(args.out, soup, first["model_config"], first["name"], meta)
    except OSError as exc:
        return cannot_write(args.out, exc)
    print(f"soup of {len(chosen)}: {best['score']:.2f} dB; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
