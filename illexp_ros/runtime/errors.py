"""Errors the runtime raises. Each message names the file, the backend or the package involved."""


class EnhancerError(RuntimeError):
    """Base class: anything that stops the runtime from producing frames."""


class ModelLoadError(EnhancerError):
    """A model name that is not shipped, a missing file, or a file that is not a valid illexp_ros model."""


class BackendUnavailableError(EnhancerError):
    """A backend was asked for but cannot run here (missing package, no GPU)."""
