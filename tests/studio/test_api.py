"""The studio through its HTTP API (FastAPI TestClient) on a tiny model: uploads, jobs, queue, results, errors."""
from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

import cli
from mtmusicldm.audio import load_audio
from mtmusicldm.diffusion.samplers import SAMPLERS
from studio import app as studio_app
from studio.app import create_app
from tests.studio.conftest import SR
from tests.tiny_models import TINY_SAMPLER

FINAL = ("done", "failed", "cancelled")
LOCAL = "http://127.0.0.1:7860"  # the studio answers only its own host names (studio.guard)


@pytest.fixture(scope="module")
def client(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    app = create_app(model_dir, max_upload_mb=1.0, work_root=tmp_path_factory.mktemp("work"))
    with TestClient(app, base_url=LOCAL) as c:
        yield c
    assert not app.state.root.exists(), "shutdown must remove the studio's temporary folder"


def new_session(c: TestClient) -> str:
    r = c.post("/api/sessions")
    assert r.status_code == 200
    return r.json()["session"]


def put(c: TestClient, sid: str, slot: str, path: Path) -> Any:
    return c.put(f"/api/sessions/{sid}/uploads/{slot}", content=path.read_bytes(), headers={"X-Filename": path.name})


def submit(c: TestClient, sid: str, **body: Any) -> dict[str, Any]:
    r = c.post(f"/api/sessions/{sid}/jobs", json={"steps": 2} | body)
    assert r.status_code == 200, r.text
    return r.json()


def wait(c: TestClient, jid: str, until: Any = lambda s: s["state"] in FINAL, timeout: float = 30.0) -> dict:
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = c.get(f"/api/jobs/{jid}").json()
        seen.append(s)
        if until(s):
            s["seen"] = seen
            return s
        time.sleep(0.02)
    raise AssertionError(f"job {jid} did not get there in {timeout} s; last status {seen[-1]}")


def read_wav(c: TestClient, url: str) -> np.ndarray:
    r = c.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav", (url, r.status_code)
    wav, sr = sf.read(io.BytesIO(r.content), dtype="float32")
    assert sr == SR
    return wav


def test_page_and_info(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "MT-MusicLDM Studio" in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/style.css").status_code == 200
    info = client.get("/api/info").json()
    assert info["stems"] == ["bass", "drums", "guitar", "piano"] and info["conditional"] is False
    assert info["sample_rate"] == SR and info["segment_seconds"] == pytest.approx(0.64)
    assert info["samplers"] == sorted(SAMPLERS)
    assert (info["defaults"]["sampler"], info["defaults"]["steps"]) == (TINY_SAMPLER.name, TINY_SAMPLER.steps)


def test_job_defaults_to_the_models_recommended_sampler(client: TestClient) -> None:
    sid = new_session(client)
    r = client.post(f"/api/sessions/{sid}/jobs", json={"generate": ["piano"]})  # no sampler, no steps
    assert r.status_code == 200, r.text
    assert (r.json()["info"]["sampler"], r.json()["info"]["steps"]) == (TINY_SAMPLER.name, TINY_SAMPLER.steps)
    wait(client, r.json()["id"])


def test_upload_arrange_results(client: TestClient, audio_files: dict[str, Path]) -> None:
    """Two uploads (WAV FLOAT 16 kHz, stereo 44.1 kHz FLAC) -> guitar + piano over 1.5 s (long-form windows)."""
    sid = new_session(client)
    bass = put(client, sid, "bass", audio_files["bass"])
    assert bass.status_code == 200 and bass.json()["samples"] == int(1.5 * SR)
    drums = put(client, sid, "drums", audio_files["drums"]).json()
    assert (drums["source_rate"], drums["source_channels"], drums["seconds"]) == (44100, 2, pytest.approx(1.2))
    job = submit(client, sid, generate=["guitar", "piano"], steps=5, seed=7)
    assert job["info"]["given"] == ["bass", "drums"]
    status = wait(client, job["id"])
    assert status["state"] == "done", status
    assert any(s["state"] == "running" and 0 < s["progress"] < 1 for s in status["seen"])  # progress was shown
    result = status["result"]
    n = int(1.5 * SR)  # the longest given stem; drums are padded with silence
    assert result["samples"] == n and result["windows"] > 1
    assert [(s["name"], s["role"]) for s in result["stems"]] == [
        ("bass", "given"), ("drums", "given"), ("guitar", "generated"), ("piano", "generated")]
    base = f"/api/jobs/{job['id']}"
    tracks = {name: read_wav(client, f"{base}/audio/{name}.wav") for name in ("bass", "drums", "guitar", "piano",
                                                                               "mix")}
    assert all(w.shape == (n,) for w in tracks.values())
    assert np.array_equal(tracks["bass"], sf.read(str(audio_files["bass"]), dtype="float32")[0])  # bit-identical
    drums_16k = load_audio(audio_files["drums"], SR)
    assert np.array_equal(tracks["drums"][:drums_16k.size], drums_16k) and not tracks["drums"][drums_16k.size:].any()
    assert np.abs(tracks["guitar"]).max() > 1e-4 and np.abs(tracks["piano"]).max() > 1e-4
    stems = np.stack([tracks[s] for s in ("bass", "drums", "guitar", "piano")])
    np.testing.assert_allclose(tracks["mix"], np.clip(stems.sum(0), -1, 1), atol=1e-6)
    remix = read_wav(client, f"{base}/remix.wav?stems=bass,piano")
    np.testing.assert_allclose(remix, np.clip(tracks["bass"] + tracks["piano"], -1, 1), atol=1e-6)
    png = client.get(f"{base}/picture/guitar.png")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    z = client.get(f"{base}/stems.zip")
    assert z.status_code == 200 and "attachment" in z.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
        assert sorted(zf.namelist()) == ["bass.wav", "drums.wav", "guitar.wav", "mix.wav", "piano.wav", "settings.json"]
        assert np.array_equal(sf.read(io.BytesIO(zf.read("bass.wav")), dtype="float32")[0], tracks["bass"])
    job_dir = client.app.state.root / "sessions"
    assert len(list(job_dir.glob(f"*/jobs/{job['id']}/*.wav"))) == 5  # files only under the session folder
    assert client.get(f"{base}/audio/flute.wav").status_code == 400


def test_total_generation_and_silent_stems(client: TestClient) -> None:
    sid = new_session(client)
    status = wait(client, submit(client, sid, generate=["bass", "drums", "guitar", "piano"], seconds=0.5)["id"])
    assert status["state"] == "done" and status["result"]["samples"] == 8000 and status["result"]["windows"] == 1
    base = f"/api/jobs/{status['id']}"
    assert all(read_wav(client, f"{base}/audio/{s}.wav").shape == (8000,) for s in ("bass", "mix"))
    # nothing uploaded, only drums generated: the other stems are silent (known silence)
    status = wait(client, submit(client, sid, generate=["drums"])["id"])
    roles = {s["name"]: s["role"] for s in status["result"]["stems"]}
    assert roles == {"bass": "silent", "drums": "generated", "guitar": "silent", "piano": "silent"}
    assert not read_wav(client, f"/api/jobs/{status['id']}/audio/piano.wav").any()


def test_queue_position_and_cancel(client: TestClient) -> None:
    """A long job runs, a second waits at position 1 and is cancelled, a third runs after the first is cancelled."""
    sid = new_session(client)
    slow = submit(client, sid, generate=["piano"], steps=500)
    wait(client, slow["id"], lambda s: s["state"] == "running" and s["progress"] > 0.05)
    queued = submit(client, sid, generate=["bass"])
    assert (queued["state"], queued["queue_position"], queued["queue_length"]) == ("queued", 1, 2)
    third = submit(client, sid, generate=["drums"])
    assert client.get(f"/api/jobs/{third['id']}").json()["queue_position"] == 2
    cancelled = client.post(f"/api/jobs/{queued['id']}/cancel").json()
    assert cancelled["state"] == "cancelled" and cancelled["queue_position"] is None
    assert client.get(f"/api/jobs/{third['id']}").json()["queue_position"] == 1
    assert client.get(f"/api/jobs/{queued['id']}/stems.zip").status_code == 409
    client.post(f"/api/jobs/{slow['id']}/cancel")
    status = wait(client, slow["id"], timeout=10.0)
    assert status["state"] == "cancelled" and status["progress"] < 1.0, status
    assert wait(client, third["id"])["state"] == "done"  # the app goes on


def test_unet_monitor_counts_and_cancels() -> None:
    import torch

    from studio.jobs import Job, JobCancelled, unet_monitor

    job, unet = Job(session="s", work=lambda j: {}), torch.nn.Linear(2, 2)
    with unet_monitor(unet, job, steps=3, windows=2):
        for _ in range(6):
            unet(torch.zeros(1, 2))
        assert job.phase == "sampling: window 2/2, step 3/3" and job.progress == pytest.approx(0.9)
        job.cancel_requested.set()
        with pytest.raises(JobCancelled):
            unet(torch.zeros(1, 2))
    assert not unet._forward_pre_hooks  # the hook is removed afterwards


def test_failed_job_leaves_app_usable(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    sid = new_session(client)

    def boom(*_args: Any) -> dict:
        raise RuntimeError("the vocoder exploded")

    monkeypatch.setattr(studio_app, "run_generation", boom)
    failed = wait(client, submit(client, sid, generate=["piano"])["id"])
    assert failed["state"] == "failed" and "the vocoder exploded" in failed["error"]
    monkeypatch.undo()
    assert wait(client, submit(client, sid, generate=["piano"])["id"])["state"] == "done"


def test_upload_too_large_is_413(client: TestClient) -> None:
    sid = new_session(client)
    big = np.zeros(300_000, dtype=np.float32)  # 1.2 MB as FLOAT WAV > the 1 MB limit
    buf = io.BytesIO()
    sf.write(buf, big, SR, format="WAV", subtype="FLOAT")
    r = client.put(f"/api/sessions/{sid}/uploads/bass", content=buf.getvalue(), headers={"X-Filename": "huge.wav"})
    assert r.status_code == 413 and "too large" in r.json()["detail"] and "1 MB" in r.json()["detail"]
    chunks = (buf.getvalue()[i:i + 65536] for i in range(0, len(buf.getvalue()), 65536))  # no Content-Length
    r = client.put(f"/api/sessions/{sid}/uploads/bass", content=chunks, headers={"X-Filename": "huge.wav"})
    assert r.status_code == 413
    assert client.get(f"/api/sessions/{sid}").json()["uploads"] == []
    assert not list((client.app.state.root / "sessions").glob("*/uploads/incoming-*"))


def test_bad_audio_is_400(client: TestClient, audio_files: dict[str, Path]) -> None:
    sid = new_session(client)
    r = put(client, sid, "bass", audio_files["broken"])
    detail = r.json()["detail"]
    assert r.status_code == 400 and "'broken.wav' is not usable audio" in detail
    assert str(client.app.state.root) not in detail  # no server paths in messages
    r = client.put(f"/api/sessions/{sid}/uploads/bass", content=b"", headers={"X-Filename": "e.wav"})
    assert r.status_code == 400 and "empty" in r.json()["detail"]
    r = put(client, sid, "flute", audio_files["bass"])
    assert r.status_code == 400 and "unknown upload slot" in r.json()["detail"]
    r = put(client, sid, "reference", audio_files["bass"])
    assert r.status_code == 400 and "unconditional" in r.json()["detail"]


@pytest.mark.parametrize(("body", "message"), [
    ({"generate": []}, "at least one stem"),
    ({"generate": ["flute"]}, "unknown stem"),
    ({"generate": ["piano"], "given": ["bass"]}, "not uploaded"),
    ({"generate": ["piano"], "prompt": "jazz"}, "unconditional"),
    ({"generate": ["piano"], "guidance": 2.0}, "conditional model"),
    ({"generate": ["piano"], "sampler": "nope"}, "unknown sampler"),
    ({"generate": ["piano"], "steps": 0}, "steps must be"),
    ({"generate": ["piano"], "steps": 3}, "does not fit"),
    ({"generate": ["piano"], "seconds": 10_000}, "seconds must be"),
    ({"generate": ["piano"], "steps": "many"}, "invalid request: steps"),
])
def test_job_validation(client: TestClient, body: dict, message: str) -> None:
    sid = new_session(client)
    r = client.post(f"/api/sessions/{sid}/jobs", json=body)
    assert r.status_code == 400 and message in r.json()["detail"], r.text


def test_sessions_end_expire_and_404(client: TestClient, audio_files: dict[str, Path]) -> None:
    sessions = client.app.state.sessions
    sid = new_session(client)
    put(client, sid, "bass", audio_files["bass"])
    folder = sessions.get(sid).dir
    assert any(folder.rglob("*.npy"))
    assert client.post(f"/api/sessions/{sid}/end").status_code == 204 and not folder.exists()
    assert client.post(f"/api/sessions/{sid}/jobs", json={"generate": ["piano"]}).status_code == 404
    assert client.get("/api/jobs/" + "0" * 32).status_code == 404
    idle = new_session(client)
    folder = sessions.get(idle).dir
    sessions.get(idle).last_seen -= sessions.ttl_s + 1
    assert idle in sessions.sweep() and not folder.exists()


def test_stale_studio_folders_are_removed_at_start(model_dir: Path, tmp_path: Path) -> None:
    import os

    dead, alive, fresh = (tmp_path / f"mtmusicldm-studio-{k}" for k in ("dead", "alive", "fresh"))
    for d in (dead, alive, fresh):
        d.mkdir()
    (alive / "pid").write_text(str(os.getpid()))
    for d in (dead, alive):
        os.utime(d, (time.time() - 7 * 3600,) * 2)
    app = create_app(model_dir, work_root=tmp_path)
    assert not dead.exists() and alive.exists() and fresh.exists() and app.state.root.parent == tmp_path


def test_conditional_model_validation(tmp_path: Path, audio_files: dict[str, Path]) -> None:
    from tests.tiny_models import make_model_dir

    app = create_app(make_model_dir(tmp_path / "m", film_dim=32), work_root=tmp_path / "work")
    with TestClient(app, base_url=LOCAL) as c:
        assert c.get("/api/info").json()["conditional"] is True
        sid = new_session(c)
        assert put(c, sid, "reference", audio_files["drums"]).status_code == 200
        r = c.post(f"/api/sessions/{sid}/jobs", json={"generate": ["piano"], "prompt": "x", "use_reference": True})
        assert r.status_code == 400 and "not both" in r.json()["detail"]
        r = c.post(f"/api/sessions/{sid}/jobs", json={"generate": ["piano"], "guidance": 3.0})
        assert r.status_code == 400 and "nothing to guide to" in r.json()["detail"]
    assert not any((tmp_path / "work").iterdir())


def test_cli_studio(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw | {"app": app}))
    cli.main(["studio", "--model", str(model_dir), "--work-root", str(tmp_path)])
    assert calls[0]["host"] == "127.0.0.1" and calls[0]["port"] == 7860
    assert calls[0]["app"].state.root.parent == tmp_path
    with pytest.raises(SystemExit, match="model directory .*nowhere does not exist"):
        cli.main(["studio", "--model", str(tmp_path / "nowhere")])
