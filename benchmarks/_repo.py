"""The repository root of the benchmark scripts, put on ``sys.path`` when imported.

Every helper module of ``benchmarks/`` imports this first, so the scripts also run from a
checkout without ``pip install -e .``.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
