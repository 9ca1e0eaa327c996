"""Fail loudly when an install swapped the pinned torch/numpy set (see README, 'Install')."""
import logging
import sys
from importlib.metadata import PackageNotFoundError, version

PINS = {"torch": "2.14.1", "torchvision": "0.29.1", "torchaudio": "2.11.0", "numpy": "1.26.4"}
bad = []
for name, want in PINS.items():
    try:
        got = version(name)
    except PackageNotFoundError:
        got = "missing"
    if got.split("+")[0] != want:
        bad.append(f"{name} {got} (pinned {want})")
logging.disable(logging.WARNING)  # basic_pitch logs the back-ends it does not find (only ONNX is used)
for module in ("tinysoundfont", "pretty_midi", "onnxruntime", "basic_pitch.inference", "torchcrepe", "torchvggish",
               "mir_eval"):  # some installed without their declared dependencies: their used paths must import
    try:
        __import__(module)
    except ImportError as err:
        bad.append(f"{module} does not import ({err})")
if bad:
    sys.exit("environment check failed: " + ", ".join(bad) + ". Recreate the venv: rm -rf .venv && make install")
print("environment ok: " + ", ".join(f"{k} {v}" for k, v in PINS.items()))
