"""The model file format and where shipped models live.

A model file is a torch.save'd dict (loaded with weights_only=True, so a file cannot run code):
  {"format": "illexp_ros/1", "name": str, "model_config": dict (IllExpNet kwargs),
   "state_dict": {name: fp16/fp32 tensor}, "meta": dict (training facts: steps, device, val PSNR, ...)}
A fast model's meta also says how the runtime should run it: "fast_short_side" (the internal size it was
fine-tuned at) and "guided_radius" / "guided_eps" (the guided fit, core.fast.GuidedFit; the defaults if absent).
Weights are stored in fp16 to keep the shipped files small; they are loaded back as fp32.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from illexp_ros.core.fast import DEFAULT_FIT, GuidedFit
from illexp_ros.core.networks import IllExpNet, build_model
from illexp_ros.runtime.errors import ModelLoadError

FORMAT = "illexp_ros/1"
SHIPPED_NAMES = ("under", "over", "mixed")


def models_dirs() -> list[Path]:
    """Where shipped models are searched, in order: $ILLEXP_MODELS_DIR, the source tree's models/ (a
    development checkout or `pip install -e`), then share/illexp_ros/models of a colcon install."""
    dirs = []
    env = os.environ.get("ILLEXP_MODELS_DIR")
    if env:
        dirs.append(Path(env))
    dirs.append(Path(__file__).resolve().parents[2] / "models")
    try:
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory("illexp_ros")) / "models")
    except Exception:  # noqa: BLE001 - not in a ROS workspace: the other places are enough
        pass
    return dirs


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A shipped name ('mixed') or a path to a model file -> an existing file, else ModelLoadError. A bare name
    (no suffix, no folder) is a shipped model first: a folder or file named `mixed` in the working folder was
    taken for the model (`model file not found: mixed`), for the runtime's own routes too."""
    text = str(name_or_path)
    candidate = Path(text).expanduser()
    if candidate.suffix or os.sep in text:
        if not candidate.is_file():
            raise ModelLoadError(f"model file not found: {candidate}")
        return candidate
    searched = []
    for d in models_dirs():
        path = d / f"{text}.pt"
        searched.append(str(path))
        if path.is_file():
            return path
    if candidate.is_file():  # a model file without a suffix, named as it is
        return candidate
    # the names there are (the fast variants too), else the paper's three
    found = sorted({p.stem for d in models_dirs() if d.is_dir() for p in d.glob("*.pt")}) or list(SHIPPED_NAMES)
    raise ModelLoadError(
        f"unknown model {text!r}: not a file and not a shipped model (looked for {', '.join(searched)}); "
        f"shipped names are {', '.join(found)}"
    )


def save_model(path: str | os.PathLike, model: IllExpNet, model_config: dict, name: str,
               meta: dict[str, Any] | None = None) -> Path:
    """Write a model file: learned weights in float16 (half the size; it moved mixed_fast's validation score
    by 0.015 dB), buffers (BatchNorm running statistics) in float32: a running variance can exceed float16's
    range (65504), which switched a channel off in the paper-sized files written before 2026-11-26 (repaired
    with training/recalibrate_bn.py). Refuses non-finite values."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    params = {name for name, _ in model.named_parameters()}
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if v.is_floating_point():
            if not torch.isfinite(v).all():
                raise ValueError(f"not saving {path}: {k} has non-finite values (the training diverged?)")
            v = v.half() if k in params else v.float()
            if not torch.isfinite(v).all():
                raise ValueError(f"not saving {path}: {k} does not fit in float16")
        state[k] = v
    payload = {"format": FORMAT, "name": name, "model_config": dict(model_config), "state_dict": state,
               "meta": dict(meta or {})}
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        try:
            torch.save(payload, tmp)
        except RuntimeError as exc:  # torch reports a file it cannot open as "[enforce fail at ...] ... strerror: X"
            raise OSError(str(exc).splitlines()[0].split("strerror: ", 1)[-1]) from exc
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a failed save or rename (PATH a folder, a full disk) leaves nothing beside it
    return path


def guided_fit_meta(fit: GuidedFit) -> dict[str, Any]:
    """The meta entries that record a fast model's guided fit (what guided_fit_of reads back)."""
    return {"guided_radius": fit.radius, "guided_eps": fit.eps}


def guided_fit_of(meta: dict[str, Any]) -> GuidedFit:
    """The guided fit a model file's meta records (the defaults for a file without the record); ValueError for
    a record that is not a valid fit."""
    return GuidedFit(meta.get("guided_radius", DEFAULT_FIT.radius), meta.get("guided_eps", DEFAULT_FIT.eps)).checked()


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_model(name_or_path: str | os.PathLike, allow_nonfinite: bool = False) -> tuple[IllExpNet, dict[str, Any]]:
    """Load a model file into an eval-mode fp32 IllExpNet; returns (model, info) with info = name, path,
    sha256, model_config, meta, and how fast mode runs this file: fast_short_side (the internal size it was
    fine-tuned at, 0 if none) and guided_fit (a GuidedFit). Any problem raises
    ModelLoadError naming the file, non-finite values included (allow_nonfinite is for the tool that repairs
    such files)."""
    path = resolve_model_path(name_or_path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        raise ModelLoadError(f"model file {path} is corrupt or not a torch file ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelLoadError(f"model file {path} is not an {FORMAT} model file")
    try:
        # Built on the meta device and given the file's tensors (assign): no random initialisation of weights
        # the file replaces (it held the GIL ~70 ms for a paper-sized net, stalling a running node's frames).
        with torch.device("meta"):
            model = build_model(payload["model_config"])
        state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
        model.load_state_dict(state, assign=True)
    except Exception as exc:  # noqa: BLE001
        # torch lists the keys over several lines: one line, as every error the tools print
        detail = " ".join(str(exc).split())
        raise ModelLoadError(f"model file {path} does not match its config: "
                             f"{detail if len(detail) <= 300 else detail[:297] + '...'}") from exc
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad and not allow_nonfinite:
        raise ModelLoadError(
            f"model file {path} has non-finite values in {', '.join(bad[:3])}"
            + (" (BatchNorm statistics that overflowed float16 in an older save: re-estimate them with "
               "`python training/recalibrate_bn.py`)" if all("running_" in k for k in bad) else ""))
    meta = payload.get("meta", {})
    meta = meta if isinstance(meta, dict) else {}
    try:
        fit = guided_fit_of(meta)
    except ValueError as exc:
        raise ModelLoadError(f"model file {path} has an invalid guided fit in its meta: {exc}") from exc
    side = meta.get("fast_short_side")
    model.eval()
    info = {"name": payload.get("name", path.stem), "path": str(path), "sha256": file_sha256(path),
            "model_config": payload["model_config"], "meta": meta,
            "fast_short_side": side if isinstance(side, int) and not isinstance(side, bool) and side > 0 else 0,
            "guided_fit": fit}
    return model, info
