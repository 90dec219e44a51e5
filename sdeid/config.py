"""Strict YAML -> frozen dataclass configs.

Every stage has one frozen dataclass config. Loading checks each key against the dataclass
(an unknown key is an error naming the file and key), checks each value's type, and lets
`--set key=value` overrides from the command line win over the file.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

from sdeid.errors import SdeidError


class ConfigError(SdeidError):
    """A config file or override is wrong; the message names the file, key and problem."""


def _check_type(value, tp, where: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        others = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is not None and len(others) == 1:  # X | None: say what X expected
            return _check_type(value, others[0], where)
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _check_type(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} is not a {tp}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (arg, *_) = typing.get_args(tp) or (typing.Any,)
        return tuple(_check_type(v, arg, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is typing.Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads 3e-4 (no dot) as a string; accept what float() accepts.
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{where}: expected {tp.__name__}, got a boolean {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _parse_override(text: str, where: str):
    import yaml

    if "=" not in text:
        raise ConfigError(f"{where}: override {text!r} is not key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def build_config(cls, values: dict, where: str):
    """Make `cls` from a mapping, with strict keys and types; then its own `check()`."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _check_type(value, hints[name], f"{where}: {name}")
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {missing}")
    cfg = cls(**kwargs)
    if hasattr(cfg, "check"):
        try:
            cfg.check()
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    return cfg


def read_yaml(path):
    """A config file's settings; a missing file or bad YAML is a ConfigError naming it."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None


def load_config(cls, path=None, overrides=()):
    values, where = {}, "defaults"
    if path is not None:
        values, where = read_yaml(path), str(path)
    values = dict(values) if isinstance(values, dict) else values
    for text in overrides:
        key, value = _parse_override(text, "--set")
        values[key] = value
    return build_config(cls, values, where)


def config_to_dict(cfg) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
