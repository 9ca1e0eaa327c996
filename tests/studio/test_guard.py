"""The studio answers only its own origin (Host check, same-origin writes) and bounds the work it accepts."""
from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from studio.app import create_app
from studio.guard import allowed_hosts
from studio.media import UploadTooLong, decode_upload
from tests.studio.conftest import SR, bass_line

LOCAL = "http://127.0.0.1:7860"


@pytest.fixture(scope="module")
def client(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    app = create_app(model_dir, max_audio_seconds=1.0, max_job_calls=10,
                     hosts=allowed_hosts("127.0.0.1", ["studio.lan"]), work_root=tmp_path_factory.mktemp("guard-work"))
    with TestClient(app, base_url=LOCAL) as c:
        yield c


def _sessions(c: TestClient) -> int:
    return len(list((c.app.state.root / "sessions").glob("*")))


@pytest.mark.parametrize("host", ["127.0.0.1:7860", "localhost:7860", "[::1]:7860", "studio.lan"])
def test_own_host_names_are_answered(client: TestClient, host: str) -> None:
    assert client.get("/api/info", headers={"Host": host}).status_code == 200
    assert client.post("/api/sessions", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:7860", "127.0.0.1.attacker.example",
                                  "studio.lan.attacker.example"])
def test_other_hosts_are_refused_dns_rebinding(client: TestClient, host: str) -> None:
    before = _sessions(client)
    assert client.get("/api/info", headers={"Host": host}).status_code == 400
    assert client.post("/api/sessions", headers={"Host": host}).status_code == 400
    assert client.get("/", headers={"Host": host}).status_code == 400
    assert _sessions(client) == before  # no session was created


@pytest.mark.parametrize("headers", [{"Origin": "http://attacker.example"}, {"Origin": "http://127.0.0.1:8000"},
                                     {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}])
def test_cross_origin_writes_are_refused(client: TestClient, headers: dict[str, str]) -> None:
    before = _sessions(client)
    r = client.post("/api/sessions", headers=headers)
    assert r.status_code == 403 and "cross-origin request refused" in r.json()["detail"]
    assert _sessions(client) == before
    sid = client.post("/api/sessions").json()["session"]
    assert client.put(f"/api/sessions/{sid}/uploads/bass", content=b"x", headers=headers).status_code == 403
    assert client.post(f"/api/sessions/{sid}/jobs", json={"generate": ["piano"]}, headers=headers).status_code == 403
    assert client.get("/api/info", headers=headers).status_code == 200  # reads: the browser keeps them from the page


def test_same_origin_writes_pass(client: TestClient) -> None:
    r = client.post("/api/sessions", headers={"Origin": LOCAL, "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200


def _wav(seconds: float) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, bass_line(seconds), SR, format="FLAC")
    return buf.getvalue()


def test_long_upload_refused_from_the_header_before_decoding(client: TestClient,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import mtmusicldm.audio

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded a file whose header says it is too long")

    sid = client.post("/api/sessions").json()["session"]
    monkeypatch.setattr(mtmusicldm.audio, "load_audio", no_decoding)
    r = client.put(f"/api/sessions/{sid}/uploads/bass", content=_wav(1.5), headers={"X-Filename": "long.flac"})
    detail = r.json()["detail"]
    assert r.status_code == 413 and "'long.flac' is longer than the 1 s the studio accepts (1.5 s)" in detail
    monkeypatch.undo()
    assert client.put(f"/api/sessions/{sid}/uploads/bass", content=_wav(0.9)).status_code == 200


def test_header_that_understates_the_length_cannot_decode_more(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mtmusicldm.audio as audio

    path = tmp_path / "liar.flac"
    path.write_bytes(_wav(3.0))
    real_info = audio.audio_info
    monkeypatch.setattr(audio, "audio_info", lambda p: real_info(p).__class__(
        **{**real_info(p).__dict__, "duration_s": 0.5}))
    decoded: list[float] = []
    real_load = audio.load_audio
    monkeypatch.setattr(audio, "load_audio", lambda *a, **k: decoded.append(k["duration_s"]) or real_load(*a, **k))
    with pytest.raises(UploadTooLong, match="header understates"):
        decode_upload(path, "liar.flac", SR, max_seconds=1.0)
    assert decoded == [2.0]  # decoding stopped at the limit plus a second, not at the real 3 s


def test_work_per_job_is_capped(client: TestClient) -> None:
    sid = client.post("/api/sessions").json()["session"]
    r = client.post(f"/api/sessions/{sid}/jobs", json={"generate": ["piano"], "steps": 20})
    assert r.status_code == 400 and "needs 20 UNet evaluations (1 windows x 20 steps)" in r.json()["detail"]
    r = client.post(f"/api/sessions/{sid}/jobs", json={"generate": ["piano"], "seconds": 1.0, "steps": 4})
    assert r.status_code == 400 and "windows x 4 steps" in r.json()["detail"]
    r = client.post(f"/api/sessions/{sid}/jobs", json={"generate": ["piano"], "seconds": 2.0, "steps": 2})
    assert r.status_code == 400 and "seconds must be between 0.1 and 1" in r.json()["detail"]
    info = client.get("/api/info").json()
    assert (info["max_seconds"], info["max_job_calls"]) == (1.0, 10)


def test_allowed_hosts() -> None:
    assert allowed_hosts("0.0.0.0", ["Studio.LAN"]) == ["127.0.0.1", "localhost", "[::1]", "0.0.0.0", "studio.lan"]
    assert allowed_hosts("::1") == ["127.0.0.1", "localhost", "[::1]"]
