"""Errors the runtime raises. Each message names the file, the backend or the package involved."""


class EnhancerError(RuntimeError):
    """Base class: anything that stops the runtime from producing frames."""


class ModelLoadError(EnhancerError):
    """A model name that is not shipped, a missing file, or a file that is not a valid illexp_ros model."""


class BackendUnavailableError(EnhancerError):
    """A backend was asked for but cannot run here (missing package, no GPU)."""


def error_line(exc: BaseException) -> str:
    """One line for an error a tool reports: an OSError as 'reason: path' (e.g. 'Permission denied: runs/x'),
    anything else as 'Type: the first line of its message' (exporter and compiler errors run to many lines)."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    text = str(exc).strip()
    return type(exc).__name__ + (f": {text.splitlines()[0]}" if text else "")
