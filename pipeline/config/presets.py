"""The presets facezoom ships (`configs/*.yaml`, package data), found by name from any folder.

`--config fast` is `configs/fast.yaml` wherever facezoom runs, also after `pip install .`;
`--config PATH` still takes any file. A preset's opening comment says what it is for.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from pipeline.errors import ConfigError


def presets() -> dict[str, str]:
    """Every shipped preset: name -> what it is for (the first sentence of its opening comment)."""
    found = {}
    for entry in sorted(resources.files("configs").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            found[entry.name[: -len(".yaml")]] = _purpose(entry.read_text())
    return found


def config_path(text: str | Path) -> Path:
    """The YAML file `--config TEXT` means: a file, else a shipped preset of that name."""
    path = Path(text)
    if path.is_dir():
        raise ConfigError(f"--config {path} is a folder; give a YAML file or a preset name ({', '.join(presets())})")
    if path.exists():
        if not path.is_file():
            raise ConfigError(f"--config {path} is not a regular file; give a YAML file or a preset name")
        return path
    if path.suffix == "" and len(path.parts) == 1:
        entry = resources.files("configs") / f"{path.name}.yaml"
        if entry.is_file():
            return Path(str(entry))
        raise ConfigError(f"no preset named {path.name!r}; the presets are {', '.join(presets())} (`facezoom presets` says what each is for)")
    raise ConfigError(f"config file not found: {path}")


def _purpose(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    words = " ".join(lines)
    end = words.find(". ")
    return words if end < 0 else words[: end + 1]
