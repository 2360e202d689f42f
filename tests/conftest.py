"""Test setup: make `tests/helpers.py` importable and keep torch deterministic and small."""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
if os.environ.get("PYTEST_XDIST_WORKER"):  # one of several pytest workers (-n): a core each
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # and for the subprocesses the tests start
else:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
