"""Configuration: defaults, YAML presets, --set overrides, and one-line errors naming the key."""

from pathlib import Path

import pytest

from pipeline.config import load_config
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
        ("sr.backend=magic", r"sr\.backend must be one of 'classical', 'pulse', 'ffsr'; got 'magic'"),
        ("sr.batch_size=0", r"sr\.batch_size must be >= 1, got 0"),
        ("sr.batch_size=many", r"sr\.batch_size must be an integer, got 'many'"),
        ("video.crf=99", r"video\.crf must be in 0\.\.63, got 99"),
        ("video.codec=divx", r"video\.codec must be one of libx264"),
        ("composite.scale=3", r"composite\.scale must be one of 1, 2, 4; got 3"),
        ("engine.sr_actors=0", r"engine\.sr_actors must be >= 1"),
        ("detect.thresholds=[0.5]", r"detect\.thresholds must have 3 items"),
        ("sr.pre_blur=maybe", r"sr\.pre_blur must be true or false"),
        ("sr.steps", r"--set expects section\.key=value"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(overrides=[override])
    assert "\n" not in str(info.value)


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
