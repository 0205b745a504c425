"""Training configuration: YAML -> validated, typed dataclasses. A wrong key or value is one clear error."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from illexp_ros.core.degradation import METERING_KEY, METERING_MAX_STOPS
from illexp_ros.core.fast import DEFAULT_EPS, DEFAULT_RADIUS, GuidedFit
from illexp_ros.core.networks import HEADS, MODEL_CONFIG_KEYS, PADDING_MODES

REPO = Path(__file__).resolve().parents[1]


class ConfigError(ValueError):
    pass


@dataclass
class DataConfig:
    train_dir: str = "../shared/data/train"
    kind: str = "mixed"  # under | over | mixed: which eq. 5 draws the model sees
    crop: int = 128
    val_fraction: float = 0.1
    val_seed: int = 1234
    val_crop: int = 160  # centre crop of the validation photos; 0 = whole photos (what the node corrects)
    max_val_images: int = 16
    mixed_region_prob: float = 0.3  # kind=mixed only: share of frames dark in one region, blown out in another
    alpha: tuple[float, float] = (0.9, 1 / 0.9)
    beta_under: tuple[float, float] = (0.5, 1.0)
    gamma_under: tuple[float, float] = (1.0, 1.5)
    beta_over: tuple[float, float] = (1.0, 2.0)
    gamma_over: tuple[float, float] = (1 / 1.5, 1.0)
    # The draws beyond the paper's (training/data.py, TensorPatchSource): a camera's frames are mostly fine or
    # mildly off, and a corrector that only ever saw strong degradations over-corrects those.
    well_prob: float = 0.0  # share of well-exposed pairs (input = target): learn to leave a good frame alone
    mild_prob: float = 0.0  # share of mild draws (mild_beta / mild_gamma, split into under / over as above)
    mild_beta: tuple[float, float] = (0.7, 1.4)
    mild_gamma: tuple[float, float] = (0.85, 1.18)
    noise_prob: float = 0.0  # share of degraded pairs with shot + read noise (strengths drawn per sample)
    # Camera exposure draws (core.degradation.expose: a stop change in linear light, clipped, sRGB-encoded) in
    # place of eq. 5 for this share of the strong under / over draws: how a bracketed capture really differs.
    camera_prob: float = 0.0
    camera_stops_under: tuple[float, float] = (-5.0, -1.0)
    camera_stops_over: tuple[float, float] = (1.0, 3.0)
    # Camera realism beyond expose() (core.degradation says why): this share of the camera draws uses a
    # film-like (logistic) response, an exposure change = a log-odds shift of camera_logit_per_stop per stop;
    # light_prob of them get lamps (radiance above the reference's white) added to the scene first.
    camera_logistic_prob: float = 0.0
    camera_logit_per_stop: tuple[float, float] = (0.6, 1.0)
    light_prob: float = 0.0
    # Metered targets (core.degradation.metered says why): the strong draws' target is the photo re-exposed this
    # share of the way (0 = off, the paper's convention; 1 = fully) to a mean linear luminance of metering_key,
    # by at most metering_max_stops; well-exposed and mild pairs keep the photo as it is. Validation does the same.
    metering: float = 0.0
    metering_key: float = METERING_KEY
    metering_max_stops: float = METERING_MAX_STOPS
    # Flat renderings (core.degradation.flat_rendering says why): this share of the pairs gets a lower log-odds
    # slope (less contrast, lifted blacks, lowered whites), a log-odds shift and a saturation scale; the target is
    # the photo as it is. Drawn after well_prob and mild_prob: well + mild + flat <= 1. No shipped config sets it:
    # the two fine-tunes of 2026-11-27 with it did not pass their bar (models/MODEL_CARD.md, "afternoon").
    flat_prob: float = 0.0
    flat_slope: tuple[float, float] = (0.55, 0.85)
    flat_shift: tuple[float, float] = (-0.3, 0.3)
    flat_saturation: tuple[float, float] = (0.7, 1.0)
    # JPEG (core.degradation.jpeg_roundtrip; beyond the paper): this share of the degraded pairs reaches the
    # network as a JPEG at a quality drawn from jpeg_quality, after the noise, as a camera or a compressed image
    # topic delivers it (the target stays clean). Validated as the kind `jpeg` (camera draws through JPEG).
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (60, 95)
    # Scene-scale crops (beyond the paper; training/data.py, TensorPatchSource): this share of the samples is cut
    # from the photo first scaled (area) so that its short side equals the crop, so the crop holds (nearly) the
    # whole scene, as the whole frame the node corrects does. 0 = crops at the photo's own scale (about half a
    # photo at crop 256).
    scene_prob: float = 0.0
    val_kinds: tuple[str, ...] | None = None  # validation draws; None = all that `kind` trains on


@dataclass
class TrainConfig:
    batch_size: int = 8
    lr: float = 1e-3
    max_steps: int = 20000
    patience: int = 300
    min_delta: float = 1e-5
    ema: float = 0.98  # smoothing of the batch loss that the patience rule watches
    val_every: int = 100
    checkpoint_every: int = 100
    init_from: str | None = None  # warm start: a model name or path (e.g. the shipped one)
    fast_short_side: int | None = None  # fine-tune through fast mode at this internal short side
    # ... through this guided fit (core/fast.py; recorded in the model file, which the runtime then runs with).
    guided_radius: int = DEFAULT_RADIUS
    guided_eps: float = DEFAULT_EPS
    minutes: float = 0.0  # wall-clock budget of the run (0 = none, max_steps only); the LR schedule spans it
    schedule: str = "cosine"  # cosine (lr -> lr * lr_min_ratio over max_steps or the budget) | constant
    lr_min_ratio: float = 0.02
    # Beyond the paper: a linear ramp from 0 over the first warmup_steps steps (0 = none), for warm starts, which
    # begin with a fresh Adam state. Tried once (models/MODEL_CARD.md, "2026-11-28"): it did not remove the dip
    # of the paper-sized over model's first validation; no shipped config sets it.
    warmup_steps: int = 0
    stop: str = "val_plateau"  # val_plateau | paper (smoothed-loss patience) | none
    val_patience: int = 10  # val_plateau: validations without a better score before stopping
    # Beyond the paper: an exponential moving average of the weights and BatchNorm statistics (decay per step;
    # 0 = off). When on, validation, best.pt and export use the averaged network, not the last step's.
    weight_average: float = 0.0
    # Beyond the paper: a plain L1 term added to eq. 4 with this weight (0 = eq. 4 alone; core/losses.py).
    l1_weight: float = 0.0
    # Beyond the paper: a squared-error term added to eq. 4 with this weight (0 = off; core/losses.py says why).
    mse_weight: float = 0.0
    # Beyond the paper: clip the gradient's global norm to this before each step (0 = off). Guards against the
    # rare batch whose gradient is many times the usual (median ~1, 99th percentile ~2.3 for mixed_fast).
    grad_clip: float = 0.0
    # Beyond the paper: before each validation, measure the BatchNorm statistics of the validated net afresh over
    # this many fixed training batches (0 = off: use the running statistics training left; precise_bn.py says
    # why). best.pt and the exported file keep the measured statistics.
    precise_bn_batches: int = 0
    # Beyond the paper: build each batch from batch_size / 2 frames seen twice, the second view shifted by up to
    # view_shift pixels (0 = off), and add view_consistency x the difference of the two outputs' levels where the
    # views overlap (core/losses.py, view_consistency_loss, says why: a pan should not make the correction
    # flicker). Tried 2026-11-27 (model card, "night"): it cost more validation score than the flicker it removed.
    view_shift: int = 0
    view_consistency: float = 0.0

    def guided_fit(self) -> GuidedFit:
        """The guided fit of fast mode (ValueError if invalid)."""
        return GuidedFit(self.guided_radius, self.guided_eps).checked()


@dataclass
class RunConfig:
    name: str
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)


_PAIR_KEYS = {"alpha", "beta_under", "gamma_under", "beta_over", "gamma_over", "mild_beta",
              "mild_gamma", "camera_logit_per_stop", "flat_slope", "flat_saturation"}
_MODEL_KEYS = set(MODEL_CONFIG_KEYS)
VAL_KINDS = ("under", "over", "mixed", "camera", "filmic", "lights", "mild", "well", "flat", "jpeg")


# Keys whose default is None (off): their type when set.
_OPTIONAL_TYPES: dict[str, type] = {"init_from": str, "fast_short_side": int}
# The model section's values: (type, smallest allowed) for numbers, the type for the rest.
_MODEL_TYPES: dict[str, tuple[type, int | None]] = {"attention_width": (int, 1), "attention_depth": (int, 1),
                                                    "use_attention": (bool, None), "use_acab": (bool, None),
                                                    "padding": (str, None), "head": (str, None)}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_number_pair(value: Any) -> bool:
    return isinstance(value, list | tuple) and len(value) == 2 and all(_is_number(v) for v in value)


def _yaml_number(value: Any) -> Any:
    """`value`, or the float a string spells: YAML 1.1 (PyYAML) reads 3e-4 or 1e-05, without a dot, as a string."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    elif isinstance(value, list):
        return [_yaml_number(v) for v in value]
    return value


def _check_model(model: dict) -> None:
    """The 'model' section's values, typed (IllExpNet would fail on them with a traceback, or keep a bad one)."""
    for key, value in model.items():
        if key == "widths":
            if not (isinstance(value, list | tuple) and value
                    and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
                raise ConfigError(f"'model.widths' must be a list of integers >= 1, got {value!r}")
        elif key in _MODEL_TYPES:
            expected, minimum = _MODEL_TYPES[key]
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ConfigError(f"'model.{key}' must be {expected.__name__}, got {value!r}")
            if minimum is not None and value < minimum:
                raise ConfigError(f"'model.{key}' must be >= {minimum}, got {value!r}")


def _fill(cls, raw: dict, section: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"'{section}' must be a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(raw) - set(known)
    if unknown:
        raise ConfigError(f"unknown key(s) in '{section}': {sorted(unknown)}; allowed: {sorted(known)}")
    obj = cls()
    for key, value in raw.items():
        default = getattr(obj, key)
        if isinstance(default, float | tuple):  # numbers, not names
            value = _yaml_number(value)
        if key in ("camera_stops_under", "camera_stops_over", "flat_shift"):
            if not (_is_number_pair(value) and value[0] <= value[1]):
                raise ConfigError(f"'{section}.{key}' must be a [low, high] pair of numbers, got {value!r}")
            value = (float(value[0]), float(value[1]))
        elif key == "jpeg_quality":
            if not (isinstance(value, list | tuple) and len(value) == 2
                    and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
                raise ConfigError(f"'{section}.jpeg_quality' must be a [low, high] pair of integers, got {value!r}")
            value = (value[0], value[1])
        elif key == "val_kinds" and value is not None:
            if not (isinstance(value, list | tuple) and value and all(v in VAL_KINDS for v in value)):
                raise ConfigError(f"'{section}.val_kinds' must be a list of {list(VAL_KINDS)}, got {value!r}")
            value = tuple(value)
        elif key in _PAIR_KEYS:
            if not _is_number_pair(value):
                raise ConfigError(f"'{section}.{key}' must be a [low, high] pair of numbers, got {value!r}")
            value = (float(value[0]), float(value[1]))
            if value[0] > value[1] or value[0] <= 0:
                raise ConfigError(f"'{section}.{key}' must satisfy 0 < low <= high, got {list(value)}")
        elif default is not None and not isinstance(default, tuple) or key in _OPTIONAL_TYPES:
            expected = type(default) if default is not None else _OPTIONAL_TYPES[key]
            if value is None and key in _OPTIONAL_TYPES:
                setattr(obj, key, None)
                continue
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ConfigError(f"'{section}.{key}' must be {expected.__name__}, got {value!r}")
            if expected is float and not math.isfinite(value):  # NaN passes every range check below
                raise ConfigError(f"'{section}.{key}' must be a finite number, got {value!r}")
        setattr(obj, key, value)
    return obj


def validate(cfg: RunConfig) -> RunConfig:
    d, t = cfg.data, cfg.train
    if d.kind not in ("under", "over", "mixed"):
        raise ConfigError(f"'data.kind' must be under, over or mixed, got {d.kind!r}")
    if d.crop < 16 or d.crop % 8:
        raise ConfigError(f"'data.crop' must be a multiple of 8 and >= 16, got {d.crop}")
    if d.val_crop != 0 and d.val_crop < 16:
        raise ConfigError(f"'data.val_crop' must be 0 (whole photos) or >= 16, got {d.val_crop}")
    if not 0 < d.val_fraction < 1:
        raise ConfigError(f"'data.val_fraction' must be in (0, 1), got {d.val_fraction}")
    for key in ("mixed_region_prob", "well_prob", "mild_prob", "noise_prob", "camera_prob", "camera_logistic_prob",
                "light_prob", "metering", "flat_prob", "jpeg_prob", "scene_prob"):
        if not 0 <= getattr(d, key) <= 1:
            raise ConfigError(f"'data.{key}' must be in [0, 1], got {getattr(d, key)}")
    if not 1 <= d.jpeg_quality[0] <= d.jpeg_quality[1] <= 100:
        raise ConfigError(f"'data.jpeg_quality' must be [low, high] within 1..100, got {list(d.jpeg_quality)}")
    if d.well_prob + d.mild_prob + d.flat_prob > 1:
        raise ConfigError("'data.well_prob' + 'data.mild_prob' + 'data.flat_prob' must be <= 1, got "
                          f"{d.well_prob + d.mild_prob + d.flat_prob}")
    if d.flat_slope[1] > 1 or d.flat_saturation[1] > 1:
        raise ConfigError("'data.flat_slope' and 'data.flat_saturation' must be <= 1 (a flat rendering loses "
                          f"contrast and colour), got {list(d.flat_slope)}, {list(d.flat_saturation)}")
    if not d.mild_beta[0] <= 1 <= d.mild_beta[1] or not d.mild_gamma[0] <= 1 <= d.mild_gamma[1]:
        raise ConfigError("'data.mild_beta' and 'data.mild_gamma' must each contain 1 (split into under / over)")
    if not d.camera_stops_under[1] <= 0 <= d.camera_stops_over[0]:
        raise ConfigError("'data.camera_stops_under' must be <= 0 and 'data.camera_stops_over' >= 0 (stops)")
    if not 0 < d.metering_key < 1 or d.metering_max_stops < 0:
        raise ConfigError(f"'data.metering_key' must be in (0, 1) and 'data.metering_max_stops' >= 0, got "
                          f"{d.metering_key}, {d.metering_max_stops}")
    try:
        t.guided_fit()
    except ValueError as exc:
        raise ConfigError(f"'train.guided_radius' / 'train.guided_eps': {exc}") from None
    if t.schedule not in ("cosine", "constant"):
        raise ConfigError(f"'train.schedule' must be cosine or constant, got {t.schedule!r}")
    if t.stop not in ("val_plateau", "paper", "none"):
        raise ConfigError(f"'train.stop' must be val_plateau, paper or none, got {t.stop!r}")
    if isinstance(t.warmup_steps, bool) or not isinstance(t.warmup_steps, int) or t.warmup_steps < 0:
        raise ConfigError(f"'train.warmup_steps' must be an integer >= 0, got {t.warmup_steps!r}")
    if t.minutes < 0 or not 0 < t.lr_min_ratio <= 1:
        raise ConfigError("'train.minutes' must be >= 0 and 'train.lr_min_ratio' in (0, 1]")
    if not 0 <= t.weight_average < 1:
        raise ConfigError(f"'train.weight_average' must be in [0, 1) (0 = off), got {t.weight_average}")
    if t.l1_weight < 0:
        raise ConfigError(f"'train.l1_weight' must be >= 0, got {t.l1_weight}")
    if t.mse_weight < 0:
        raise ConfigError(f"'train.mse_weight' must be >= 0, got {t.mse_weight}")
    if t.precise_bn_batches < 0:
        raise ConfigError(f"'train.precise_bn_batches' must be >= 0 (0 = off), got {t.precise_bn_batches}")
    if t.view_shift < 0 or t.view_consistency < 0:
        raise ConfigError(f"'train.view_shift' and 'train.view_consistency' must be >= 0, got {t.view_shift} and "
                          f"{t.view_consistency}")
    if t.view_shift and (t.batch_size % 2 or t.view_shift >= cfg.data.crop):
        raise ConfigError(f"'train.view_shift' needs an even 'train.batch_size' (got {t.batch_size}) and a shift "
                          f"below 'data.crop' ({cfg.data.crop}), got {t.view_shift}")
    if t.view_consistency and not t.view_shift:
        raise ConfigError("'train.view_consistency' needs 'train.view_shift' > 0 (the views it compares)")
    if t.grad_clip < 0:
        raise ConfigError(f"'train.grad_clip' must be >= 0 (0 = off), got {t.grad_clip}")
    if t.val_patience < 1:
        raise ConfigError(f"'train.val_patience' must be >= 1, got {t.val_patience}")
    if cfg.model.get("padding", "zeros") not in PADDING_MODES:
        raise ConfigError(f"'model.padding' must be one of {list(PADDING_MODES)}, got {cfg.model['padding']!r}")
    if cfg.model.get("head", "rgb") not in HEADS:
        raise ConfigError(f"'model.head' must be one of {list(HEADS)}, got {cfg.model['head']!r}")
    for key in ("batch_size", "max_steps", "patience", "val_every", "checkpoint_every"):
        if getattr(t, key) < 1:
            raise ConfigError(f"'train.{key}' must be >= 1, got {getattr(t, key)}")
    if not t.lr > 0:  # also NaN
        raise ConfigError(f"'train.lr' must be > 0, got {t.lr}")
    unknown = set(cfg.model) - _MODEL_KEYS
    if unknown:
        raise ConfigError(f"unknown key(s) in 'model': {sorted(unknown)}; allowed: {sorted(_MODEL_KEYS)}")
    _check_model(cfg.model)
    if not 0 <= t.ema < 1 or t.min_delta < 0:
        raise ConfigError(f"'train.ema' must be in [0, 1) and 'train.min_delta' >= 0, got {t.ema} and {t.min_delta}")
    if t.fast_short_side is not None and t.fast_short_side < 8:
        raise ConfigError(f"'train.fast_short_side' must be >= 8 (or null: full resolution), got {t.fast_short_side}")
    if d.max_val_images < 0:
        raise ConfigError(f"'data.max_val_images' must be >= 0 (0 = every held-out photo), got {d.max_val_images}")
    return cfg


def _read_config(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A config file's mapping, with `base: OTHER.yaml` (a path relative to the file) resolved: each section of
    the base, then this file's keys over it. A recipe's variant (under_fast.yaml of mixed_fast.yaml) names only
    what differs, so a change to the recipe cannot be forgotten in its copies."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:  # a folder, an unreadable or binary file
        raise ConfigError(f"config file {path} cannot be read: {getattr(exc, 'strerror', None) or exc}") from exc
    except yaml.YAMLError as exc:  # its text runs over several lines, with a caret under the spot
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping")
    unknown = set(raw) - {"name", "base", "data", "model", "train"}
    if unknown:
        raise ConfigError(f"unknown top-level key(s) in {path}: {sorted(unknown)}; "
                          "allowed: name, base, data, model, train")
    for section in ("data", "model", "train"):
        if not isinstance(raw.get(section) or {}, dict):
            raise ConfigError(f"{path}: '{section}' must be a mapping")
    if "base" not in raw:
        return raw
    if not isinstance(raw["base"], str):
        raise ConfigError(f"{path}: 'base' must be a config file name, e.g. mixed_fast.yaml")
    seen = (*seen, path.resolve())
    base_path = (path.parent / raw["base"]).resolve()
    if base_path in seen:
        raise ConfigError(f"{path}: 'base' makes a cycle through {base_path}")
    merged = _read_config(base_path, seen)  # already resolved: holds no 'base' key
    for key, value in raw.items():
        if key in ("data", "model", "train"):
            merged[key] = {**(merged.get(key) or {}), **(value or {})}
        elif key != "base":
            merged[key] = value
    return merged


def name_is_inherited(path: str | Path) -> bool:
    """Whether the config at `path` (already loaded, so readable) takes its `name` from its `base:`: its runs
    would then go to the base's run folder, where a fresh run clears the base's files."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return "base" in raw and "name" not in raw


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    raw = _read_config(path)
    if not isinstance(raw.get("name"), str):
        raise ConfigError(f"{path}: 'name' (a string) is required")
    cfg = RunConfig(
        name=raw["name"],
        data=_fill(DataConfig, raw.get("data") or {}, "data"),
        model=dict(raw.get("model") or {}),
        train=_fill(TrainConfig, raw.get("train") or {}, "train"),
    )
    return validate(cfg)


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """`SECTION.KEY=VALUE` strings (VALUE parsed as YAML, e.g. data.well_prob=0.35, model.head=tone) applied
    with the same checks as the file, then the whole config validated again."""
    for item in overrides:
        key, sep, text = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in ("data", "model", "train"):
            raise ConfigError(f"override {item!r} must look like data.KEY=VALUE, model.KEY=VALUE or train.KEY=VALUE")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({exc})") from exc
        if section == "model":
            cfg.model[name] = value
            continue
        current = getattr(cfg, section)
        raw = {f.name: getattr(current, f.name) for f in fields(current)}
        raw[name] = value
        setattr(cfg, section, _fill(type(current), raw, section))
    return validate(cfg)


def named_overrides(values: dict[str, object]) -> list[str]:
    """`SECTION.KEY=VALUE` strings for apply_overrides from a command line's named flags (None = not given)."""
    return [f"{key}={json.dumps(value)}" for key, value in values.items() if value is not None]


def resolve_data_dir(path: str) -> Path:
    """Relative data paths are taken from the repository root (so `../shared/data/train` works anywhere)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (REPO / p).resolve()
