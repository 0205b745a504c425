"""Enhancer: the one interface the rest of the project uses to correct frames (frames in, frames out).

    enh = Enhancer.from_model("default", backend="auto", mode="mixed", fast=False)
    out = enh.enhance(frame, color_order="bgr")      # new H x W x 3 uint8

Models: "default" picks the shipped under.pt / over.pt / mixed.pt per mode (under/over fall back to mixed.pt
when only that one is shipped); any other value (a shipped name or a file path) is used for every mode. In
fast mode a file <name>_fast.pt next to <name>.pt, when present, replaces <name>.pt (a slimmer network
fine-tuned through fast mode); otherwise the same network runs at the reduced internal resolution.
Mode "auto" classifies each frame (illexp_ros.core.classify_exposure on a thumbnail) and routes it to the
under / over / mixed model; well-exposed frames come back unchanged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from illexp_ros.core.exposure import classify_exposure
from illexp_ros.runtime.backends import AUTO_ORDER, Backend, Runner, backend_class, unavailable_reason
from illexp_ros.runtime.errors import BackendUnavailableError, EnhancerError, ModelLoadError
from illexp_ros.runtime.exposure_compensation import changes_frames
from illexp_ros.runtime.model_io import load_model, resolve_model_path

MODES = ("under", "over", "mixed", "auto")
ROUTES = ("under", "over", "mixed")
COLOR_ORDERS = ("rgb", "bgr")
WELL_EXPOSED = "well-exposed"
PASSTHROUGH = "passthrough"
CORRECTION_OFF = "off"  # the route of a frame at correction strength 0: the node and the bag tool run no network
# Auto mode classifies a thumbnail: the luma statistics it needs do not change with resolution.
CLASSIFY_SHORT_SIDE = 64


def output_is_the_input(route: str | None, gain: float) -> bool:
    """Whether a frame that took `route` (CORRECTION_OFF, or an Enhancer's last_route) and is then scaled by
    `gain` (exposure compensation x level change) comes out exactly as it came in. The caller then passes the
    input message on itself: rebuilt from the 8-bit working copy, a 16-bit frame would lose its low 8 bits."""
    return route in (CORRECTION_OFF, WELL_EXPOSED, PASSTHROUGH) and not changes_frames(gain)


_default_logger = logging.getLogger("illexp_ros.runtime")


def fast_variant(path: Path) -> Path:
    """models/mixed.pt -> models/mixed_fast.pt."""
    return path.with_name(f"{path.stem}_fast{path.suffix}")


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def _check_fast(fast: bool) -> bool:
    if not isinstance(fast, bool | np.bool_):
        raise ValueError(f"fast must be True or False, got {fast!r}")
    return bool(fast)


def _check_short_side(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"internal_short_side must be an integer >= 0 (0 = backend default), got {value!r}")
    return int(value)


def check_frame(frame: np.ndarray) -> np.ndarray:
    """An H x W x 3 uint8 array, C-contiguous (copied only if it was not), else ValueError."""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f"frame must be H x W x 3 uint8, got shape {frame.shape} dtype {frame.dtype}")
    return np.ascontiguousarray(frame)


def _check_color_order(color_order: str) -> bool:
    if color_order not in COLOR_ORDERS:
        raise ValueError(f"color_order must be 'rgb' or 'bgr', got {color_order!r}")
    return color_order == "bgr"


def select_backend(name: str, log: Callable[[str], None]) -> list[str]:
    """Backend names to try, in order: the one asked for, or for `auto` every available one fastest first."""
    if name != "auto":
        backend_class(name)  # ValueError for an unknown name
        reason = unavailable_reason(name)
        if reason:
            raise BackendUnavailableError(f"backend {name!r} is unavailable: {reason}")
        return [name]
    chosen, skipped = [], []
    for candidate in AUTO_ORDER:
        reason = unavailable_reason(candidate)
        if reason:
            skipped.append(f"{candidate}: {reason}")
        else:
            chosen.append(candidate)
    if not chosen:
        raise BackendUnavailableError("no backend can run here: " + "; ".join(skipped))
    log(f"backend auto -> {chosen[0]}" + (f" (skipped {'; '.join(skipped)})" if skipped else ""))
    return chosen


class Enhancer:
    """Corrects ill-exposed frames with the shipped networks on the fastest backend available."""

    def __init__(self, backend: Backend, model: str, mode: str, fast: bool, internal_short_side: int,
                 logger: Callable[[str], None]) -> None:
        self._backend = backend
        self._model_spec = str(model)
        self._mode = _check_mode(mode)
        self._fast = _check_fast(fast)
        self._short_side = _check_short_side(internal_short_side)
        self._log = logger
        self._runners: dict[Path | None, Runner] = {}
        # The runners' frame pipelines, a tuple replaced whole under the lock and read without it: the node's
        # diagnostics ask for buffered_resolutions() once a second and must not wait out a frame (seconds at
        # 1080p in full mode on a CPU) with the executor that also answers parameter requests.
        self._pipelines: tuple = ()
        self._route_paths: dict[tuple[str, bool], Path | None] = {}
        self._trained_short_side: dict[Path | None, int] = {}  # a fast model's meta: the size it was tuned at
        self._lock = threading.Lock()  # frames and settings; held for one frame, never while loading
        self._last_frame: tuple[tuple[int, int], bool] | None = None  # (H, W), bgr of the last frame
        self._load_lock = threading.Lock()  # one load at a time
        self._fallback_logged: set[str] = set()
        self._closed = False
        self.last_route = ""

    @classmethod
    def from_model(cls, model: str = "default", backend: str = "auto", mode: str = "mixed", fast: bool = False,
                   internal_short_side: int = 0, logger: Callable[[str], None] | None = None,
                   threads: int = 0) -> Enhancer:
        """Load the model(s) `mode` needs on `backend` (see the module docstring). threads > 0 caps the CPU
        backends' threads (torch's setting is process-wide). Raises ModelLoadError, BackendUnavailableError,
        or ValueError for an invalid argument."""
        _check_mode(mode)
        _check_fast(fast)
        _check_short_side(internal_short_side)
        log = logger or _default_logger.info
        candidates = select_backend(backend, log)
        for i, name in enumerate(candidates):
            enh = cls(backend_class(name)(log, threads), model, mode, fast, internal_short_side, log)
            try:
                enh.prepare(mode, fast)
            except ModelLoadError:
                enh.close()
                raise
            except Exception as exc:
                enh.close()
                if i + 1 == len(candidates):
                    raise
                # auto only: a backend that is installed but fails on this model (say a TensorRT build
                # error) should not stop the robot's camera pipeline when a slower one works.
                log(f"backend {name} failed to load the model ({type(exc).__name__}: {exc}); "
                    f"trying {candidates[i + 1]}")
                continue
            log(f"enhancer ready: backend {name}, model {enh.model_name}, mode {mode}, fast {fast}")
            return enh
        raise AssertionError("unreachable")

    # -- settings ------------------------------------------------------------------------------------------
    @property
    def backend_name(self) -> str:
        return self._backend.name

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        self.switch(mode=_check_mode(value))  # checked here: switch() reads None as "unchanged"

    @property
    def fast(self) -> bool:
        return self._fast

    @fast.setter
    def fast(self, value: bool) -> None:
        self.switch(fast=_check_fast(value))

    def switch(self, mode: str | None = None, fast: bool | None = None) -> None:
        """Change mode and/or fast. What the new settings need is loaded first (prepare) while frames keep
        being corrected with the settings in force; then the switch itself happens between two frames. On an
        error (a model that does not load) the settings in force stay."""
        mode = self._mode if mode is None else _check_mode(mode)
        fast = self._fast if fast is None else _check_fast(fast)
        self.prepare(mode, fast)
        with self._lock:
            self._mode, self._fast = mode, fast

    def is_ready(self, mode: str, fast: bool) -> bool:
        """Whether (mode, fast) can be switched to without loading anything (ModelLoadError for a missing
        model file)."""
        plan = self._plan(_check_mode(mode), _check_fast(fast))
        with self._lock:
            return self._loaded(plan)

    def prepare(self, mode: str, fast: bool) -> None:
        """Load what (mode, fast) needs (model files, ONNX exports, engines) without touching the settings in
        force and without holding the frame lock: a thread may call this while another corrects frames."""
        plan = self._plan(_check_mode(mode), _check_fast(fast))
        with self._lock:
            if self._closed:
                raise EnhancerError("this Enhancer is closed")
            if self._loaded(plan):
                # Nothing to load: no waiting for a load another thread may be doing for other settings.
                self._route_paths.update(plan)
                return
        with self._load_lock:
            for path in dict.fromkeys(plan.values()):
                with self._lock:
                    if self._closed:
                        raise EnhancerError("this Enhancer is closed")
                    if path in self._runners:
                        continue
                    last = self._last_frame
                runner, trained = self._load_runner(path)
                if last is not None and path is not None:
                    # One frame of the size in use through the new runner here, off the frame path: its first
                    # run (buffers, the session's first inference) would otherwise stall the first real frame.
                    (h, w), bgr = last
                    short_side = (self._short_side or trained or self._backend.default_short_side) if fast else 0
                    try:
                        runner.run(np.full((h, w, 3), 64, np.uint8), bgr, False, short_side)
                    except Exception:
                        runner.close()
                        raise
                with self._lock:
                    if self._closed:
                        runner.close()
                        raise EnhancerError("this Enhancer is closed")
                    self._runners[path] = runner
                    self._pipelines = tuple(p for r in self._runners.values()
                                            if (p := getattr(r, "pipeline", None)) is not None)
                    if trained:
                        self._trained_short_side[path] = trained
            with self._lock:
                self._route_paths.update(plan)

    def _short_side_for(self, path: Path | None) -> int:
        # Explicit setting, else the size a fast model was fine-tuned at (its file's meta), else the backend's.
        return self._short_side or self._trained_short_side.get(path, 0) or self._backend.default_short_side

    @property
    def internal_short_side(self) -> int:
        """Internal short side used in fast mode: the value set, else (when 0) the fast model's own
        `fast_short_side` (from its file's meta), else the backend's default."""
        return self._short_side_for(self._route_paths.get((self._routes()[-1], True)))

    @internal_short_side.setter
    def internal_short_side(self, value: int) -> None:
        self._short_side = _check_short_side(value)

    @property
    def model_name(self) -> str:
        """Model file(s) the current mode uses, e.g. 'mixed' or 'under+over+mixed' ('none' for passthrough)."""
        if not self._backend.needs_model:
            return "none"
        names = []
        for route in self._routes():
            path = self._route_paths.get((route, self._fast))
            if path is not None and path.stem not in names:
                names.append(path.stem)
        return "+".join(names) or self._model_spec

    # -- loading -------------------------------------------------------------------------------------------
    def _routes(self) -> tuple[str, ...]:
        return ROUTES if self._mode == "auto" else (self._mode,)

    def _base_path(self, route: str) -> Path:
        if self._model_spec != "default":
            return resolve_model_path(self._model_spec)
        try:
            return resolve_model_path(route)
        except ModelLoadError:
            if route == "mixed":
                raise
            path = resolve_model_path("mixed")
            if route not in self._fallback_logged:  # _plan runs at every parameter change: say it once
                self._fallback_logged.add(route)
                self._log(f"no shipped {route}.pt: the {route} route uses {path}")
            return path

    def _loaded(self, plan: dict[tuple[str, bool], Path | None]) -> bool:
        """Whether every model file of `plan` has a runner (call with the frame lock held)."""
        return all(path in self._runners for path in plan.values())

    def _plan(self, mode: str, fast: bool) -> dict[tuple[str, bool], Path | None]:
        """(route, fast) -> model file, for every route of `mode` (ModelLoadError for a missing file)."""
        plan: dict[tuple[str, bool], Path | None] = {}
        for route in ROUTES if mode == "auto" else (mode,):
            path = None
            if self._backend.needs_model:
                path = self._base_path(route)
                if fast and fast_variant(path).is_file():
                    path = fast_variant(path)
            plan[(route, fast)] = path
        return plan

    def _load_runner(self, path: Path | None) -> tuple[Runner, int]:
        """A backend runner for one model file (None: the passthrough backend), and the internal short side its
        meta says it was fine-tuned at (0 if none)."""
        model, info = load_model(path) if path is not None else (None, {"name": PASSTHROUGH})
        trained = 0
        if path is not None:
            trained, fit = info["fast_short_side"], info["guided_fit"]
            self._log(f"loaded {path} ({info['name']}) on {self._backend.name}"
                      + (f"; fine-tuned for fast mode at internal short side {trained}, guided fit radius "
                         f"{fit.radius} eps {fit.eps:g}" if trained else ""))
        # Each backend runs the BatchNorm-folded network (core.networks.fold_batchnorm) and folds it where it
        # uses the torch model: ONNX Runtime with a cached export needs no torch work here at all.
        return self._backend.load(model, info), trained

    # -- frames --------------------------------------------------------------------------------------------
    def _classify(self, frame: np.ndarray, bgr: bool) -> str:
        h, w = frame.shape[:2]
        scale = CLASSIFY_SHORT_SIDE / min(h, w)
        thumb = frame
        if scale < 1.0:
            thumb = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))),
                               interpolation=cv2.INTER_AREA)
        return classify_exposure(thumb[..., ::-1] if bgr else thumb)

    def _run(self, frames: list[np.ndarray], color_orders: list[str],
             want_map: bool) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Correct `frames` (each in its colour order) under one hold of the lock: one mode, one fast setting and,
        in auto mode, one route (the first frame's) for all of them."""
        bgrs = [_check_color_order(order) for order in color_orders]
        frames = [check_frame(frame) for frame in frames]
        with self._lock:
            if self._closed:
                raise EnhancerError("this Enhancer is closed")
            self._last_frame = (frames[-1].shape[:2], bgrs[-1])
            if not self._backend.needs_model:
                self.last_route = PASSTHROUGH
                return [self._runners[None].run(frame, bgr, want_map, 0) for frame, bgr in zip(frames, bgrs)]
            route = self._mode
            if route == "auto":
                route = self._classify(frames[0], bgrs[0])
                if route == "well":
                    self.last_route = WELL_EXPOSED
                    return [(frame.copy(), np.zeros(frame.shape[:2], np.uint8) if want_map else None)
                            for frame in frames]
            path = self._route_paths[(route, self._fast)]
            self.last_route = path.stem
            short_side = self._short_side_for(path) if self._fast else 0
            return [self._runners[path].run(frame, bgr, want_map, short_side) for frame, bgr in zip(frames, bgrs)]

    def enhance(self, frame: np.ndarray, color_order: str = "rgb") -> np.ndarray:
        """Corrected copy of `frame` (H x W x 3 uint8 in `color_order`, 'rgb' or 'bgr'), same shape and order."""
        return self._run([frame], [color_order], want_map=False)[0][0]

    def enhance_with_map(self, frame: np.ndarray, color_order: str = "rgb") -> tuple[np.ndarray, np.ndarray]:
        """(corrected frame, H x W uint8 exposure map: the mean over channels of the attention map, 0..255)."""
        out, em = self._run([frame], [color_order], want_map=True)[0]
        return out, em

    def enhance_views(self, frames: list[np.ndarray], color_orders: list[str],
                      want_map: bool = False) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Views of one scene taken at once (a stereo pair), each (in its colour order) as `enhance` /
        `enhance_with_map` would correct it, but all with the same mode and fast setting (a switch waits until
        they are done) and, in auto mode, all on the route the first view is classified to: two views of one
        scene must not go through two different networks, or one be left untouched and the other corrected.
        Returns (corrected, exposure map or None unless `want_map`) per view."""
        if not frames or len(frames) != len(color_orders):
            raise ValueError(f"enhance_views needs one colour order per frame and at least one frame "
                             f"(got {len(frames)} frames, {len(color_orders)} orders)")
        return self._run(list(frames), list(color_orders), want_map)

    def exposure_map(self, frame: np.ndarray, color_order: str = "rgb") -> np.ndarray:
        return self.enhance_with_map(frame, color_order)[1]

    def buffered_resolutions(self) -> int:
        """The most per-resolution buffer sets any loaded model's frame pipeline holds (bounded: see the
        pipelines' MAX_CACHED_* constants); 0 for the passthrough backend."""
        return max([p.buffered_resolutions() for p in self._pipelines] or [0])

    def close(self) -> None:
        with self._lock:
            for runner in self._runners.values():
                runner.close()
            self._runners.clear()
            self._pipelines = ()
            self._route_paths.clear()
            self._backend.close()
            self._closed = True

    def __enter__(self) -> Enhancer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
