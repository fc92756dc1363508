"""The README's pictures are remade by their own script (`make docs`), from any folder, leaving nothing behind."""

import importlib.util
import os
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_make_pictures_writes_every_readme_picture_and_no_scratch_file(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("make_pictures", ROOT / "docs" / "make_pictures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    written = module.make(tmp_path / "pictures")
    readme = (ROOT / "README.md").read_text()
    for path in written:
        assert Image.open(path).size[0] > 0
        assert f"docs/{path.name}" in readme, f"{path.name} is made but the README does not show it"
    assert os.listdir(elsewhere) == []
