"""The strict pydantic base every user-facing configuration model derives from."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Strict, ValidationError

from .errors import ConfigError


class StrictModel(BaseModel):
    """Frozen, no unknown keys, no silent type coercion (a "5" is not 5)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# Config files hold lists where the models keep immutable tuples: accept a list there.
NameTuple = Annotated[tuple[str, ...], Strict(False)]


def describe_validation_error(err: ValidationError, what: str) -> str:
    """Turn pydantic's error list into lines that name the field, the value and the rule."""
    lines = [f"invalid {what}:"]
    for e in err.errors(include_url=False):
        loc = ".".join(str(part) for part in e["loc"]) or "(top level)"
        msg = e["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            if msg.startswith(prefix):
                msg = msg[len(prefix):]
        if e["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key (not a field of {what})")
        elif e["type"] == "missing":
            lines.append(f"  {loc}: required but missing")
        else:
            lines.append(f"  {loc}: {msg} (got {e.get('input')!r})")
    return "\n".join(lines)


def config_error(err: ValidationError, what: str) -> ConfigError:
    return ConfigError(describe_validation_error(err, what))
