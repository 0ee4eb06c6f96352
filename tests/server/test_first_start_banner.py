"""The first-start banner tells a new user how to call `hokusai` from where they are."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hokusai.server import runner
from hokusai.server.settings import Settings

INSTALLED = Path(sys.executable).parent / "hokusai"


def _banner_command(settings: Settings) -> str:
    line = next(line for line in runner.first_start_banner(settings, "KEY").splitlines() if "keys create" in line)
    return line.removeprefix("Create keys for your users with: ").split(" keys create")[0]


def test_the_banner_names_the_virtualenvs_hokusai_when_it_is_not_on_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(runner.shutil, "which", lambda _name: None)
    settings = Settings(_env_file=None, data_dir=tmp_path)

    monkeypatch.chdir(INSTALLED.parent.parent.parent)
    from_the_project = _banner_command(settings)
    monkeypatch.chdir(tmp_path)
    from_elsewhere = _banner_command(settings)

    assert from_the_project == str(INSTALLED.relative_to(INSTALLED.parent.parent.parent))
    assert from_elsewhere == str(INSTALLED)


def test_the_banner_says_hokusai_when_the_shell_finds_this_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(runner.shutil, "which", lambda _name: str(INSTALLED))

    assert _banner_command(Settings(_env_file=None, data_dir=tmp_path)) == "hokusai"
