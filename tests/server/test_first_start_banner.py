"""The first-start banner tells a new user how to call `hokusai` from where they are, and where their admin key is."""

from __future__ import annotations

import io
import shlex
import stat
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


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_is_shown_the_key_and_no_file_is_written(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)
    terminal = _Terminal()

    runner.announce_first_admin_key(settings, "hk_live_KEY", terminal)

    assert "  export HOKUSAI_API_KEY=hk_live_KEY\n" in terminal.getvalue()
    assert not (tmp_path / runner.FIRST_ADMIN_KEY_FILE).exists()


def test_output_that_may_be_a_log_names_a_private_file_holding_the_key(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data dir")
    (tmp_path / "data dir").mkdir()
    log = io.StringIO()

    runner.announce_first_admin_key(settings, "hk_live_KEY", log)

    key_file = tmp_path / "data dir" / runner.FIRST_ADMIN_KEY_FILE
    assert "hk_live_KEY" not in log.getvalue()
    assert f"  export HOKUSAI_API_KEY=$(cat '{key_file}')\n" in log.getvalue()
    assert key_file.read_text() == "hk_live_KEY\n"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_an_earlier_platforms_admin_key_file_is_never_overwritten(tmp_path: Path) -> None:
    # A new key database (HOKUSAI_DATABASE_URL changed or mistyped) beside an old data dir mints a new first key.
    settings = Settings(_env_file=None, data_dir=tmp_path)
    (tmp_path / runner.FIRST_ADMIN_KEY_FILE).write_text("hk_live_OLD\n")
    log = io.StringIO()

    runner.announce_first_admin_key(settings, "hk_live_NEW", log)

    assert (tmp_path / runner.FIRST_ADMIN_KEY_FILE).read_text() == "hk_live_OLD\n"
    new_file = tmp_path / f"{runner.FIRST_ADMIN_KEY_FILE}-2"
    assert new_file.read_text() == "hk_live_NEW\n" and f"$(cat {shlex.quote(str(new_file))})" in log.getvalue()


def test_each_start_reminds_the_operator_while_the_key_file_is_left(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)
    runner.warn_if_first_admin_key_left(settings)
    (tmp_path / runner.FIRST_ADMIN_KEY_FILE).write_text("hk_live_KEY\n")
    runner.warn_if_first_admin_key_left(settings)

    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert warnings == [f"{tmp_path / runner.FIRST_ADMIN_KEY_FILE} still holds the first admin key: store the key "
                        "elsewhere, then delete the file"]  # fmt: skip
    assert "hk_live_KEY" not in caplog.text
