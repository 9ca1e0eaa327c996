"""A local web studio for musicians: upload stems, pick what to generate, listen, download.

``mtmusicldm studio --model DIR`` serves :func:`studio.app.create_app` on 127.0.0.1 with uvicorn: a FastAPI app
with a small static page (``studio/static``), one generation at a time per model (:mod:`studio.jobs`), and all
files under a per-app temporary folder with one sub-folder per browser session.
"""
from __future__ import annotations

__all__ = ["create_app"]


def create_app(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - thin lazy re-export (keeps `import studio` light)
    """See :func:`studio.app.create_app`."""
    from studio.app import create_app as _create_app

    return _create_app(*args, **kwargs)
