"""Loading the pipeline configuration: the stages' sections (`sections.py`) composed into `PipelineConfig`.

A section's `__post_init__` raises `ValueError` for a value out of range; this module turns
that, an unknown key or a value of the wrong type into a one-line `ConfigError` that names the
key and what is allowed.

Sources, later ones winning: the dataclass defaults, a YAML file (`--config`), then
`--set section.key=value` overrides.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

import pipeline.config.sections as sections
from pipeline.config.presets import config_path
from pipeline.errors import ConfigError


def _section_types() -> dict[str, type]:
    return {
        "video": sections.VideoConfig,
        "detect": sections.DetectConfig,
        "track": sections.TrackConfig,
        "sr": sections.SRConfig,
        "composite": sections.CompositeConfig,
        "engine": sections.EngineConfig,
        "live": sections.LiveConfig,
    }


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """All settings of one run. Build it with `load_config`, not by hand."""

    video: sections.VideoConfig
    detect: sections.DetectConfig
    track: sections.TrackConfig
    sr: sections.SRConfig
    composite: sections.CompositeConfig
    engine: sections.EngineConfig
    live: sections.LiveConfig

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {f.name: dataclasses.asdict(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **sections: Mapping[str, Any]) -> "PipelineConfig":
        """A copy with some keys changed: `cfg.replace(sr={"backend": "pulse"})`."""
        data = self.to_dict()
        for name, values in sections.items():
            if name not in data:
                raise ConfigError(f"unknown config section {name!r}; allowed: {', '.join(data)}")
            data[name].update(values)
        return _build(data)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (),
                defaults: Mapping[str, Mapping[str, Any]] | None = None) -> PipelineConfig:
    """Defaults, then the YAML file at `path` (or the shipped preset of that name), then `section.key=value` overrides.

    `defaults`: a command's own defaults, `{section: {key: value}}`, where they differ from the
    built-in ones (enhance: `sr.fidelity` 0). A null in the file or an override, for a setting
    that cannot be null, means the default: the command's, else the built-in one.
    """
    data: dict[str, dict[str, Any]] = {name: {} for name in _section_types()}
    _merge(data, defaults or {}, source="the command's defaults")
    if path is not None:
        _merge(data, _read_yaml(config_path(path)), source=str(path))
    for item in overrides:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        _merge(data, {section: {name: _override_value(section, name, raw)}}, source="--set")
    _nulls_to_defaults(data, defaults or {})
    return _build(data)


def _override_value(section: str, name: str, raw: str) -> Any:
    """An override's text as its setting takes it: YAML (numbers, booleans, lists, null), except that
    a setting of text (a file name, a registry name) takes the text as typed: YAML would cut
    `model #2.pt` at its comment and fail on `[v2] model.pt`. Quoted, it is YAML's; `null` is the default."""
    text = raw.strip()
    hint = typing.get_type_hints(_section_types()[section]).get(name) if section in _section_types() else None
    text_only = hint is str or (typing.get_origin(hint) in (typing.Union, types.UnionType) and set(typing.get_args(hint)) == {str, type(None)})
    if not text or (text_only and text not in ("null", "~") and text[0] not in "'\""):
        return text
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {section}.{name}={text}: not a value ({str(err).splitlines()[0]}); "
                          f"quote a text with YAML's quotes: --set \"{section}.{name}='...'\"") from None


def _nulls_to_defaults(data: dict[str, dict[str, Any]], defaults: Mapping[str, Mapping[str, Any]]) -> None:
    types_ = _section_types()
    for section, values in data.items():
        hints = typing.get_type_hints(types_[section])
        for key, value in list(values.items()):
            if value is None and key in hints and type(None) not in typing.get_args(hints[key]):
                if key in defaults.get(section, {}):
                    values[key] = defaults[section][key]
                else:
                    del values[key]


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not text (a YAML file is); check the path") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    except RecursionError:  # PyYAML's composer recurses once per level: [[[[...]]]] thousands deep
        raise ConfigError(f"config file {path} is nested too deeply to be a facezoom config (sections of "
                          "key: value pairs, two levels); check the file") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(loaded).__name__}")
    return loaded


def _merge(data: dict[str, dict[str, Any]], new: Mapping[str, Any], *, source: str) -> None:
    for section, values in new.items():
        if section not in data:
            raise ConfigError(f"unknown config section {section!r} in {source}; allowed: {', '.join(data)}")
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"config section {section!r} in {source} must be a mapping of keys")
        data[section].update(values)


def _build(data: Mapping[str, Mapping[str, Any]]) -> PipelineConfig:
    types_ = _section_types()
    return PipelineConfig(**{name: _build_section(name, types_[name], data.get(name, {})) for name in types_})


def _build_section(section: str, cls: type, values: Mapping[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown config key {section}.{key}; allowed: {', '.join(fields)}")
        kwargs[key] = _coerce(f"{section}.{key}", value, hints[key])
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise ConfigError(f"{section}.{err}") from None


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against the type hint `hint`, converting where it is unambiguous."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{key} must be one of {allowed}; got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, option)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {hint}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        item_types = args if (len(args) != 2 or args[1] is not Ellipsis) else (args[0],) * len(value)
        if len(item_types) != len(value):
            raise ConfigError(f"{key} must have {len(item_types)} items, got {len(value)}")
        return tuple(_coerce(f"{key}[{i}]", v, t) for i, (v, t) in enumerate(zip(value, item_types)))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, e.g. {{name: 1}}; got {value!r}")
        key_type, value_type = args
        return {_coerce(f"{key} key", k, key_type): _coerce(f"{key}.{k}", v, value_type) for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-9 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if hint is Any:
        return value
    raise TypeError(f"config key {key} has an unsupported type {hint!r}")  # a bug in a section class
