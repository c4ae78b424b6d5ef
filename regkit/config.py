"""What every settings schema shares: the strict pydantic base and the one YAML reader.

The registration presets (:mod:`regkit.optimize.config`), the cascade's model config
(:mod:`regkit.nn.config`) and the training config (:mod:`regkit.train.config`) all derive from
:class:`StrictModel` and read their YAML through :func:`yaml_settings`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Union

from pydantic import BaseModel, ConfigDict

from regkit.errors import InputError


class StrictModel(BaseModel):
    """A settings group: unknown (mistyped) keys are errors, and so are NaN and ±inf (a ``.inf``
    weight would run and write NaN fields)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def yaml_settings(text: str, origin: Union[str, Path], what: str = "the config") -> Dict[str, Any]:
    """The mapping of settings a YAML text holds (``{}`` for an empty file): plain data only, nesting
    bounded (:func:`regkit.io.validate.parse_yaml`); anything but a mapping is an :class:`InputError`."""
    from regkit.io.validate import parse_yaml

    data = parse_yaml(text, origin, what)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError("must be a YAML mapping of settings", origin)
    return data
