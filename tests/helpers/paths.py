"""Where the repository is, for tests that run its commands as a user would."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
