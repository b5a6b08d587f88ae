"""wandb in offline mode for the callback tests: no network, no login prompt, no console
capture, every file under the test's own directory."""

from pathlib import Path
from typing import Any

import pytest

SETTINGS = {
    "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
    "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true",
    "WANDB_PROJECT": "stability-test", "WANDB_API_KEY": "",
}  # fmt: skip


def offline_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The wandb module, set up offline under ``tmp_path``; the test skips, saying why, when
    wandb is not importable (not installed, or installed and broken)."""
    wandb = pytest.importorskip(
        "wandb",
        reason="the W&B test needs wandb: pip install 'stability[wandb]'",
        exc_type=ImportError,
    )
    for key, val in {**SETTINGS, "WANDB_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(key, val)
    # wandb keeps its settings (WANDB_DIR among them) in a process-wide singleton from the
    # first run on: without a teardown a second test's run is written to the first's
    # directory, and that test finds no run of its own (the Lightning test, then the HF one).
    wandb.teardown()
    return wandb
