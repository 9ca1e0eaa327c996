"""The studio's job queue (one generation at a time per model) and the generation task it runs.

* :class:`JobQueue`: a FIFO served by **one** worker thread, so one model never runs two generations at once.
  Waiting jobs know their queue position; a queued job is cancelled at once, a running one at its next UNet
  call (:func:`unet_monitor` raises :class:`JobCancelled` from a forward pre-hook). A failed or cancelled job
  only ends itself: the worker goes on with the next one.
* :func:`run_generation`: a :class:`GenerationRequest` -> ``<stem>.wav`` + ``mix.wav`` (16 kHz FLOAT, given
  stems bit-identical), ``settings.json`` and ``stems.zip`` in the job folder, through the library's
  :func:`~mtmusicldm.generation.arrange` (long inputs switch to the windowed long form there) or
  :func:`~mtmusicldm.generation.generate`. The library exposes no sampler callback at this level, so progress
  counts UNet evaluations against ``windows x steps`` (every sampler makes one UNet call per step; CFG batches
  the conditional and unconditional halves into that one call).
"""
from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
import zipfile
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

log = logging.getLogger("studio")

State = Literal["queued", "running", "done", "failed", "cancelled"]
FINAL_STATES: frozenset[str] = frozenset({"done", "failed", "cancelled"})


class JobCancelled(Exception):
    """Raised inside a running job when its cancellation was requested."""


@dataclass
class Job:
    """One queued piece of work. ``work(job)`` returns the result dict (JSON-able) or raises.

    ``state``/``phase``/``progress`` are written by the worker and read by request handlers (plain attribute
    assignments; :meth:`JobQueue.status` takes a consistent snapshot under the queue lock).
    """

    session: str
    work: Callable[[Job], dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: State = "queued"
    phase: str = "waiting in the queue"
    progress: float = 0.0
    error: str | None = None
    result: dict[str, Any] | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        """Raise :class:`JobCancelled` if cancellation was requested."""
        if self.cancel_requested.is_set():
            raise JobCancelled(f"job {self.id} was cancelled")

    def report(self, phase: str, progress: float | None = None) -> None:
        """Set the phase text and (optionally) the progress fraction; also a cancellation point."""
        self.check()
        self.phase = phase
        if progress is not None:
            self.progress = float(min(max(progress, 0.0), 1.0))


class JobQueue:
    """FIFO of :class:`Job` run by a single worker thread (started by :meth:`start` or the first submit)."""

    def __init__(self, name: str = "studio-worker", poll_s: float = 0.5) -> None:
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._jobs: dict[str, Job] = {}
        self._running: Job | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._name, self._poll_s = name, poll_s

    # ---- lifecycle

    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel every queued and running job and stop the worker (waits at most ``timeout`` seconds)."""
        with self._cond:
            self._stopping = True
            for job in list(self._waiting):
                self._finish(job, "cancelled", "the studio is shutting down")
            self._waiting.clear()
            if self._running is not None:
                self._running.cancel_requested.set()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # ---- client side

    def submit(self, job: Job) -> Job:
        """Queue ``job`` (behind the running one and those waiting)."""
        self.start()
        with self._cond:
            if self._stopping:
                raise RuntimeError("the studio is shutting down")
            self._jobs[job.id] = job
            self._waiting.append(job)
            self._cond.notify_all()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            return self._jobs.get(job_id)

    def position(self, job: Job) -> int | None:
        """0 while running, ``k >= 1`` for the k-th waiting job, None once finished."""
        with self._cond:
            if job is self._running:
                return 0
            for k, waiting in enumerate(self._waiting, start=1):
                if waiting is job:
                    return k
            return None

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a job: a waiting one at once, a running one at its next cancellation point; None if unknown."""
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None or job.state in FINAL_STATES:
                return job
            job.cancel_requested.set()
            if job in self._waiting:
                self._waiting.remove(job)
                self._finish(job, "cancelled", "cancelled before it started")
            return job

    def status(self, job: Job) -> dict[str, Any]:
        """A JSON-able snapshot: state, phase, progress, queue position and length, error, result."""
        with self._cond:
            position = 0 if job is self._running else next(
                (k for k, w in enumerate(self._waiting, start=1) if w is job), None)
            return {"id": job.id, "state": job.state, "phase": job.phase, "progress": round(job.progress, 4),
                    "queue_position": position, "queue_length": len(self._waiting) + (self._running is not None),
                    "error": job.error, "result": job.result, "info": job.info,
                    "elapsed_s": round((job.finished or time.time()) - job.created, 2)}

    def busy_sessions(self) -> set[str]:
        """Sessions that have a queued or running job."""
        with self._cond:
            return {j.session for j in self._jobs.values() if j.state not in FINAL_STATES}

    def forget_session(self, session: str) -> None:
        """Cancel the session's jobs and forget its finished ones (its files are about to be removed)."""
        with self._cond:
            for job in [j for j in self._jobs.values() if j.session == session]:
                if job.state not in FINAL_STATES:
                    self.cancel(job.id)
                if job.state in FINAL_STATES:
                    del self._jobs[job.id]

    # ---- worker

    def _finish(self, job: Job, state: State, error: str | None = None) -> None:
        job.state, job.error, job.finished = state, error, time.time()
        job.phase = {"done": "finished", "failed": "failed", "cancelled": "cancelled"}[state]

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stopping:
                    self._cond.wait(self._poll_s)
                if self._stopping:
                    return
                job = self._running = self._waiting.popleft()
                job.state, job.phase = "running", "starting"
            try:
                job.check()
                result = job.work(job)
            except JobCancelled:
                outcome: tuple[State, str | None, dict[str, Any] | None] = ("cancelled", "cancelled", None)
            except Exception as e:  # noqa: BLE001 - a failed job must not stop the worker
                log.exception("studio job %s failed", job.id)
                message = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
                outcome = ("failed", message, None)
            else:
                outcome = ("done", None, result)
            with self._cond:
                job.result = outcome[2]
                if outcome[0] == "done":
                    job.progress = 1.0
                self._finish(job, outcome[0], outcome[1])
                self._running = None


# ---------------------------------------------------------------------------------------------------------------
# The generation task


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate; audio inputs are ``.npy`` files of 16 kHz mono float32 (decoded at upload).

    Attributes:
        generate: stems to generate; stems neither given nor generated are silent.
        given: ``{stem: npy path}``; given stems of different lengths are padded with silence to the longest.
        sampler, steps: the sampler (resolved from the model's recommendation when the request names none).
        seconds: length of a total generation (nothing given; None = one model segment).
        prompt / reference: conditioning of a conditional model (text, or the ``.npy`` of a reference clip).
        guidance: classifier-free guidance scale.
    """

    generate: tuple[str, ...]
    given: dict[str, Path]
    sampler: str
    steps: int
    seconds: float | None = None
    prompt: str | None = None
    reference: Path | None = None
    guidance: float = 1.0
    seed: int = 0
    overlap: float = 0.5


@contextlib.contextmanager
def unet_monitor(unet: torch.nn.Module, job: Job, steps: int, windows: int) -> Iterator[None]:
    """Count UNet calls as sampling progress (``windows x steps`` in all) and cancel at the next call.

    ``steps``: UNet calls per window (the length of the DDIM timestep grid, which every sampler walks).
    """
    calls = 0
    total = max(steps * windows, 1)

    def hook(_module: torch.nn.Module, _args: Any) -> None:
        nonlocal calls
        job.check()
        calls += 1
        window, step = min((calls - 1) // steps + 1, windows), (calls - 1) % steps + 1
        where = f"window {window}/{windows}, " if windows > 1 else ""
        job.report(f"sampling: {where}step {step}/{steps}", 0.05 + 0.85 * min(calls / total, 1.0))

    handle = unet.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def job_size(model: Any, n_samples: int, steps: int, overlap: float) -> tuple[int, int]:
    """(windows, UNet calls per window) of a job over ``n_samples``: a total of ``windows x calls`` evaluations."""
    from mtmusicldm.diffusion.schedules import get_timesteps_ddim_uniform
    from mtmusicldm.generation import plan_windows, segment_samples

    long_form = n_samples > segment_samples(model)
    windows = plan_windows(n_samples, model.latent_shape[2], overlap).n_windows if long_form else 1
    return windows, len(get_timesteps_ddim_uniform(steps, model.schedule.num_timesteps))


def run_generation(model: Any, request: GenerationRequest, out_dir: Path, job: Job) -> dict[str, Any]:
    """Run one generation for ``job`` and write its files into ``out_dir``; returns the result summary."""
    from mtmusicldm.generation import arrange, generate, segment_samples, write_stems

    stems, sr, seg = tuple(model.stems), int(model.config["sample_rate"]), segment_samples(model)
    job.report("loading the given stems", 0.01)
    given = {name: np.load(path) for name, path in request.given.items()}
    n = max((w.shape[-1] for w in given.values()), default=seg if request.seconds is None
            else int(round(request.seconds * sr)))
    audio = torch.zeros(len(stems), n)
    for name, wav in given.items():
        audio[stems.index(name), :wav.shape[-1]] = torch.from_numpy(wav)
    known = torch.tensor([s not in request.generate for s in stems])  # given, or silent
    job.report("conditioning", 0.03)
    film = model.embed_condition(prompt=request.prompt,
                                 reference=None if request.reference is None else np.load(request.reference))
    windows, calls = job_size(model, n, request.steps, request.overlap)
    common = {"seed": request.seed, "sampler": request.sampler, "steps": request.steps,
              "guidance_scale": request.guidance, "film": film, "overlap": request.overlap}
    job.report("encoding the given stems" if given else "sampling", 0.05)
    with unet_monitor(model.unet, job, calls, windows):
        if bool(known.any()):
            out = arrange(model, audio[None], mask=known, batch_size=1, condition_on_given=bool(given),
                          **common)[0]
        else:
            out = generate(model, 1, seconds=n / sr, batch_size=1, **common)[0]
    job.report("writing the audio files", 0.95)
    files = write_stems(out_dir, out, stems, sr, "FLOAT")
    settings = asdict(request) | {"given": {k: f"{k} (uploaded)" for k in request.given},
                                  "reference": None if request.reference is None else "uploaded clip",
                                  "stems": list(stems), "sample_rate": sr, "samples": n, "windows": windows,
                                  "model": str(getattr(model, "path", "")), "subtype": "FLOAT"}
    (out_dir / "settings.json").write_text(json.dumps(settings, indent=2))
    with zipfile.ZipFile(out_dir / "stems.zip.part", "w", zipfile.ZIP_DEFLATED) as zf:
        for name in (*files.values(), "settings.json"):
            zf.write(out_dir / name, arcname=name)
    (out_dir / "stems.zip.part").replace(out_dir / "stems.zip")
    roles = {s: "given" if s in request.given else "generated" if s in request.generate else "silent"
             for s in stems}
    return {"stems": [{"name": s, "role": roles[s]} for s in stems], "samples": n, "seconds": n / sr,
            "sample_rate": sr, "windows": windows}
