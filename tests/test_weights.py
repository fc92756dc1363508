"""The weights registry, cache and downloads (models/weights.py).

Downloads go to an HTTP server on 127.0.0.1 started by the test (a free port, shut down after);
FACEZOOM_HOME points at a temporary folder; nothing here touches another host.
"""

import dataclasses
import hashlib
import http.server
import pickle
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from models import weights
from models.errors import ModelError
from models.registry import FRAME_MODELS
from models.generators import LAYOUTS, config_for, load_generator, published_state
from models.networks.stylegan2 import StyleGAN2Config, StyleGAN2Generator

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEZOOM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FACEZOOM_OFFLINE", raising=False)
    monkeypatch.setattr(weights, "RETRY_DELAYS", (0.0, 0.0))


class Server:
    """Serves files from a folder on 127.0.0.1; `fail_first` requests answer `fail_status`."""

    def __init__(self, root: Path, fail_first: int = 0, fail_status: int = 503):
        self.requests, self.fail_first = [], fail_first
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):
                server.requests.append(self.path)
                if len(server.requests) <= server.fail_first:
                    self.send_error(fail_status)
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def tiny_checkpoint(folder: Path) -> tuple[Path, str]:
    torch.manual_seed(0)
    g = StyleGAN2Generator(StyleGAN2Config.basicsr(32, narrow=1 / 32, w_dim=16, num_mlp=2))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny_stylegan2.pth"
    torch.save(published_state(g), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def register(monkeypatch, url: str, sha256: str | None, name: str = "tiny") -> weights.WeightsEntry:
    entry = dataclasses.replace(
        weights.REGISTRY[weights.DEFAULT], name=name, url=url, filename=f"{name}.pth", sha256=sha256,
        arch=(("resolution", 32), ("narrow", 1 / 32), ("w_dim", 16), ("num_mlp", 2)),
    )
    monkeypatch.setitem(weights.REGISTRY, name, entry)
    return entry


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.glob("*.part")] if folder.exists() else []


def test_registry_entries_are_complete():
    assert weights.DEFAULT == "stylegan2-ffhq-512" and weights.DEFAULT in weights.REGISTRY
    for name, e in weights.REGISTRY.items():
        assert e.name == name and e.url.startswith("https://") and e.filename and e.source and e.converter
        assert e.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", e.sha256)  # None: not published, never invented
        frame_model = name in {f.name for f in FRAME_MODELS}  # Real-ESRGAN's upscalers: BSD-3-Clause, not face data
        assert "non-commercial" in e.licence or frame_model  # every face model here was trained on FFHQ, CelebA or DigiFace-1M
        assert "drive.google.com" not in e.url or e.manual_only  # Drive's quota pages: placed by hand, never scripted
        assert e.git_blob is None or re.fullmatch(r"[0-9a-f]{40}", e.git_blob)
    generators = {n: e for n, e in weights.REGISTRY.items() if e.layout in LAYOUTS}
    resolution = {"stylegan2-ffhq-512": 512, "stylegan1-ffhq-1024": 1024, "pulse-stylegan1-ffhq-1024": 1024, "dcgan-digiface-64": 64}
    assert set(generators) == set(resolution)
    for name, e in generators.items():
        assert config_for(e.layout, dict(e.arch)).resolution == resolution[name]
    for name in ("stylegan2-ffhq-512", "stylegan1-ffhq-1024"):
        e = weights.REGISTRY[name]
        assert e.url.startswith("https://github.com/") and e.url.endswith("/" + e.filename)  # release assets, not Drive
    pfsr = {n: e for n, e in weights.REGISTRY.items() if e.layout == "pfsr"}
    assert set(pfsr) == {"pfsr-celeba", "pfsr-celeba-ddp", "pfsr-celeba-unaligned"}
    for e in pfsr.values():  # committed to the repository: the raw file, checked by its published git blob id
        assert e.url == weights.PFSR_RAW + e.filename and e.git_blob and not e.manual_only
    prior = weights.REGISTRY["dcgan-digiface-64"]
    assert prior.package == "gan_face_generate/weights.tar" and prior.sha256 == "0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f"
    assert "MIT" in prior.licence and "DigiFace" in prior.licence


def test_cache_dir_follows_facezoom_home(tmp_path, monkeypatch):
    assert weights.cache_dir() == tmp_path / "home"
    assert weights.path_for(weights.DEFAULT) == tmp_path / "home" / "weights" / "StyleGAN2_512_Cmul1_FFHQ_B12G4_scratch_800k.pth"
    monkeypatch.delenv("FACEZOOM_HOME")
    assert weights.cache_dir() == Path.home() / ".cache" / "facezoom"


def test_a_cache_that_cannot_be_written_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    """FACEZOOM_HOME a file, or a folder where the download goes: exit 2 and one line, before any download."""
    from pipeline.commands.cli import main

    (tmp_path / "home").write_text("not a folder")
    assert main(["-q", "weights", "fetch", weights.DEFAULT]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("facezoom: error: cannot make the model cache folder") and "FACEZOOM_HOME" in err, err
    (tmp_path / "home").unlink()
    weights.path_for(weights.DEFAULT).mkdir(parents=True)
    assert main(["-q", "weights", "fetch", weights.DEFAULT]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a folder; move it away" in err and len(err.splitlines()) == 1, err
    weights.path_for(weights.DEFAULT).rmdir()

    def refused(target):  # a cache folder that exists but takes no new file (chmod 555 for a user, chattr +i for root)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(weights, "open_part", refused)
    assert main(["-q", "weights", "fetch", weights.DEFAULT]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("facezoom: error: cannot write into the model cache folder") and "Permission denied" in err, err


def test_fetch_verifies_and_loads_strictly(tmp_path, monkeypatch):
    path, digest = tiny_checkpoint(tmp_path / "site")
    with Server(tmp_path / "site") as server:
        entry = register(monkeypatch, f"{server.url}/{path.name}", digest)
        got = weights.fetch("tiny", progress=False)
        assert weights.fetch("tiny", progress=False) == got  # cached: no second download
        assert server.requests == [f"/{path.name}"]
    assert got == weights.path_for("tiny") and got.read_bytes() == path.read_bytes()
    assert leftovers(got.parent) == []
    assert [r.status for r in weights.verify() if r.name == "tiny"] == ["ok"]
    generator = load_generator(weights.resolve("tiny"), layout=entry.layout, arch=dict(entry.arch))
    assert generator.resolution == 32


def test_wrong_hash_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    path, digest = tiny_checkpoint(tmp_path / "site")
    with Server(tmp_path / "site") as server:
        register(monkeypatch, f"{server.url}/{path.name}", "0" * 64)
        with pytest.raises(ModelError, match=f"SHA-256 {digest}, the registry expects {'0' * 64}"):
            weights.fetch("tiny", progress=False)
        assert len(server.requests) == 1  # a wrong file is not retried
    target = weights.path_for("tiny")
    assert not target.exists() and leftovers(target.parent) == []


def test_server_errors_are_retried(tmp_path, monkeypatch):
    path, digest = tiny_checkpoint(tmp_path / "site")
    with Server(tmp_path / "site", fail_first=2) as server:
        register(monkeypatch, f"{server.url}/{path.name}", digest)
        assert weights.fetch("tiny", progress=False).is_file()
        assert len(server.requests) == 3


def test_missing_file_is_not_retried(tmp_path, monkeypatch):
    (tmp_path / "site").mkdir()
    with Server(tmp_path / "site") as server:
        register(monkeypatch, f"{server.url}/absent.pth", None)
        with pytest.raises(ModelError, match="HTTP 404"):
            weights.fetch("tiny", progress=False)
        assert len(server.requests) == 1


def test_offline_says_where_to_put_the_file(tmp_path, monkeypatch):
    with Server(tmp_path) as server:
        url = f"{server.url}/StyleGAN2_512_Cmul1_FFHQ_B12G4_scratch_800k.pth"
    register(monkeypatch, url, None)  # the port is closed now: connection refused, three times
    with pytest.raises(ModelError) as err:
        weights.fetch("tiny", progress=False)
    message = str(err.value)
    assert url in message and str(weights.path_for("tiny")) in message and "tried 3 times" in message
    monkeypatch.setenv("FACEZOOM_OFFLINE", "1")
    with pytest.raises(ModelError, match="FACEZOOM_OFFLINE") as err:
        weights.resolve(None)  # the default entry; no connection is attempted
    assert weights.REGISTRY[weights.DEFAULT].url in str(err.value)
    assert str(weights.path_for(weights.DEFAULT)) in str(err.value)


def test_every_load_from_cache_checks_the_hash(tmp_path, monkeypatch):
    path, digest = tiny_checkpoint(tmp_path / "site")
    with Server(tmp_path / "site") as server:
        register(monkeypatch, f"{server.url}/{path.name}", digest, name="published")
        register(monkeypatch, f"{server.url}/{path.name}", None, name="unpublished")
        cached = [weights.fetch(n, progress=False) for n in ("published", "unpublished")]
    mine = ("published", "unpublished")
    assert [r.status for r in weights.verify() if r.name in mine] == ["ok", "recorded"]
    for name, file in zip(("published", "unpublished"), cached):
        with open(file, "r+b") as f:  # corrupt one byte in place
            f.seek(100)
            byte = f.read(1)
            f.seek(100)
            f.write(bytes([byte[0] ^ 0xFF]))
        with pytest.raises(ModelError, match=f"delete it and run `facezoom weights fetch {name}`"):
            weights.resolve(name)
    assert [r.status for r in weights.verify() if r.name in mine] == ["mismatch", "mismatch"]


def test_hand_placed_file_without_published_hash_is_recorded(tmp_path, monkeypatch):
    path, _ = tiny_checkpoint(tmp_path / "site")
    register(monkeypatch, "https://example.invalid/tiny_stylegan2.pth", None)
    target = weights.path_for("tiny")
    target.parent.mkdir(parents=True)
    target.write_bytes(path.read_bytes())
    assert weights.resolve("tiny") == target  # no download attempted: the file is there
    report = weights.verify("tiny")[0]
    assert report.status == "recorded" and report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert weights.verify("stylegan1-ffhq-1024")[0].status == "missing"


def test_resolve_local_paths_and_unknown_names(tmp_path):
    path, _ = tiny_checkpoint(tmp_path)
    assert weights.resolve(str(path)) == path
    with pytest.raises(ModelError, match="stylegan2-ffhq-512, stylegan1-ffhq-1024"):
        weights.resolve("stylegan3-ffhq")
    with pytest.raises(ModelError, match="unknown weights"):
        weights.path_for("nope")


def test_load_checkpoint_is_weights_only(tmp_path):
    path, marker = tmp_path / "evil.pt", tmp_path / "code-ran"
    torch.save({"x": torch.zeros(1), "payload": Payload(marker)}, path)
    with pytest.raises(ModelError, match="pickles test_weights.touch, which facezoom does not unpickle"):
        weights.load_checkpoint(path)
    assert not marker.exists()
    import os

    class System:  # a builtin module's function: torch words this refusal differently
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"x": System()}, path)
    with pytest.raises(ModelError, match=r"pickles (posix|nt)\.system, which facezoom does not unpickle"):
        weights.load_checkpoint(path)
    assert not marker.exists()
    for protocol in (2, 4, 5):  # a plain pickle, as pickle.dump writes it: torch reads no protocol 4 or 5 at all
        path.write_bytes(pickle.dumps({"x": System()}, protocol=protocol))
        with pytest.raises(ModelError, match=r"pickles (posix|nt)\.system, which facezoom does not unpickle"):
            weights.load_checkpoint(path)
    assert not marker.exists()
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a PyTorch weights file"):
        weights.load_checkpoint(path)


@pytest.mark.parametrize("text", [b"hello, this is a README", b"a b c", b"(1, 2)", b"]", b"\x8d\x00\x00\x00\xff\xff", b"\x96garbage"])
def test_any_file_that_is_not_a_checkpoint_is_named_in_one_line(tmp_path, text):
    # Pickle's opcodes are bytes: text read as a pickle failed with KeyError, IndexError or MemoryError.
    path = tmp_path / "model.pt"
    path.write_bytes(text)
    with pytest.raises(ModelError, match=r"could not read checkpoint .*model\.pt") as err:
        weights.load_checkpoint(path)
    assert "\n" not in str(err.value)


class Payload:
    """Unpickling it would write a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return touch, (str(self.marker),)


def touch(path: str) -> None:
    Path(path).write_text("ran")


def test_importing_touches_no_network():
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise AssertionError('network used at import')\n"
        "socket.socket.connect = refuse; socket.socket.connect_ex = refuse\n"
        "socket.create_connection = refuse; socket.getaddrinfo = refuse\n"
        "import models.weights, models.generators, models.search, models.backends.pulse, models.backends.ffsr, models.networks.stylegan1, models.networks.stylegan2, models.downscale\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


def test_a_checkpoint_with_a_damaged_byte_is_refused_not_loaded_as_other_weights(tmp_path):
    # torch's zip reader ignores the CRCs: a flipped byte in the weights loaded as a different number.
    path = tmp_path / "model.pt"
    torch.save({"w": torch.arange(4096, dtype=torch.float32)}, path)
    assert torch.equal(weights.load_checkpoint(path)["w"], torch.arange(4096, dtype=torch.float32))
    data = bytearray(path.read_bytes())
    data[data.index(torch.arange(4096, dtype=torch.float32).numpy().tobytes()[400:408]) + 3] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"model\.pt is damaged \(.*data/0 fails its CRC check\)"):
        weights.load_checkpoint(path)
    # damage in the zip's structure: an entry's DOS folder bit (torch then read the tensor as zeros), a
    # name's length in its directory record, and in a local header (torch read from a shifted offset)
    torch.save({"w": torch.arange(4096, dtype=torch.float32)}, path)
    good = path.read_bytes()
    central = good.rindex(b"PK\x01\x02")  # the last entry's record in the zip's directory
    for offset, bits, why in [(central + 38, 0x10, r"is damaged \(.*reads as a folder"), (central + 28, 0xFF, "damaged|could not read"),
                              (good.index(b"PK\x03\x04", 100) + 26, 0x85, "damaged|could not read")]:
        damaged = bytearray(good)
        damaged[offset] ^= bits
        path.write_bytes(bytes(damaged))
        with pytest.raises(ModelError, match=why) as err:
            weights.load_checkpoint(path)
        assert "\n" not in str(err.value)
