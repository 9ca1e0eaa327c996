"""`download` stage against a loopback HTTP server: a cut connection resumes with HTTP Range, md5 is checked,
and nothing is extracted from a bad archive."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline import download
from tests.pipeline.conftest import tiny_params

LAYOUT = "babyslakh_16k"


def _archive() -> bytes:
    """A small .tar.gz in BabySlakh's layout (incompressible content, so a cut lands mid-file)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, size in (("Track00001/metadata.yaml", 300), ("Track00001/stems/S00.wav", 200_000)):
            data = hashlib.sha256(name.encode()).digest() * (size // 32)
            info = tarfile.TarInfo(f"{LAYOUT}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class Server:
    """What the loopback server sends, and the Range headers it was asked for."""

    body: bytes
    cut_first: bool = False  # first response: full Content-Length, half the body, then the connection closes
    ranges: list[str | None] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(_archive())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            rng = self.headers.get("Range")
            state.ranges.append(rng)
            start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
            body = state.body[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(state.body) - 1}/{len(state.body)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.cut_first and len(state.ranges) == 1:
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
                return
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/{LAYOUT}.tar.gz"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def _run(server: Server, out: Path, monkeypatch: pytest.MonkeyPatch, md5: str) -> dict:
    monkeypatch.setenv("MTMUSICLDM_NO_PROGRESS", "1")
    monkeypatch.setitem(download.ARCHIVES, "babyslakh", download.Archive(server.url, md5, "tiny", LAYOUT))
    p = tiny_params()
    return download.run(p.data.replace(source="babyslakh", local_root=None), p.synthetic, out)


def test_cut_connection_resumes_with_range(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.cut_first = True
    md5 = hashlib.md5(server.body).hexdigest()
    part = tmp_path / "raw" / "downloads" / f"{LAYOUT}.tar.gz.part"
    with pytest.raises(download.DownloadError, match="interrupted after .* bytes .*rerun to resume"):
        _run(server, tmp_path / "raw", monkeypatch, md5)
    half = part.stat().st_size
    assert 0 < half < len(server.body) and part.read_bytes() == server.body[:half]
    assert not (tmp_path / "raw" / LAYOUT).exists() and not (tmp_path / "raw" / "source.json").exists()

    info = _run(server, tmp_path / "raw", monkeypatch, md5)
    assert server.ranges == [None, f"bytes={half}-"]  # the rerun asked only for the rest
    assert not part.exists() and (tmp_path / "raw" / "downloads" / f"{LAYOUT}.tar.gz").read_bytes() == server.body
    stem = tmp_path / "raw" / LAYOUT / "Track00001" / "stems" / "S00.wav"
    assert stem.stat().st_size == 200_000 - 200_000 % 32
    assert info["md5"] == md5 and json.loads((tmp_path / "raw" / "source.json").read_text())["root"] == LAYOUT
    assert not list((tmp_path / "raw").glob(".*"))  # no temporary extraction folder left


def test_md5_mismatch_is_a_clear_error_and_extracts_nothing(server: Server, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(download.DownloadError, match=rf"{LAYOUT}.tar.gz: md5 [0-9a-f]{{32}} != expected 0{{32}}; "
                                                     "the partial file was removed, rerun to retry"):
        _run(server, tmp_path / "raw", monkeypatch, "0" * 32)
    assert sorted(p.name for p in (tmp_path / "raw").rglob("*")) == ["downloads"]  # nothing kept, nothing extracted


def test_stage_reports_a_download_error_in_one_line(server: Server, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    monkeypatch.setenv("MTMUSICLDM_NO_PROGRESS", "1")
    monkeypatch.setitem(download.ARCHIVES, "babyslakh", download.Archive(server.url, "0" * 32, "tiny", LAYOUT))
    params = tmp_path / "params.yaml"
    raw = yaml.safe_load((Path(download.__file__).parents[1] / "profiles" / "embedded.yaml").read_text())
    raw["data"].update(source="babyslakh", local_root=None)
    params.write_text(yaml.safe_dump(raw))
    with pytest.raises(SystemExit, match=r"^download: .*md5 .* != expected 0{32}"):
        download.main(["--params", str(params), "--out", str(tmp_path / "raw")])
