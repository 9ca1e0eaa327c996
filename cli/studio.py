"""`mtmusicldm studio`: serve the local web studio (studio/) for one model directory."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("studio", help="a local web page: upload stems, pick what to generate, listen, download",
                       description="Serves the studio (FastAPI + uvicorn) on --host:--port, loopback by default. "
                                   "One generation runs at a time (others queue); uploads and results live in a "
                                   "temporary folder under --work-root that is removed when the studio stops.")
    p.add_argument("--model", type=Path, required=True, help="model directory (models/ldm or an imported one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="another host name the page may be opened under (repeatable; the loopback names and --host "
                        "are always allowed; other Host headers are refused against DNS rebinding)")
    p.add_argument("--max-upload-mb", type=float, default=200.0, help="size limit of one uploaded file (MB)")
    p.add_argument("--max-audio-seconds", type=float, default=600.0,
                   help="length limit of one upload once decoded, and of a generation (seconds)")
    p.add_argument("--max-job-calls", type=int, default=10_000,
                   help="limit of UNet evaluations per job (windows x sampler steps)")
    p.add_argument("--work-root", type=Path, default=None, help="parent of the temporary folder (default: $TMPDIR)")
    p.add_argument("--session-ttl-hours", type=float, default=6.0, help="remove idle sessions after this long")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> None:
    import uvicorn  # the web stack only for this command

    from studio.app import create_app
    from studio.guard import LOOPBACK_NAMES, allowed_hosts

    for flag, value in (("--max-upload-mb", args.max_upload_mb), ("--max-audio-seconds", args.max_audio_seconds),
                        ("--max-job-calls", args.max_job_calls)):
        if value <= 0:
            raise ValueError(f"{flag} must be > 0, got {value}")
    if args.host not in LOOPBACK_NAMES:
        print(f"studio: WARNING: serving on {args.host}: anyone who can reach this address can use the model and "
              "upload files (there is no login)", file=sys.stderr)
    print(f"studio: loading {args.model} ...", file=sys.stderr)
    hosts = allowed_hosts(args.host, args.allowed_host)
    app = create_app(args.model, max_upload_mb=args.max_upload_mb, max_audio_seconds=args.max_audio_seconds,
                     max_job_calls=args.max_job_calls, hosts=hosts, work_root=args.work_root, device=args.device,
                     session_ttl_hours=args.session_ttl_hours)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"studio: open http://{shown}:{args.port}/ (Ctrl-C stops it and removes its temporary files); it answers "
          f"to the host names {', '.join(hosts)}", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
