#!/usr/bin/env python3
"""Evaluate every method on paired test sets with the paper's seven metrics.

    python training/evaluate.py --data DIR [--data DIR ...] [--models models/] [--json out.json]
                                [--markdown out.md] [--sheet sheet.png] [--methods none he ... mixed auto]
                                [--backend torch_cpu] [--node-config config/illexp.yaml] [--identity]

A set is a folder DIR with input/ and target/ holding images of the same names and sizes. Methods: `none`
(the input itself), the classical baselines `he`, `clahe`, `gamma`, `msr` (illexp_ros.core.baselines), and
each model found in --models: `under`, `over`, `mixed` (each model on every frame, full resolution),
`auto` (classify_exposure routes each frame to under / over / mixed, well-exposed frames pass unchanged; needs
all three files), `mixed_fast` (mixed in fast mode: network at reduced resolution + guided upsampling),
`auto_fast` (auto in fast mode: each route's <name>_fast.pt where --models has one, else its <name>.pt at the
reduced resolution, as in the node) and
`default`: the correction the ROS node applies with its parameters file --node-config (default: the
repository's config/illexp.yaml). That file is read at run time (section `/**/illexp_node:
ros__parameters:`, or any key that matches a node named illexp_node in the root namespace, ROS wildcards
`/**` and `*` included; several matching sections merge in file order); its `model`, `mode`, `fast` and
`internal_short_side` build the Enhancer exactly as illexp_ros/ros/node/illexp_node.py does, a key it lacks takes the
node's default (illexp_ros/ros/node/parameters.py), other keys are not used (`level_smoothing` acts across the
frames of a stream and leaves a stream's first frame, i.e. any single image, unchanged). `model: default` and
shipped names are looked up in --models (default needs the file(s) of its mode there: under.pt / over.pt / mixed.pt, all
three for auto; in fast mode a <name>_fast.pt next to one replaces it, as in the node); a path is taken
relative to the working directory. The file's `backend` is not used: every model method runs through
illexp_ros.runtime.Enhancer on --backend (default torch_cpu, so numbers do not depend on the GPU kernels
that happen to be there). A params file that cannot be read, has no section for illexp_node or holds a value
the node would refuse for one of those four keys is one error line, exit 2.

--identity feeds each set's target images as the input (a well-exposed frame must come back nearly
unchanged): every method runs on the target and is scored against that same target, so `none` scores a
perfect 100 dB PSNR / SSIM 1 (metrics.psnr floors the MSE) and a method's distance from that is how much it
damages a good frame. Such a set is reported as `SET:identity` (JSON key, table and Markdown headings).

Metrics are computed per image on full-resolution RGB and averaged over the images of a subset (the mean of
per-image PSNR, as papers report it). Subsets: `all`, plus `under` / `over` / `mixed` for file names that
start with that prefix and `under_` etc. The JSON shape is
    {"sets": {SET: {SUBSET: {METHOD: {"psnr", "ssim", "mse", "mae", "sobel_iou", "canny_iou", "hist_diff",
                                       "n"}}}}}
with SET the folder name (`SET:identity` with --identity). A bad set (missing folder, no pairs, a size
mismatch) is one error line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
from illexp_ros.runtime.errors import EnhancerError, error_line  # noqa: E402
from training.arguments import int_at_least, output_file, thread_count  # noqa: E402

MODEL_METHODS = ("under", "over", "mixed", "auto", "mixed_fast", "auto_fast", "default")
ALL_METHODS = ("none", *BASELINES, *MODEL_METHODS)
SUBSET_PREFIXES = ("under", "over", "mixed")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
# Column order of the tables; True = higher is better (used to bold the best value).
TABLE_COLUMNS = (("psnr", "PSNR", True), ("ssim", "SSIM", True), ("mse", "MSE", False), ("mae", "MAE", False),
                 ("sobel_iou", "Sobel IoU", True), ("canny_iou", "Canny IoU", True),
                 ("hist_diff", "Hist diff", False))
THUMB = 128  # contact-sheet cell size (long side, px)
IDENTITY_SUFFIX = ":identity"  # set key of an --identity run
DEFAULT_NODE_CONFIG = REPO / "config" / "illexp.yaml"
NODE_NAME = "illexp_node"
# The node's defaults for the keys `default` uses (illexp_ros/ros/node/parameters.py PARAMETERS; that module
# imports rclpy, so they are repeated here and a test checks that both agree).
NODE_DEFAULTS = {"model": "default", "mode": "mixed", "fast": True, "internal_short_side": 0,
                 "strength": 1.0, "exposure_compensation": 0.0}
NODE_MODES = ("under", "over", "mixed", "auto")
NODE_MAX_SHORT_SIDE = 4096
NODE_MAX_EXPOSURE_COMPENSATION = 3.0  # stops, runtime/exposure_compensation.MAX_STOPS (a test checks)

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


# ------------------------------------------------------------------------------------ node parameters
@dataclass(frozen=True)
class NodeParams:
    """What the node builds its Enhancer from (model, mode, fast, internal_short_side), the strength and exposure
    compensation it applies to every frame, and where they came from. (Level smoothing never changes a single
    image.)"""
    model: str
    mode: str
    fast: bool
    internal_short_side: int
    source: Path
    strength: float = 1.0
    exposure_compensation: float = 0.0

    def describe(self) -> str:
        return (f"model {self.model}, mode {self.mode}, fast {str(self.fast).lower()}, internal_short_side "
                f"{self.internal_short_side}, strength {self.strength:g}, exposure_compensation "
                f"{self.exposure_compensation:g} "
                f"(from {self.source})")


def _ros_key_matches(key: str, fq_name: str) -> bool:
    """Does a parameters-file node key (`/**/illexp_node`, `illexp_node`, `/**`, `/*`) match `fq_name`?
    `/**` matches any number of namespace levels (none included), `*` one name."""
    key = key if key.startswith("/") else "/" + key
    parts = []
    for token in key.split("/")[1:]:
        if token == "**":
            parts.append("(/[^/]+)*")
        else:
            parts.append("/" + re.escape(token).replace(r"\*", "[^/]+"))
    return re.fullmatch("".join(parts), fq_name) is not None


def _node_sections(doc: dict, prefix: str = "") -> list[tuple[str, object]]:
    """(node key, ros__parameters value) for every node section of a parameters file, nested namespaces
    (`ns: {illexp_node: {ros__parameters: ...}}`) joined with '/', in file order."""
    out = []
    for key, value in doc.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            if "ros__parameters" in value:
                out.append((name, value["ros__parameters"]))
            else:
                out += _node_sections(value, name)
    return out


def _node_param_error(name: str, value: object) -> str | None:
    """The reason the node refuses `value` for `name` (same rules as illexp_ros.ros.node.parameters.validate)."""
    if name == "fast":
        return None if isinstance(value, bool) else f"fast must be true or false (got {value!r})"
    if name == "internal_short_side":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"internal_short_side must be an integer (got {value!r})"
        if not 0 <= value <= NODE_MAX_SHORT_SIDE:
            return f"internal_short_side must be in [0, {NODE_MAX_SHORT_SIDE}] (got {value})"
        return None
    if name == "strength":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"strength must be a number (got {value!r})"
        if not 0.0 <= float(value) <= 1.0:
            return f"strength must be in [0.0, 1.0] (got {value})"
        return None
    if name == "exposure_compensation":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"exposure_compensation must be a number (got {value!r})"
        if not -NODE_MAX_EXPOSURE_COMPENSATION <= float(value) <= NODE_MAX_EXPOSURE_COMPENSATION:
            return (f"exposure_compensation must be in [{-NODE_MAX_EXPOSURE_COMPENSATION}, "
                    f"{NODE_MAX_EXPOSURE_COMPENSATION}] (got {value})")
        return None
    if not isinstance(value, str):
        return f"{name} must be a string (got {value!r})"
    if name == "mode" and value not in NODE_MODES:
        return f"mode must be one of {', '.join(repr(m) for m in NODE_MODES)} (got {value!r})"
    if name == "model" and not value.strip():
        return "model must not be empty"
    return None


def read_node_params(path: Path) -> NodeParams:
    """The node's model / mode / fast / internal_short_side / strength / exposure_compensation from a parameters file
    (node defaults for keys it lacks); EvaluationError for a file the node could not start with."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise EvaluationError(f"cannot read node params file {path}: {reason}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise EvaluationError(f"node params file {path} is not valid YAML{at}: {problem}") from None
    sections = _node_sections(doc) if isinstance(doc, dict) else []
    matching = [(key, params) for key, params in sections if _ros_key_matches(key, "/" + NODE_NAME)]
    if not matching:
        raise EvaluationError(f"node params file {path} has no parameters for {NODE_NAME} (expected a "
                              f"`/**/{NODE_NAME}: ros__parameters:` section)")
    values = dict(NODE_DEFAULTS)
    for key, params in matching:
        if not isinstance(params, dict):
            raise EvaluationError(f"node params file {path}: {key}: ros__parameters must be a mapping "
                                  f"(got {params!r})")
        values.update({k: v for k, v in params.items() if k in NODE_DEFAULTS})
    for name, value in values.items():
        reason = _node_param_error(name, value)
        if reason:
            raise EvaluationError(f"node params file {path}: parameter {reason}")
    return NodeParams(values["model"], values["mode"], values["fast"], values["internal_short_side"], path,
                      float(values["strength"]), float(values["exposure_compensation"]))


def _model_path(spec: str, models_dir: Path) -> Path:
    """A model value other than 'default': a path as given, or a shipped name looked up in --models."""
    candidate = Path(spec).expanduser()
    if candidate.suffix or os.sep in spec or candidate.exists():
        return candidate
    return models_dir / f"{spec}.pt"


def default_method_missing(node: NodeParams, models_dir: Path) -> str:
    """Why the `default` method cannot run with these params and --models ('' when it can)."""
    if node.model != "default":
        path = _model_path(node.model, models_dir)
        return "" if path.is_file() else f"default (model {node.model} in {node.source}) needs {path}"
    routes = ("under", "over", "mixed") if node.mode == "auto" else (node.mode,)
    missing = [f"{r}.pt" for r in routes if not (models_dir / f"{r}.pt").is_file()]
    if not missing:
        return ""
    return f"default (mode {node.mode} in {node.source}) needs {' and '.join(missing)} in {models_dir}"


# -------------------------------------------------------------------------------------------- methods
def model_files(models_dir: Path) -> dict[str, Path]:
    paths = {n: models_dir / f"{n}.pt" for n in ("under", "over", "mixed")}
    return {n: p for n, p in paths.items() if p.is_file()}


def available_model_methods(models_dir: Path, node: NodeParams | None = None) -> dict[str, str]:
    """Model method -> why it cannot run ('' when it can). `default` is listed only when `node` is given."""
    have = model_files(models_dir)
    why = {}
    for m in ("under", "over", "mixed"):
        why[m] = "" if m in have else f"{models_dir / (m + '.pt')} not found"
    missing = [n for n in ("under", "over", "mixed") if n not in have]
    why["auto"] = "" if not missing else f"auto needs under.pt, over.pt and mixed.pt in {models_dir}"
    why["mixed_fast"] = why["mixed"]
    why["auto_fast"] = why["auto"]
    if node is not None:
        why["default"] = default_method_missing(node, models_dir)
    return why


def build_methods(names: list[str], models_dir: Path, backend: str, closers: list,
                  node: NodeParams | None = None) -> dict[str, Method]:
    """Callables rgb uint8 -> rgb uint8 for each method; the Enhancers made are appended to `closers`.
    `default` needs `node` (the node's parameters)."""
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
        elif name == "auto_fast":
            enh = Enhancer.from_model("default", backend=backend, mode="auto", fast=True)
        elif name == "mixed_fast":
            enh = Enhancer.from_model(str(files["mixed"]), backend=backend, mode="mixed", fast=True)
        elif name == "default":
            # As illexp_ros/ros/node/illexp_node.py builds it, on --backend instead of the file's backend. A shipped
            # name becomes its file in --models, so nothing is picked up from another models folder.
            model = node.model if node.model == "default" else str(_model_path(node.model, models_dir))
            enh = Enhancer.from_model(model=model, backend=backend, mode=node.mode, fast=node.fast,
                                      internal_short_side=node.internal_short_side)
        else:
            enh = Enhancer.from_model(str(files[name]), backend=backend, mode=name)
        closers.append(enh)
        if name == "default" and (node.strength != 1.0 or node.exposure_compensation):
            methods[name] = _as_the_node_publishes(enh, node.strength, node.exposure_compensation)
        else:
            methods[name] = (lambda e: lambda rgb: e.enhance(rgb, color_order="rgb"))(enh)
    return methods


def _as_the_node_publishes(enh, strength: float, stops: float) -> Method:
    """The node's steps after the network on a single frame: strength, then exposure compensation."""
    from illexp_ros.runtime.correction_strength import apply_strength
    from illexp_ros.runtime.exposure_compensation import compensate_exposure

    def method(rgb: np.ndarray) -> np.ndarray:
        return compensate_exposure(apply_strength(rgb, enh.enhance(rgb, color_order="rgb"), strength), stops)
    return method


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


def evaluate_set(set_dir: Path, methods: dict[str, Method], sheet_rows: int, progress: bool,
                 identity: bool = False) -> SetResult:
    """Every method on every pair of the set; with `identity` the target is the input too."""
    from tqdm import tqdm

    pairs = find_pairs(set_dir)
    result = SetResult(set_dir.name + (IDENTITY_SUFFIX if identity else ""))
    for name, inp_path, tgt_path in tqdm(pairs, desc=result.name, disable=not progress, dynamic_ncols=True):
        inp, tgt = read_pair(set_dir, name, inp_path, tgt_path)
        if identity:
            inp = tgt
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
            if set_name.endswith(IDENTITY_SUFFIX):
                title += " [identity check: each target fed as input, scored against itself]"
            n = next(iter(rows.values()))["n"] if rows else 0
            parts.append(f"{h} {title} ({n} images)\n\n{markdown_table(rows)}\n")
    return "\n".join(parts)


UNWRITTEN_SHEETS = "unwritten_sheets"  # evaluate()'s report: sheets that failed (taken out by take_problems)


def take_problems(report: dict) -> list[str]:
    """The contact sheets evaluate() could not write, taken out of the report (not part of its JSON)."""
    return report.pop(UNWRITTEN_SHEETS, [])


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        written = cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    except (OSError, cv2.error) as exc:
        raise EvaluationError(f"cannot write the contact sheet {path}: {error_line(exc)}") from exc
    if not written:  # OpenCV says only False (an unwritable folder, say)
        raise EvaluationError(f"cannot write the contact sheet {path}")


def sheet_path(base: Path, set_name: str, n_sets: int) -> Path:
    set_name = set_name.replace(IDENTITY_SUFFIX, "_identity")  # no ':' in file names
    return base if n_sets == 1 else base.with_name(f"{base.stem}_{set_name}{base.suffix or '.png'}")


def summary_table(report: dict, seconds: dict[str, dict[str, float]]) -> str:
    """Console summary: PSNR / SSIM of each method on each set (all images) and seconds per image."""
    sets = list(report["sets"])
    methods: list[str] = []
    for s in sets:
        methods += [m for m in report["sets"][s]["all"] if m not in methods]
    width = max(len(m) for m in methods + ["method"])
    cols = [max(22, len(s)) for s in sets]  # wide enough for a long set name (`SET:identity`)
    head = f"{'method':<{width}}  " + "  ".join(f"{s:>{c}}" for s, c in zip(sets, cols)) + "  s/image"
    lines = [head, f"{'':<{width}}  " + "  ".join(f"{'PSNR / SSIM':>{c}}" for c in cols)]
    for m in methods:
        cells = []
        for s, c in zip(sets, cols):
            r = report["sets"][s]["all"].get(m)
            cells.append(f"{r['psnr']:>{c - 8}.2f} / {r['ssim']:.3f}" if r else f"{'-':>{c}}")
        n = sum(report["sets"][s]["all"][m]["n"] for s in sets if m in report["sets"][s]["all"])
        t = sum(seconds[s].get(m, 0.0) for s in sets) / max(n, 1)
        lines.append(f"{m:<{width}}  " + "  ".join(cells) + f"  {t:7.3f}")
    return "\n".join(lines)


def evaluate(data_dirs: list[Path], models_dir: Path, methods: list[str] | None, backend: str = "torch_cpu",
             sheet: Path | None = None, sheet_rows: int = 12, progress: bool = True,
             log: Callable[[str], None] = print, node_config: Path | None = None,
             identity: bool = False) -> tuple[dict, dict[str, dict[str, float]]]:
    """Run the evaluation; returns (report in the JSON shape, seconds per set and method). `node_config` is
    the node's parameters file for the `default` method (None: config/illexp.yaml); `identity` feeds each
    target as the input and keys the sets `SET:identity`."""
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
    node = None
    if methods is None or "default" in methods:  # read only when `default` may run
        node = read_node_params(DEFAULT_NODE_CONFIG if node_config is None else Path(node_config))
    names = _select_methods(methods, models_dir, log, node)
    if "default" in names:
        log(f"default = the node's correction: {node.describe()}; backend {backend}")
    report: dict = {"sets": {}}
    seconds: dict[str, dict[str, float]] = {}
    # The runtime's "default" model (auto) resolves shipped names through ILLEXP_MODELS_DIR first, so auto
    # uses --models; set only while evaluating, so a caller's process is left as it was.
    saved_env = os.environ.get("ILLEXP_MODELS_DIR")
    os.environ["ILLEXP_MODELS_DIR"] = str(models_dir.resolve())
    closers: list = []
    try:
        fns = build_methods(names, models_dir, backend, closers, node)
        for d in data_dirs:
            res = evaluate_set(d, fns, sheet_rows if sheet else 0, progress, identity)
            report["sets"][res.name] = res.summary()
            seconds[res.name] = res.seconds
            if sheet:
                try:
                    write_sheet(res, list(fns), sheet_path(sheet, res.name, len(data_dirs)))
                except EvaluationError as exc:  # the scores are what matters: go on, the caller says it at the end
                    report.setdefault(UNWRITTEN_SHEETS, []).append(str(exc))
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


def _select_methods(methods: list[str] | None, models_dir: Path, log: Callable[[str], None],
                    node: NodeParams | None = None) -> list[str]:
    unknown = [m for m in methods or [] if m not in ALL_METHODS]
    if unknown:
        raise EvaluationError(f"unknown method(s) {unknown}; known: {', '.join(ALL_METHODS)}")
    why = available_model_methods(models_dir, node)
    if methods:
        for m in methods:
            if why.get(m):
                raise EvaluationError(f"method {m} asked for, but {why[m]}")
        return [m for m in ALL_METHODS if m in methods]
    for m in MODEL_METHODS:
        if why.get(m):
            log(f"skipping {m}: {why[m]}")
    return [m for m in ALL_METHODS if not why.get(m)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", action="append", required=True, help="a set folder with input/ and target/")
    p.add_argument("--models", default=str(REPO / "models"),
                   help="folder with under.pt / over.pt / mixed.pt (default: the repository's models/)")
    p.add_argument("--json", type=output_file, help="write the results here (JSON)")
    p.add_argument("--markdown", type=output_file, help="write the tables here (Markdown)")
    p.add_argument("--sheet", type=output_file,
                   help="write a contact sheet PNG here (one per set, _SET appended, if several)")
    p.add_argument("--sheet-rows", type=int_at_least(1), default=12, help="at most this many images per sheet")
    p.add_argument("--methods", nargs="+",
                   help=f"subset of: {' '.join(ALL_METHODS)} (default: all available)")
    p.add_argument("--backend", default="torch_cpu", help="Enhancer backend for the models")
    p.add_argument("--node-config", default=str(DEFAULT_NODE_CONFIG),
                   help="the node's ROS 2 parameters file; method `default` corrects as the node does with "
                        "it (its model, mode, fast, internal_short_side; default: the repository's "
                        "config/illexp.yaml)")
    p.add_argument("--identity", action="store_true",
                   help="feed each target as the input and score method(target) against the target "
                        "(sets reported as SET:identity)")
    p.add_argument("--threads", type=thread_count, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    from illexp_ros.runtime.backends import BACKEND_NAMES

    if args.backend not in ("auto", *BACKEND_NAMES):
        p.error(f"--backend must be auto or one of {', '.join(BACKEND_NAMES)}, got {args.backend!r}")
    if args.sheet and Path(args.sheet).suffix.lower() not in (".png", ".jpg", ".jpeg"):
        p.error(f"--sheet {args.sheet} must be a .png or .jpg file name")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        report, seconds = evaluate([Path(d) for d in args.data], Path(args.models), args.methods,
                                   args.backend, Path(args.sheet) if args.sheet else None, args.sheet_rows,
                                   not args.no_progress, log=lambda s: print(s, file=sys.stderr),
                                   node_config=Path(args.node_config), identity=args.identity)
    except (EvaluationError, EnhancerError) as exc:  # EnhancerError: the runtime's ModelLoadError, ...
        print(f"error: {exc}", file=sys.stderr)
        return 2
    problems = take_problems(report)
    print(summary_table(report, seconds))
    for path, text in ((args.json, lambda: json.dumps(report, indent=1)), (args.markdown,
                                                                           lambda: markdown_report(report))):
        if path:  # each on its own: one that fails does not keep the other from being written
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                Path(path).write_text(text() + "\n")
            except OSError as exc:  # the table above is printed: only the file is missing
                problems.append(f"cannot write the results: {error_line(exc)}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 2 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
