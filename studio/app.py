"""The studio's FastAPI app: sessions, uploads, generation jobs, results (audio, pictures, remix, zip).

HTTP API (JSON unless said otherwise; every error is ``{"detail": "<text>"}`` with a 4xx status):

Only the studio's own origin is served (:mod:`studio.guard`: Host check, same-origin writes). Work is bounded:
uploads by size (``max_upload_mb``) and decoded length (``max_audio_seconds``, refused from the header before
decoding), jobs by length and by UNet evaluations (``max_job_calls`` = windows x steps).

* ``GET /`` the page (``studio/static``); ``GET /api/info`` model facts, samplers, defaults and limits.
* ``POST /api/sessions`` -> ``{"session": id}``; ``POST /api/sessions/{sid}/end`` (or ``DELETE``) removes the
  session's folder and cancels its jobs; idle sessions go after ``session_ttl_hours``, all at shutdown.
* ``PUT /api/sessions/{sid}/uploads/{slot}``: raw file bytes (any format / rate / channels; name in the
  ``X-Filename`` header), slot = a stem or ``reference``; decoded at once to 16 kHz mono (400 for bad audio,
  413 beyond ``max_upload_mb``). ``DELETE`` the same URL forgets it.
* ``POST /api/sessions/{sid}/jobs`` :class:`JobBody` -> a job status; ``GET /api/jobs/{jid}`` its status (state,
  phase, progress, queue position, error, result); ``POST /api/jobs/{jid}/cancel``.
* Results: ``/api/jobs/{jid}/audio/{name}.wav`` (a stem or ``mix``), ``/picture/{name}.png`` (waveform +
  spectrogram, drawn on first request), ``/remix.wav?stems=a,b`` (mix of some stems), ``/stems.zip``.
"""
from __future__ import annotations

import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware

from studio.guard import SameOriginWrites, allowed_hosts
from studio.jobs import GenerationRequest, Job, JobQueue, job_size, run_generation
from studio.media import STEM_COLOURS, UploadError, UploadTooLong, decode_upload, draw_picture, remix_wav, safe_suffix

log = logging.getLogger("studio")
STATIC = Path(__file__).parent / "static"
WORK_PREFIX = "mtmusicldm-studio-"
ID_RE = re.compile(r"^[0-9a-f]{32}$")
REFERENCE = "reference"
MAX_STEPS, MAX_SEED = 1000, 2**32 - 1


@dataclass
class Upload:
    """A decoded upload: ``path`` is the ``.npy`` of 16 kHz mono float32 samples."""

    slot: str
    filename: str
    path: Path
    samples: int
    seconds: float
    source: dict[str, Any]

    def public(self) -> dict[str, Any]:
        return {"slot": self.slot, "filename": self.filename, "samples": self.samples,
                "seconds": round(self.seconds, 3)} | self.source


@dataclass
class Session:
    """One browser session: its folder (uploads/, jobs/<id>/) and its uploads by slot."""

    id: str
    dir: Path
    uploads: dict[str, Upload] = field(default_factory=dict)
    last_seen: float = field(default_factory=time.time)


class Sessions:
    """Sessions under one root folder; :meth:`sweep` removes the idle ones, :meth:`close` all of them."""

    def __init__(self, root: Path, ttl_s: float, queue: JobQueue) -> None:
        self.root, self.ttl_s, self.queue = root, ttl_s, queue
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self) -> Session:
        session = Session(uuid.uuid4().hex, self.root / "sessions" / uuid.uuid4().hex)
        (session.dir / "uploads").mkdir(parents=True)
        (session.dir / "jobs").mkdir()
        with self._lock:
            self._sessions[session.id] = session
        return session

    def get(self, sid: str) -> Session:
        with self._lock:
            session = self._sessions.get(sid) if ID_RE.match(sid) else None
        if session is None:
            raise HTTPException(404, "unknown or expired session: reload the page to start a new one")
        session.last_seen = time.time()
        return session

    def end(self, sid: str) -> bool:
        """Cancel the session's jobs and remove its folder; False if there was no such session."""
        with self._lock:
            session = self._sessions.pop(sid, None)
        if session is None:
            return False
        self.queue.forget_session(sid)
        shutil.rmtree(session.dir, ignore_errors=True)
        return True

    def sweep(self) -> list[str]:
        """End the sessions idle for longer than the TTL and without a queued or running job."""
        busy, now = self.queue.busy_sessions(), time.time()
        with self._lock:
            stale = [s.id for s in self._sessions.values() if now - s.last_seen > self.ttl_s and s.id not in busy]
        for sid in stale:
            self.end(sid)
        return stale

    def close(self) -> None:
        with self._lock:
            ids = list(self._sessions)
        for sid in ids:
            self.end(sid)


class JobBody(BaseModel):
    """A generation request. ``given`` defaults to every uploaded stem that is not in ``generate``; stems
    neither given nor generated are silent. ``seconds`` sets the length of a total generation (nothing given;
    default one model segment); with given stems the output has the length of the longest one."""

    generate: list[str]
    given: list[str] | None = None
    seconds: float | None = None
    prompt: str | None = None
    use_reference: bool = False
    guidance: float | None = None
    sampler: str | None = None  # None: the model's recommended sampler (and its steps when steps is None too)
    steps: int | None = None
    seed: int = 0
    overlap: float = 0.5


def _pid_alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def _remove_stale_dirs(work_root: Path, ttl_s: float) -> None:
    """Remove studio folders left behind by a killed studio: untouched for longer than the TTL (at least an
    hour; a running studio touches its folder every few minutes) and not owned by a live process."""
    for d in work_root.glob(f"{WORK_PREFIX}*"):
        try:
            if (d.is_dir() and time.time() - d.stat().st_mtime > max(ttl_s, 3600.0)
                    and not _pid_alive(d / "pid")):
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise HTTPException(400, message)


def create_app(model_dir: str | Path, *, max_upload_mb: float = 200.0, max_audio_seconds: float = 600.0,
               max_job_calls: int = 10_000, hosts: Sequence[str] = allowed_hosts("127.0.0.1"),
               work_root: str | Path | None = None, device: str | None = None, session_ttl_hours: float = 6.0,
               model: Any = None) -> FastAPI:
    """Build the studio app for one model (loaded now; pass ``model`` to reuse a loaded one).

    Args:
        model_dir: an MT-MusicLDM model directory (``MTMusicLDM.from_pretrained``).
        max_upload_mb: size limit of one uploaded file (HTTP 413 beyond it).
        max_audio_seconds: length limit of one upload once decoded (HTTP 413, from the header when it tells the
            length) and of a total generation.
        max_job_calls: limit of UNet evaluations per job (windows x sampler steps; HTTP 400 beyond it).
        hosts: Host header names answered (:func:`studio.guard.allowed_hosts`); any other gets HTTP 400.
        work_root: where the app's temporary folder goes (default: the system temp dir). Every file the app
            writes lies in it; it is removed at shutdown.
        session_ttl_hours: idle sessions (no request, no job) are removed after this long.
    """
    from mtmusicldm.diffusion.samplers import SAMPLERS
    from mtmusicldm.diffusion.schedules import get_timesteps_ddim_uniform
    from mtmusicldm.generation import segment_samples
    from mtmusicldm.generation.conditioning import CONDITIONED_GUIDANCE
    from mtmusicldm.ldm import load_model

    model_dir = Path(model_dir)
    model = load_model(model_dir, device) if model is None else model
    stems, sr, seg = tuple(model.stems), int(model.config["sample_rate"]), segment_samples(model)
    conditional, recommended = model.film_dim is not None, model.recommended_sampler
    limit, ttl_s = int(max_upload_mb * 1024 * 1024), session_ttl_hours * 3600.0
    root_parent = Path(work_root) if work_root is not None else Path(tempfile.gettempdir())
    root_parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_dirs(root_parent, ttl_s)
    root = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=root_parent))
    (root / "pid").write_text(str(os.getpid()))
    queue = JobQueue()
    sessions = Sessions(root, ttl_s, queue)
    draw_lock, stop = threading.Lock(), threading.Event()

    def janitor() -> None:
        while not stop.wait(max(1.0, min(300.0, ttl_s / 4))):
            try:
                os.utime(root)  # a live studio's folder never looks stale to another studio
                sessions.sweep()
            except Exception:  # noqa: BLE001 - the janitor must survive a failed sweep
                log.exception("studio: session sweep failed")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        queue.start()
        thread = threading.Thread(target=janitor, name="studio-janitor", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            queue.stop()
            sessions.close()
            shutil.rmtree(root, ignore_errors=True)

    app = FastAPI(title="MT-MusicLDM studio", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(SameOriginWrites)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))  # outermost: checked first
    app.state.queue, app.state.sessions, app.state.root, app.state.model = queue, sessions, root, model

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"detail": f"invalid request: {errors}"}, status_code=400)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return {"stems": list(stems), "sample_rate": sr, "segment_seconds": seg / sr,
                "conditional": conditional, "samplers": sorted(SAMPLERS), "max_upload_mb": max_upload_mb,
                "max_steps": MAX_STEPS, "max_seconds": max_audio_seconds, "max_job_calls": max_job_calls,
                "max_seed": MAX_SEED, "colours": STEM_COLOURS,
                "model": model_dir.name, "defaults": {"sampler": recommended.name, "steps": recommended.steps,
                                                      "seed": 0, "overlap": 0.5, "guidance": 1.0,
                                                      "guidance_conditioned": CONDITIONED_GUIDANCE}}

    @app.post("/api/sessions")
    def new_session() -> dict[str, str]:
        return {"session": sessions.create().id}

    @app.get("/api/sessions/{sid}")
    def session_state(sid: str) -> dict[str, Any]:
        return {"session": sid, "uploads": [u.public() for u in sessions.get(sid).uploads.values()]}

    @app.post("/api/sessions/{sid}/end", status_code=204)
    @app.delete("/api/sessions/{sid}", status_code=204)
    def end_session(sid: str) -> Response:
        sessions.end(sid)
        return Response(status_code=204)

    @app.put("/api/sessions/{sid}/uploads/{slot}")
    async def upload(sid: str, slot: str, request: Request) -> dict[str, Any]:
        session = sessions.get(sid)
        _check(slot in stems or slot == REFERENCE, f"unknown upload slot {slot!r}: use one of "
                                                   f"{', '.join(stems)} or {REFERENCE}")
        _check(slot != REFERENCE or conditional, "this model is unconditional: it takes no reference clip")
        filename = unquote(request.headers.get("x-filename", "")) or f"{slot}.wav"
        too_large = HTTPException(413, f"{filename!r} is too large: uploads are limited to {max_upload_mb:g} MB "
                                       "per file (start the studio with a larger --max-upload-mb)")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        raw = session.dir / "uploads" / f"incoming-{uuid.uuid4().hex}{safe_suffix(filename)}"
        size = 0
        try:
            with open(raw, "wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise too_large
                    f.write(chunk)
            _check(size > 0, f"{filename!r} is empty")
            wav, source = await run_in_threadpool(decode_upload, raw, filename, sr, max_audio_seconds)
        except UploadTooLong as e:
            raise HTTPException(413, f"{e} (start the studio with a larger --max-audio-seconds)") from None
        except UploadError as e:
            raise HTTPException(400, str(e)) from None
        finally:
            raw.unlink(missing_ok=True)
        path = session.dir / "uploads" / f"{slot}-{uuid.uuid4().hex}.npy"
        np.save(path, wav)
        session.uploads[slot] = Upload(slot, filename, path, int(wav.shape[-1]), wav.shape[-1] / sr, source)
        return session.uploads[slot].public()

    @app.delete("/api/sessions/{sid}/uploads/{slot}", status_code=204)
    def delete_upload(sid: str, slot: str) -> Response:
        sessions.get(sid).uploads.pop(slot, None)  # the file goes with the session (a queued job may use it)
        return Response(status_code=204)

    def to_request(session: Session, body: JobBody) -> GenerationRequest:
        generate = list(dict.fromkeys(body.generate))
        _check(bool(generate), "choose at least one stem to generate")
        bad = [s for s in generate + list(body.given or ()) if s not in stems]
        _check(not bad, f"unknown stem(s) {bad}; stems are {', '.join(stems)}")
        uploaded = [s for s in stems if s in session.uploads]
        given = [s for s in uploaded if s not in generate] if body.given is None else list(dict.fromkeys(body.given))
        missing = [s for s in given if s not in session.uploads]
        _check(not missing, f"stem(s) {missing} are marked as given but were not uploaded")
        both = [s for s in given if s in generate]
        _check(not both, f"stem(s) {both} are both given and to be generated")
        sampler = recommended.name if body.sampler is None else body.sampler
        steps = recommended.steps if body.steps is None else body.steps
        _check(sampler in SAMPLERS, f"unknown sampler {sampler!r}; choose from {', '.join(sorted(SAMPLERS))}")
        _check(1 <= steps <= MAX_STEPS, f"steps must be between 1 and {MAX_STEPS}, got {steps}")
        try:
            get_timesteps_ddim_uniform(steps, model.schedule.num_timesteps)
        except ValueError:
            raise HTTPException(400, f"steps={steps} does not fit the model's {model.schedule.num_timesteps}-"
                                     "step schedule on the official uniform grid; try 10, 20, 50, 100 or 200") from None
        _check(0 <= body.seed <= MAX_SEED, f"seed must be between 0 and {MAX_SEED}, got {body.seed}")
        _check(0.0 <= body.overlap <= 0.9, f"overlap must be between 0 and 0.9, got {body.overlap}")
        if body.seconds is not None:
            _check(not given, "the length follows the given stems: leave seconds empty when uploading stems")
            _check(0.1 <= body.seconds <= max_audio_seconds, f"seconds must be between 0.1 and {max_audio_seconds:g}")
        n = max((session.uploads[s].samples for s in given), default=seg if body.seconds is None
                else int(round(body.seconds * sr)))
        windows, calls = job_size(model, n, steps, body.overlap)
        _check(windows * calls <= max_job_calls,
               f"this job needs {windows * calls} UNet evaluations ({windows} windows x {calls} steps); the studio "
               f"allows {max_job_calls} per job: use fewer steps, less overlap or shorter audio (or start the studio "
               "with a larger --max-job-calls)")
        prompt = (body.prompt or "").strip() or None
        _check(not (prompt and body.use_reference), "use either a text prompt or a reference clip, not both")
        _check(not body.use_reference or REFERENCE in session.uploads, "no reference clip was uploaded")
        cond = bool(prompt or body.use_reference)
        guidance = (CONDITIONED_GUIDANCE if cond else 1.0) if body.guidance is None else float(body.guidance)
        _check(math.isfinite(guidance) and 0.0 <= guidance <= 20.0, "guidance must be between 0 and 20")
        if not conditional:
            _check(not cond, "this model is unconditional: it takes no text prompt or reference clip")
            _check(guidance == 1.0, "classifier-free guidance (guidance != 1) needs a conditional model")
        elif not cond and not given:
            _check(guidance == 1.0, "guidance != 1 needs a text prompt or a reference clip (nothing to guide to)")
        return GenerationRequest(
            generate=tuple(generate), given={s: session.uploads[s].path for s in given}, sampler=sampler,
            steps=steps, seconds=body.seconds, prompt=prompt,
            reference=session.uploads[REFERENCE].path if body.use_reference else None, guidance=guidance,
            seed=body.seed, overlap=body.overlap)

    @app.post("/api/sessions/{sid}/jobs")
    def submit(sid: str, body: JobBody) -> dict[str, Any]:
        session = sessions.get(sid)
        request = to_request(session, body)
        out_dir = session.dir / "jobs"
        info = {"generate": list(request.generate), "given": list(request.given), "sampler": request.sampler,
                "steps": request.steps, "seed": request.seed, "guidance": request.guidance,
                "prompt": request.prompt, "reference": request.reference is not None}

        def work(job: Job) -> dict[str, Any]:
            (out_dir / job.id).mkdir()
            return run_generation(model, request, out_dir / job.id, job)

        return queue.status(queue.submit(Job(session=sid, work=work, info=info)))

    def job_of(jid: str) -> tuple[Job, Path]:
        job = queue.get(jid) if ID_RE.match(jid) else None
        if job is None:
            raise HTTPException(404, "unknown or expired job")
        return job, sessions.get(job.session).dir / "jobs" / jid

    def result_file(jid: str, name: str, suffix: str) -> Path:
        job, directory = job_of(jid)
        _check(name in stems or name == "mix", f"unknown track {name!r}")
        if job.state != "done":
            raise HTTPException(409, f"the job is {job.state}: no results")
        return directory / f"{name}{suffix}"

    @app.get("/api/jobs/{jid}")
    def job_status(jid: str) -> dict[str, Any]:
        return queue.status(job_of(jid)[0])

    @app.post("/api/jobs/{jid}/cancel")
    def cancel(jid: str) -> dict[str, Any]:
        job = job_of(jid)[0]
        queue.cancel(job.id)
        return queue.status(job)

    @app.get("/api/jobs/{jid}/audio/{name}.wav")
    def audio(jid: str, name: str) -> FileResponse:
        return FileResponse(result_file(jid, name, ".wav"), media_type="audio/wav")

    @app.get("/api/jobs/{jid}/picture/{name}.png")
    def picture(jid: str, name: str) -> FileResponse:
        wav = result_file(jid, name, ".wav")
        png = wav.with_suffix(".png")
        with draw_lock:
            if not png.is_file():
                draw_picture(wav, png, label=name)
        return FileResponse(png, media_type="image/png")

    @app.get("/api/jobs/{jid}/remix.wav")
    def remix(jid: str, chosen: str = Query("", alias="stems")) -> Response:
        names = list(dict.fromkeys(s for s in chosen.split(",") if s))
        _check(bool(names), "choose at least one stem for the mix (?stems=bass,drums)")
        _check(all(s in stems for s in names), f"unknown stem in {names}; stems are {', '.join(stems)}")
        paths = [result_file(jid, s, ".wav") for s in names]
        return Response(remix_wav(paths, sr), media_type="audio/wav",
                        headers={"Content-Disposition": f'attachment; filename="mix-{"+".join(names)}.wav"'})

    @app.get("/api/jobs/{jid}/stems.zip")
    def download_zip(jid: str) -> FileResponse:
        path = result_file(jid, "mix", ".wav").with_name("stems.zip")
        return FileResponse(path, media_type="application/zip", filename=f"mtmusicldm-{jid[:8]}.zip")

    return app
