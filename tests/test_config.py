"""Configuration: defaults, YAML presets, --set overrides, and one-line errors naming the key."""

import dataclasses
import json
import math
import types
import typing
from pathlib import Path

import pytest

from pipeline.config import PipelineConfig, load_config
from pipeline.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_default_yaml_spells_out_the_defaults():
    assert load_config(CONFIGS / "default.yaml") == load_config()


@pytest.mark.parametrize("preset", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_preset_loads(preset):
    load_config(CONFIGS / preset)


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("video:\n  crf: 30\nsr:\n  batch_size: 4\n")
    cfg = load_config(path, ["sr.batch_size=16", "detect.thresholds=[0.5, 0.6, 0.7]", "sr.generator=/x/y.pt"])
    assert cfg.video.crf == 30
    assert cfg.sr.batch_size == 16
    assert cfg.detect.thresholds == (0.5, 0.6, 0.7)
    assert cfg.sr.generator == "/x/y.pt"


def test_exponent_numbers_are_numbers():
    assert load_config(overrides=["sr.eps=1e-9"]).sr.eps == 1e-9  # YAML 1.1 alone would read a string


def test_codec_aliases_resolve_to_encoders():
    assert load_config(overrides=["video.codec=hevc"]).video.codec == "libx265"


@pytest.mark.parametrize(
    "override,message",
    [
        ("sr.nope=1", r"unknown config key sr\.nope; allowed: backend, generator"),
        ("nope.key=1", r"unknown config section 'nope'"),
        ("sr.backend=magic", r"sr\.backend must be one of 'classical', 'pulse', 'ffsr', 'restore'; got 'magic'"),
        ("sr.batch_size=0", r"sr\.batch_size must be in 1\.\.1024 crops, got 0"),
        ("sr.batch_size=many", r"sr\.batch_size must be an integer, got 'many'"),
        ("video.crf=99", r"video\.crf must be in 0\.\.63, got 99"),
        ("video.codec=divx", r"video\.codec must be one of libx264"),
        ("composite.scale=3", r"composite\.scale must be one of 1, 2, 4; got 3"),
        ("engine.sr_actors=0", r"engine\.sr_actors must be in 1\.\.1024"),
        ("detect.thresholds=[0.5]", r"detect\.thresholds must have 3 items"),
        ("sr.pre_blur=maybe", r"sr\.pre_blur must be true or false"),
        ("sr.steps", r"--set expects section\.key=value"),
        ("video.crf=[1", r"--set video\.crf=\[1: not a value \(while parsing"),  # YAML's own error was an internal one
        ("sr.in_size=[1, 2]", r"sr\.in_size: \[1, 2\] fits none of"),  # a union's one error was raised as a string
        ("sr.in_size=yes", r"sr\.in_size: True fits none of"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(overrides=[override])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["model #2.pt", "[v2] model.pt", "{a} b.pt", "@home.pt", "!x.pt", "*.pt", "run: 2.pt", "yes", "1e3"])
def test_a_text_setting_takes_a_file_name_as_typed(name):
    # YAML cut a comment off, failed on a flow sequence, or read a bool or a number.
    assert load_config(overrides=[f"sr.generator={name}"]).sr.generator == name
    assert load_config(overrides=[f"composite.upscaler= {name} "]).composite.upscaler == name
    assert load_config(overrides=[f"sr.generator='{name}'"]).sr.generator == name  # YAML's quotes still quote
    assert load_config(overrides=["sr.generator=null"]).sr.generator is None  # null is still the default


def test_bad_config_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("video: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(listy)


def test_config_is_frozen_and_replace_makes_a_new_one():
    cfg = load_config()
    with pytest.raises(Exception):
        cfg.sr.batch_size = 3
    other = cfg.replace(sr={"batch_size": 3})
    assert other.sr.batch_size == 3 and cfg.sr.batch_size == 8


# Numeric settings for which 10**9 is a valid value, with a value that is absurd for them instead.
HUGE_IS_VALID = {"sr.seed": 2**64}  # any 64-bit number is a seed, 10**9 too


def _absurd(hint, default, key: str) -> list:
    """Values of the type `hint` that no setting should take: each number in it, in turn, far out
    of any sensible range either way (NaN and infinity for floats), the rest left at `default`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is int:
        return [HUGE_IS_VALID.get(key, 10**9), -(10**9)]
    if hint is float:
        return [1e12, -1e12, math.inf, math.nan]
    if origin is typing.Literal:
        return [10**9] if any(type(a) is int for a in args) else []
    if origin in (typing.Union, types.UnionType):
        return [v for a in args for v in _absurd(a, default, key)]
    if origin is tuple:
        items = args if not (len(args) == 2 and args[1] is Ellipsis) else (args[0],) * len(default)
        return [(*default[:i], v, *default[i + 1:]) for i, item in enumerate(items) for v in _absurd(item, default[i], key)]
    if origin is dict:
        return [{"x": v} for v in _absurd(args[1], None, key)]
    return []  # bool, str: not numbers


def _numeric_settings() -> list[tuple[str, type, str, object]]:
    """(section, its class, field, absurd value) for every number in every section of the config,
    found by type: a setting added later is in it without a word here."""
    cases = []
    for section, cls in typing.get_type_hints(PipelineConfig).items():
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            for value in _absurd(hints[field.name], default, f"{section}.{field.name}"):
                cases.append((section, cls, field.name, value))
    return cases


NUMERIC = _numeric_settings()


def test_the_numeric_settings_are_found_in_every_section():
    assert {section for section, *_ in NUMERIC} == {f.name for f in dataclasses.fields(PipelineConfig)}
    keys = {f"{section}.{name}" for section, _, name, _ in NUMERIC}
    assert {"video.decode_threads", "detect.thresholds", "sr.steps", "engine.sr_resources", "live.budget_ms"} <= keys
    assert set(HUGE_IS_VALID) <= keys


@pytest.mark.parametrize("section, cls, name, value", NUMERIC, ids=[f"{s}.{n}={v!r}" for s, _, n, v in NUMERIC])
def test_every_numeric_setting_is_bounded_both_ways(section, cls, name, value):
    """A value far out of range is refused by the section (ValueError naming the field) and by
    `--set` (one line naming the key), never left for the run to fail on hours later."""
    with pytest.raises(ValueError) as info:
        cls(**{name: value})
    assert str(info.value).startswith(name), info.value
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[f"{section}.{name}={json.dumps(value)}"])
    message = str(info.value)
    assert message.startswith(f"{section}.{name}") and "\n" not in message, message


@pytest.mark.parametrize("key", sorted(HUGE_IS_VALID))
def test_a_huge_value_that_is_valid_stays_valid(key):
    section, name = key.split(".")
    assert getattr(getattr(load_config(overrides=[f"{key}={10**9}"]), section), name) == 10**9
