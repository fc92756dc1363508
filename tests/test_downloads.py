"""What a download of an entry with no published hash keeps, and what a killed or stalled one leaves (models/download.py).

Bodies come from an HTTP server on 127.0.0.1 started by the test, each path one way a host can
answer badly: an HTML page, a body cut short with no length sent, a stall after some bytes.
"""

import http.server
import threading
from pathlib import Path

import pytest
import torch

from models import download, weights
from models.errors import ModelError
from pipeline.commands.cli import main
from test_weights import Server, leftovers, register, tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")
HTML = b"<!DOCTYPE html><html><body>Quota exceeded</body></html>"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEZOOM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FACEZOOM_OFFLINE", raising=False)
    monkeypatch.setattr(weights, "RETRY_DELAYS", (0.0, 0.0))


class BadHost:
    """/html: a quota page sent as text/html; /page: the same page as a binary; /nolen/NAME: the first half
    of site/NAME with no Content-Length; /stall: a length, 1000 bytes, then nothing until the test ends."""

    def __init__(self, site: Path):
        self.release, self.requests = threading.Event(), []
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                host.requests.append(self.path)
                mode, _, name = self.path.strip("/").partition("/")
                if mode in ("html", "page"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html" if mode == "html" else "application/octet-stream")
                    self.send_header("Content-Length", str(len(HTML)))
                    self.end_headers()
                    self.wfile.write(HTML)
                elif mode == "nolen":
                    data = (site / name).read_bytes()
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.close_connection = True
                elif mode == "stall":
                    self.send_response(200)
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    self.wfile.write(b"\x80" * 1000)
                    self.wfile.flush()
                    host.release.wait(30)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def legacy_checkpoint(folder: Path) -> Path:
    """The tiny checkpoint in torch's older (pickle, not zip) format, as some published files are."""
    path, _ = tiny_checkpoint(folder)
    legacy = folder / "legacy.pth"
    torch.save(torch.load(path, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    assert legacy.read_bytes()[:1] == b"\x80"
    return legacy


@pytest.mark.parametrize("path, message, tries", [
    ("html", "an HTML page (Content-Type text/html)", 1),
    ("page", "it starts with b'<!DOCTYPE html><' (an HTML page", 1),
    ("nolen/tiny_stylegan2.pth", "do not load as a PyTorch checkpoint (cut short", 3),
    ("nolen/legacy.pth", "do not load as a PyTorch checkpoint (cut short", 3),
])
def test_a_page_or_a_cut_body_is_not_kept_for_an_entry_with_no_published_hash(tmp_path, monkeypatch, path, message, tries):
    legacy_checkpoint(tmp_path / "site")
    with BadHost(tmp_path / "site") as host:
        register(monkeypatch, f"{host.url}/{path}", None)
        with pytest.raises(ModelError) as err:
            weights.fetch("tiny", progress=False)
        assert len(host.requests) == tries  # a page is final; a cut body may come whole next time
    assert message in str(err.value) and str(err.value).count("\n") == 0
    assert ("nothing was kept" in str(err.value)) == (tries == 1)
    target = weights.path_for("tiny")
    assert not target.exists() and not target.with_name(target.name + ".sha256").exists() and leftovers(target.parent) == []


def test_the_file_types_a_name_allows(tmp_path):
    zipped, _ = tiny_checkpoint(tmp_path)
    assert download.load_problem(zipped) is None and download.load_problem(legacy_checkpoint(tmp_path)) is None
    assert "a PyTorch zip file, but its name ends in .safetensors" in download.head_problem(zipped, named=Path("m.safetensors"))
    from safetensors.torch import save_file

    tensors = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(4, 4)}, str(tensors))
    assert download.load_problem(tensors) is None
    assert "safetensors file, but its name ends in .pth" in download.head_problem(tensors, named=Path("m.pth"))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(tensors.read_bytes()[:-8])
    assert "cut short" in download.load_problem(cut)


def test_fetch_again_replaces_a_cached_page_or_a_changed_file(tmp_path, monkeypatch, capsys):
    """What an older facezoom kept (a page, its SHA-256 recorded), and a file changed since it arrived."""
    path, _ = tiny_checkpoint(tmp_path / "site")
    with BadHost(tmp_path / "site") as bad:
        register(monkeypatch, f"{bad.url}/html", None)
        target = weights.path_for("tiny")
        target.parent.mkdir(parents=True)
        target.write_bytes(HTML)
        target.with_name(target.name + ".sha256").write_text(f"{weights.sha256_file(target)}  {target.name}\n")
        report = weights.verify("tiny")[0]
        assert report.status == "mismatch" and "an HTML page" in report.detail
        with pytest.raises(ModelError, match="is not a checkpoint") as err:
            weights.resolve("tiny")  # a run: one line, not the loader's complaint later
        assert main(["--quiet", "weights", "fetch", "tiny"]) == 2  # the host still sends the page: say what to delete
        assert f"first delete the damaged {target.name}" in capsys.readouterr().err and target.read_bytes() == HTML
    with Server(tmp_path / "site") as server:
        register(monkeypatch, f"{server.url}/{path.name}", None)
        assert main(["--quiet", "weights", "fetch", "tiny"]) == 0
        assert target.read_bytes() == path.read_bytes() and weights.verify("tiny")[0].status == "recorded"
        with open(target, "r+b") as f:  # changed since it arrived
            f.seek(200)
            f.write(b"\0\0\0\0")
        assert main(["--quiet", "weights", "fetch", "tiny"]) == 0
        assert main(["--quiet", "weights", "fetch", "tiny"]) == 0  # intact now: nothing downloaded
        assert len(server.requests) == 2
    assert target.read_bytes() == path.read_bytes() and str(err.value).count("\n") == 0


def test_a_killed_downloads_part_file_goes_at_the_next_fetch_and_a_live_ones_stays(tmp_path, monkeypatch):
    path, digest = tiny_checkpoint(tmp_path / "site")
    register(monkeypatch, "http://127.0.0.1:9/unused", digest)
    target = weights.path_for("tiny")
    target.parent.mkdir(parents=True)
    killed = target.with_name(target.name + ".k1ll3d00.part")
    killed.write_bytes(b"\x80" * 100)  # what `kill -9` left: nobody holds it
    live, out = download.open_part(target)  # another download, still writing
    try:
        with Server(tmp_path / "site") as server:
            register(monkeypatch, f"{server.url}/{path.name}", digest)
            weights.fetch("tiny", progress=False)
        assert not killed.exists() and live.exists()
    finally:
        out.close()
        live.unlink()


def test_a_stalled_download_says_how_many_bytes_arrived(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "TIMEOUT", 0.5)
    with BadHost(tmp_path) as host:
        register(monkeypatch, f"{host.url}/stall", None)
        with pytest.raises(ModelError, match=r"connection lost after 1000 bytes .*tried 3 times"):
            weights.fetch("tiny", progress=False)
    assert leftovers(weights.path_for("tiny").parent) == []
