"""Launch arguments (always strings) to the types the nodes declare; the launch files in launch/ import this.

Kept free of ROS imports so the tests can run it where `launch` is not installable."""

from __future__ import annotations


def typed(value: str, kind: type) -> object:
    """`value` as a `kind` (bool, float, str) parameter value; a value that is not one is passed on as it is,
    so the node refuses it with the one line that names the parameter."""
    if kind is bool:
        if value.lower() in ("true", "1", "yes", "on"):
            return True
        if value.lower() in ("false", "0", "no", "off"):
            return False
        return value  # a typo (fast:=ture) was read as false; now the node refuses it with one line
    if kind is float:
        try:
            return float(value)
        except ValueError:
            return value
    return value


def flag(name: str, value: str) -> bool:
    """One of a launch file's own true/false arguments (lifecycle, autostart): a typo stops the launch, naming it."""
    parsed = typed(value.strip(), bool)
    if not isinstance(parsed, bool):
        raise ValueError(f"launch argument {name}:={value} must be true or false")
    return parsed


def parameter_overrides(arguments: dict[str, str], kinds: dict[str, type]) -> dict[str, object]:
    """The node parameters the launch arguments set: each non-empty argument named in `kinds`, typed; an empty
    one keeps the params file's value."""
    return {name: typed(arguments[name].strip(), kind) for name, kind in kinds.items() if arguments[name].strip()}
