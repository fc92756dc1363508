"""The house rules a reader relies on: library files of at most 450 lines and functions of at most
60, an ARCHITECTURE.md whose every file, class and function exists, and a LICENSE that matches
the package metadata."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = sorted([*ROOT.glob("pipeline/**/*.py"), *ROOT.glob("models/**/*.py"), ROOT / "run_pipeline.py"])
MAX_FILE, MAX_FUNCTION = 450, 60
OTHERS = {"ActorDiedError", "num_cpus", "num_gpus", "to_ndarray"}  # names ARCHITECTURE.md cites from Ray and PyAV


def test_library_files_and_functions_stay_short():
    long_files, long_functions = [], []
    for path in LIBRARY:
        text = path.read_text()
        name = path.relative_to(ROOT)
        if len(text.splitlines()) > MAX_FILE:
            long_files.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION:
                long_functions.append(f"{name}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long_files, long_files
    assert not long_functions, long_functions


def _defined_names() -> set[str]:
    """Every class, function and method in the library, as `Name` and `Class.method`."""
    names = set()
    for path in LIBRARY:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                names.add(node.name)
                names.update(f"{node.name}.{item.name}" for item in node.body
                             if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):  # module tables (HANDLERS, BUILDERS) and aliases
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def test_every_name_architecture_md_mentions_exists():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    names, files = _defined_names(), {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.py") if ".venv" not in p.parts}
    missing = []
    for token in re.findall(r"`([^`\n]+)`", text):
        token = token.split("(")[0].strip()
        if token.endswith((".py", "/")):
            if not any(f == token or f.endswith("/" + token) or f.startswith(token) for f in files):
                missing.append(token)
        elif re.fullmatch(r"_?[A-Z][A-Za-z]+[a-z][A-Za-z]*(\.[a-z_]\w*)?", token) or re.fullmatch(r"[a-z]+_[a-z_]+", token):
            if token not in names and token not in OTHERS:
                missing.append(token)
    assert not missing, f"ARCHITECTURE.md names what the code lacks: {sorted(set(missing))}"


def test_the_licence_file_matches_the_package_metadata():
    metadata = (ROOT / "pyproject.toml").read_text()
    declared = re.search(r'^license\s*=\s*(?:\{\s*text\s*=\s*)?"([^"]+)"', metadata, re.M).group(1)
    licence = (ROOT / "LICENSE").read_text()
    assert declared == "MIT" and licence.startswith("MIT License") and "Permission is hereby granted, free of charge" in licence
