"""Owner-only directories and files (`hokusai._private_files`), shared by the SDK's home and the server's data dir."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hokusai._paths import local_store_dir
from hokusai._private_files import ensure_private_dir, write_private_file
from hokusai.errors import HokusaiConfigurationError


def test_private_files_are_new_and_private_whatever_was_left_behind(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    temporary = tmp_path / f".secret.{os.getpid()}.tmp"
    temporary.write_text("old")
    temporary.chmod(0o644)
    write_private_file(target, "one")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("untouched")
    temporary.symlink_to(elsewhere)
    write_private_file(target, "two")

    assert target.read_text() == "two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert elsewhere.read_text() == "untouched"  # a planted link is removed, never written through
    assert not temporary.exists()


def test_an_existing_directory_open_to_others_is_made_private_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)

    with caplog.at_level("WARNING", logger="hokusai._private_files"):
        ensure_private_dir(shared)
        ensure_private_dir(shared)  # already private: nothing to say

    assert stat.S_IMODE(shared.stat().st_mode) == 0o700
    assert [record.getMessage() for record in caplog.records] == [
        f"{shared} was open to others (mode 755); it is now private to its owner (0700)"
    ]


def test_a_directory_that_belongs_to_another_user_is_refused_and_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    planted = tmp_path / "planted"
    planted.mkdir(mode=0o777)
    planted.chmod(0o777)
    # As if someone else had made it: this process now runs as a user other than the directory's owner.
    monkeypatch.setattr(os, "getuid", lambda: planted.stat().st_uid + 1)

    with pytest.raises(HokusaiConfigurationError, match="belongs to another user") as caught:
        write_private_file(planted / "credentials", "hk_live_secret")

    assert caught.value.hint == "use a directory of your own"
    assert list(planted.iterdir()) == []
    assert stat.S_IMODE(planted.stat().st_mode) == 0o777


def test_the_local_stores_fallback_under_tmp_is_refused_when_someone_else_made_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    monkeypatch.setenv("HOKUSAI_HOME", str(home))
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr("getpass.getuser", lambda: "alice")
    (tmp_path / "hokusai-mock-alice").mkdir(mode=0o777)
    monkeypatch.setattr(os, "getuid", lambda: (tmp_path / "hokusai-mock-alice").stat().st_uid + 1)

    with pytest.raises(HokusaiConfigurationError, match="hokusai-mock-alice belongs to another user"):
        local_store_dir()


def test_a_directory_of_the_users_own_keeps_its_mode_for_the_sdks_files(tmp_path: Path) -> None:
    """HOKUSAI_HOME may be a directory the user chose for other things too: its files are private, it is left as is."""
    home = tmp_path / "project"
    home.mkdir(mode=0o755)
    home.chmod(0o755)

    write_private_file(home / "credentials", "[default]\n")

    assert stat.S_IMODE(home.stat().st_mode) == 0o755
    assert stat.S_IMODE((home / "credentials").stat().st_mode) == 0o600
