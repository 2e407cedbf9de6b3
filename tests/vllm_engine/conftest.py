"""The real-engine tests import helpers of the unit suite (tests/test_evaluate.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
