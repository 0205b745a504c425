#!/usr/bin/env python3
"""Evaluate every method on paired test sets with the paper's seven metrics.

    python training/evaluate.py --data DIR [--data DIR ...] [--models models/] [--json out.json]
                                [--markdown out.md] [--sheet sheet.png] [--methods none he ... mixed auto]
                                [--backend torch_cpu]

A set is a folder DIR with input/ and target/ holding images of the same names and sizes. Methods: `none`
(the input itself), the classical baselines `he`, `clahe`, `gamma`, `msr` (illexp_ros.core.baselines), and
each model found in --models: `under`, `over`, `mixed` (each model on every frame, full resolution),
`auto` (classify_exposure routes each frame to under / over / mixed, well-exposed frames pass unchanged; needs
all three files) and `mixed_fast` (mixed in fast mode: network at reduced resolution + guided upsampling).
Models run through illexp_ros.runtime.Enhancer on --backend (default torch_cpu, so numbers do not depend on
the GPU kernels that happen to be there).

Metrics are computed per image on full-resolution RGB and averaged over the images of a subset (the mean of
per-image PSNR, as papers report it). Subsets: `all`, plus `under` / `over` / `mixed` for file names that
start with that prefix and `under_` etc. The JSON shape is
    {"sets": {SET: {SUBSET: {METHOD: {"psnr", "ssim", "mse", "mae", "sobel_iou", "canny_iou", "hist_diff",
                                       "n"}}}}}
with SET the folder name. A bad set (missing folder, no pairs, a size mismatch) is one error line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from illexp_ros.core.baselines import BASELINES  # noqa: E402
from illexp_ros.core.metrics import METRIC_NAMES, all_metrics  # noqa: E402

MODEL_METHODS = ("under", "over", "mixed", "auto", "mixed_fast")
ALL_METHODS = ("none", *BASELINES, *MODEL_METHODS)
SUBSET_PREFIXES = ("under", "over", "mixed")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
# Column order of the tables; True = higher is better (used to bold the best value).
TABLE_COLUMNS = (("psnr", "PSNR", True), ("ssim", "SSIM", True), ("mse", "MSE", False), ("mae", "MAE", False),
                 ("sobel_iou", "Sobel IoU", True), ("canny_iou", "Canny IoU", True),
                 ("hist_diff", "Hist diff", False))
THUMB = 128  # contact-sheet cell size (long side, px)

Method = Callable[[np.ndarray], np.ndarray]


class EvaluationError(Exception):
    """A problem with the inputs; main() prints it as one line and exits 2."""


# ----------------------------------------------------------------------------------------------- data
def read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise EvaluationError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def find_pairs(set_dir: Path) -> list[tuple[str, Path, Path]]:
    """(name, input path, target path) for every file name present in both input/ and target/."""
    if not set_dir.is_dir():
        raise EvaluationError(f"data folder not found: {set_dir}")
    inp_dir, tgt_dir = set_dir / "input", set_dir / "target"
    for d in (inp_dir, tgt_dir):
        if not d.is_dir():
            raise EvaluationError(f"{set_dir} has no {d.name}/ folder (a set needs input/ and target/)")
    inputs = {p.name: p for p in inp_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    targets = {p.name: p for p in tgt_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    unpaired = sorted(set(inputs) ^ set(targets))
    if unpaired:
        raise EvaluationError(f"{set_dir}: {len(unpaired)} file(s) without a partner of the same name in "
                              f"input/ and target/, e.g. {unpaired[0]}")
    if not inputs:
        raise EvaluationError(f"{set_dir}: no image pairs in input/ and target/")
    return [(name, inputs[name], targets[name]) for name in sorted(inputs)]


def read_pair(set_dir: Path, name: str, inp: Path, tgt: Path) -> tuple[np.ndarray, np.ndarray]:
    a, b = read_rgb(inp), read_rgb(tgt)
    if a.shape != b.shape:
        raise EvaluationError(f"{set_dir}: size mismatch for {name}: input {a.shape[1]}x{a.shape[0]}, "
                              f"target {b.shape[1]}x{b.shape[0]}")
    return a, b


def subsets_of(name: str) -> list[str]:
    return ["all"] + [p for p in SUBSET_PREFIXES if name.startswith(p + "_")]


# -------------------------------------------------------------------------------------------- methods
def model_files(models_dir: Path) -> dict[str, Path]:
    paths = {n: models_dir / f"{n}.pt" for n in ("under", "over", "mixed")}
    return {n: p for n, p in paths.items() if p.is_file()}


def available_model_methods(models_dir: Path) -> dict[str, str]:
    """Model method -> why it cannot run ('' when it can)."""
    have = model_files(models_dir)
    why = {}
    for m in ("under", "over", "mixed"):
        why[m] = "" if m in have else f"{models_dir / (m + '.pt')} not found"
    missing = [n for n in ("under", "over", "mixed") if n not in have]
    why["auto"] = "" if not missing else f"auto needs under.pt, over.pt and mixed.pt in {models_dir}"
    why["mixed_fast"] = why["mixed"]
    return why


def build_methods(names: list[str], models_dir: Path, backend: str, closers: list) -> dict[str, Method]:
    """Callables rgb uint8 -> rgb uint8 for each method; the Enhancers made are appended to `closers`."""
    methods: dict[str, Method] = {}
    for name in names:
        if name == "none":
            methods[name] = np.copy
        elif name in BASELINES:
            methods[name] = BASELINES[name]
    wanted = [n for n in names if n in MODEL_METHODS]
    if not wanted:
        return methods
    from illexp_ros.runtime import Enhancer  # imported late: baselines-only runs need no torch

    files = model_files(models_dir)
    for name in wanted:
        if name == "auto":
            enh = Enhancer.from_model("default", backend=backend, mode="auto")
        elif name == "mixed_fast":
            enh = Enhancer.from_model(str(files["mixed"]), backend=backend, mode="mixed", fast=True)
        else:
            enh = Enhancer.from_model(str(files[name]), backend=backend, mode=name)
        closers.append(enh)
        methods[name] = (lambda e: lambda rgb: e.enhance(rgb, color_order="rgb"))(enh)
    return methods


# ---------------------------------------------------------------------------------------- evaluation
@dataclass
class SetResult:
    name: str
    scores: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)  # subset/method/metric
    seconds: dict[str, float] = field(default_factory=dict)  # method -> total processing time
    sheet_rows: list[tuple[str, list[np.ndarray]]] = field(default_factory=list)

    def add(self, image_name: str, method: str, metrics: dict[str, float]) -> None:
        for subset in subsets_of(image_name):
            per_metric = self.scores.setdefault(subset, {}).setdefault(method, {k: [] for k in METRIC_NAMES})
            for k in METRIC_NAMES:
                per_metric[k].append(metrics[k])

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        out: dict[str, dict[str, dict[str, float]]] = {}
        for subset in ["all"] + [s for s in SUBSET_PREFIXES if s in self.scores]:
            out[subset] = {}
            for method, per_metric in self.scores[subset].items():
                row: dict[str, float] = {k: float(np.mean(per_metric[k])) for k in METRIC_NAMES}
                row["n"] = len(per_metric["psnr"])
                out[subset][method] = row
        return out


def thumbnail(img: np.ndarray, size: int = THUMB) -> np.ndarray:
    h, w = img.shape[:2]
    s = size / max(h, w)
    small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    cell = np.full((size, size, 3), 255, np.uint8)
    y, x = (size - small.shape[0]) // 2, (size - small.shape[1]) // 2
    cell[y:y + small.shape[0], x:x + small.shape[1]] = small
    return cell


def evaluate_set(set_dir: Path, methods: dict[str, Method], sheet_rows: int, progress: bool) -> SetResult:
    from tqdm import tqdm

    pairs = find_pairs(set_dir)
    result = SetResult(set_dir.name)
    for name, inp_path, tgt_path in tqdm(pairs, desc=set_dir.name, disable=not progress, dynamic_ncols=True):
        inp, tgt = read_pair(set_dir, name, inp_path, tgt_path)
        cells = [thumbnail(inp)] if len(result.sheet_rows) < sheet_rows else None
        for method, fn in methods.items():
            t0 = time.perf_counter()
            out = fn(inp)
            result.seconds[method] = result.seconds.get(method, 0.0) + time.perf_counter() - t0
            if out.shape != inp.shape or out.dtype != np.uint8:
                raise EvaluationError(f"method {method} returned {out.shape} {out.dtype} for {name}")
            result.add(name, method, all_metrics(out, tgt))
            if cells is not None and method != "none":  # `none` is the input column already
                cells.append(thumbnail(out))
        if cells is not None:
            cells.append(thumbnail(tgt))
            result.sheet_rows.append((name, cells))
    return result


# -------------------------------------------------------------------------------------------- reports
def _fmt(key: str, value: float) -> str:
    if key == "psnr":
        return f"{value:.2f}"
    if key in ("mse", "mae"):
        return f"{value:.4f}"
    return f"{value:.3f}"


def markdown_table(rows: dict[str, dict[str, float]]) -> str:
    """One Markdown table (methods x metrics), the best value of each column in bold."""
    best = {}
    for key, _, higher in TABLE_COLUMNS:
        values = [_fmt(key, r[key]) for r in rows.values()]
        pick = max if higher else min
        best[key] = pick(values, key=float) if values else None
    head = "| method | " + " | ".join(label for _, label, _ in TABLE_COLUMNS) + " | n |"
    sep = "|---|" + "---:|" * (len(TABLE_COLUMNS) + 1)
    lines = [head, sep]
    for method, r in rows.items():
        cells = []
        for key, _, _ in TABLE_COLUMNS:
            text = _fmt(key, r[key])
            cells.append(f"**{text}**" if len(rows) > 1 and text == best[key] else text)
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {r['n']} |")
    return "\n".join(lines)


def markdown_report(report: dict, heading_level: int = 2) -> str:
    h = "#" * heading_level
    parts = []
    for set_name, subsets in report["sets"].items():
        for subset, rows in subsets.items():
            title = set_name if subset == "all" else f"{set_name}, {subset}_* only"
            n = next(iter(rows.values()))["n"] if rows else 0
            parts.append(f"{h} {title} ({n} images)\n\n{markdown_table(rows)}\n")
    return "\n".join(parts)


def write_sheet(result: SetResult, methods: list[str], path: Path) -> None:
    """Contact sheet: one row per image, columns input / each method / target, labelled on top."""
    if not result.sheet_rows:
        return
    labels = ["input", *[m for m in methods if m != "none"], "target"]
    header = np.full((22, THUMB * len(labels), 3), 255, np.uint8)
    for i, label in enumerate(labels):
        cv2.putText(header, label, (i * THUMB + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
    rows = [header]
    for name, cells in result.sheet_rows:
        row = np.concatenate(cells, axis=1)
        for color, thickness in (((255, 255, 255), 3), ((0, 0, 0), 1)):  # outlined: readable on any image
            cv2.putText(row, Path(name).stem[:18], (3, THUMB - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.35, color,
                        thickness, cv2.LINE_AA)
        rows.append(row)
    sheet = np.concatenate(rows, axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))


def sheet_path(base: Path, set_name: str, n_sets: int) -> Path:
    return base if n_sets == 1 else base.with_name(f"{base.stem}_{set_name}{base.suffix or '.png'}")


def summary_table(report: dict, seconds: dict[str, dict[str, float]]) -> str:
    """Console summary: PSNR / SSIM of each method on each set (all images) and seconds per image."""
    sets = list(report["sets"])
    methods: list[str] = []
    for s in sets:
        methods += [m for m in report["sets"][s]["all"] if m not in methods]
    width = max(len(m) for m in methods + ["method"])
    head = f"{'method':<{width}}  " + "  ".join(f"{s[:22]:>22}" for s in sets) + "  s/image"
    lines = [head, f"{'':<{width}}  " + "  ".join(f"{'PSNR / SSIM':>22}" for _ in sets)]
    for m in methods:
        cells = []
        for s in sets:
            r = report["sets"][s]["all"].get(m)
            cells.append(f"{r['psnr']:>14.2f} / {r['ssim']:.3f}" if r else f"{'-':>22}")
        n = sum(report["sets"][s]["all"][m]["n"] for s in sets if m in report["sets"][s]["all"])
        t = sum(seconds[s].get(m, 0.0) for s in sets) / max(n, 1)
        lines.append(f"{m:<{width}}  " + "  ".join(cells) + f"  {t:7.3f}")
    return "\n".join(lines)


def evaluate(data_dirs: list[Path], models_dir: Path, methods: list[str] | None, backend: str = "torch_cpu",
             sheet: Path | None = None, sheet_rows: int = 12, progress: bool = True,
             log: Callable[[str], None] = print) -> tuple[dict, dict[str, dict[str, float]]]:
    """Run the evaluation; returns (report in the JSON shape, seconds per set and method)."""
    for d in data_dirs:  # fail on a bad set before any (slow) model runs
        pairs = find_pairs(d)
        for name, a, b in pairs:
            sa, sb = _image_size(a), _image_size(b)
            if sa != sb:
                raise EvaluationError(f"{d}: size mismatch for {name}: input {sa[0]}x{sa[1]}, "
                                      f"target {sb[0]}x{sb[1]}")
    set_names = [d.name for d in data_dirs]
    if len(set(set_names)) != len(set_names):
        raise EvaluationError(f"two --data folders share a name ({set_names}); sets are keyed by folder name")
    names = _select_methods(methods, models_dir, log)
    report: dict = {"sets": {}}
    seconds: dict[str, dict[str, float]] = {}
    # The runtime's "default" model (auto) resolves shipped names through ILLEXP_MODELS_DIR first, so auto
    # uses --models; set only while evaluating, so a caller's process is left as it was.
    saved_env = os.environ.get("ILLEXP_MODELS_DIR")
    os.environ["ILLEXP_MODELS_DIR"] = str(models_dir.resolve())
    closers: list = []
    try:
        fns = build_methods(names, models_dir, backend, closers)
        for d in data_dirs:
            res = evaluate_set(d, fns, sheet_rows if sheet else 0, progress)
            report["sets"][res.name] = res.summary()
            seconds[res.name] = res.seconds
            if sheet:
                write_sheet(res, list(fns), sheet_path(sheet, res.name, len(data_dirs)))
    finally:
        for enh in closers:
            enh.close()
        if saved_env is None:
            os.environ.pop("ILLEXP_MODELS_DIR", None)
        else:
            os.environ["ILLEXP_MODELS_DIR"] = saved_env
    return report, seconds


def _image_size(path: Path) -> tuple[int, int]:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise EvaluationError(f"cannot read image {path}")
    return img.shape[1], img.shape[0]


def _select_methods(methods: list[str] | None, models_dir: Path, log: Callable[[str], None]) -> list[str]:
    unknown = [m for m in methods or [] if m not in ALL_METHODS]
    if unknown:
        raise EvaluationError(f"unknown method(s) {unknown}; known: {', '.join(ALL_METHODS)}")
    why = available_model_methods(models_dir)
    if methods:
        for m in methods:
            if why.get(m):
                raise EvaluationError(f"method {m} asked for, but {why[m]}")
        return [m for m in ALL_METHODS if m in methods]
    for m in MODEL_METHODS:
        if why[m]:
            log(f"skipping {m}: {why[m]}")
    return [m for m in ALL_METHODS if not why.get(m)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", action="append", required=True, help="a set folder with input/ and target/")
    p.add_argument("--models", default=str(REPO / "models"),
                   help="folder with under.pt / over.pt / mixed.pt (default: the repository's models/)")
    p.add_argument("--json", help="write the results here (JSON)")
    p.add_argument("--markdown", help="write the tables here (Markdown)")
    p.add_argument("--sheet", help="write a contact sheet PNG here (one per set, _SET appended, if several)")
    p.add_argument("--sheet-rows", type=int, default=12, help="at most this many images per sheet")
    p.add_argument("--methods", nargs="+",
                   help=f"subset of: {' '.join(ALL_METHODS)} (default: all available)")
    p.add_argument("--backend", default="torch_cpu", help="Enhancer backend for the models")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        report, seconds = evaluate([Path(d) for d in args.data], Path(args.models), args.methods,
                                   args.backend, Path(args.sheet) if args.sheet else None, args.sheet_rows,
                                   not args.no_progress, log=lambda s: print(s, file=sys.stderr))
    except EvaluationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the runtime's ModelLoadError / BackendUnavailableError: still one line
        from illexp_ros.runtime.errors import EnhancerError

        if isinstance(exc, EnhancerError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(markdown_report(report) + "\n")
    print(summary_table(report, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
