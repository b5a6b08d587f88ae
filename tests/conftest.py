"""Shared fixtures for the tool's own tests: tiny grids and throwaway stores."""

from pathlib import Path

import pytest


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "results" / "stability.db"


@pytest.fixture
def out_csv(tmp_path: Path) -> Path:
    return tmp_path / "results" / "sweep.csv"
