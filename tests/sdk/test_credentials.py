from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hokusai._credentials import (
    DEFAULT_API_URL,
    Setting,
    check_key_destination,
    delete_credentials,
    key_and_url,
    lookup_api_key,
    lookup_api_url,
    read_credentials,
    refused_key_fix,
    remember_setup,
    require_api_key,
    without_userinfo,
    write_credentials,
)
from hokusai._paths import credentials_path, hokusai_home
from hokusai.errors import HokusaiConfigurationError

from .conftest import KEY


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_home_defaults_to_dot_hokusai(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOKUSAI_HOME", "")
    assert hokusai_home() == tmp_path / "home" / ".hokusai"


def test_written_file_is_owner_only_in_an_owner_only_dir(hokusai_home: Path) -> None:
    write_credentials(api_key=KEY, api_url="http://api.test")
    assert credentials_path() == hokusai_home / "credentials"
    assert _mode(credentials_path()) == 0o600
    assert _mode(hokusai_home) == 0o700
    assert read_credentials() == {"api_key": KEY, "api_url": "http://api.test"}


def test_rewriting_keeps_0600_even_if_loosened(hokusai_home: Path) -> None:
    write_credentials(api_key=KEY)
    credentials_path().chmod(0o644)
    write_credentials(api_key=KEY + "x")
    assert _mode(credentials_path()) == 0o600
    assert read_credentials() == {"api_key": KEY + "x"}


def test_percent_in_a_key_is_not_interpolation() -> None:
    write_credentials(api_key="hk_live_100%safe")
    found = lookup_api_key()
    assert found is not None and found.value == "hk_live_100%safe"


def test_key_order_argument_env_file(monkeypatch: pytest.MonkeyPatch) -> None:
    write_credentials(api_key="from-file")
    monkeypatch.setenv("HOKUSAI_API_KEY", "from-env")
    found = lookup_api_key("from-arg")
    assert found is not None and (found.value, found.source) == ("from-arg", "argument")
    found = lookup_api_key()
    assert found is not None and (found.value, found.source) == ("from-env", "env")
    monkeypatch.delenv("HOKUSAI_API_KEY")
    found = lookup_api_key()
    assert found is not None and (found.value, found.source) == ("from-file", "file")


def test_empty_settings_count_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    write_credentials(api_key="from-file", api_url="")
    monkeypatch.setenv("HOKUSAI_API_KEY", "  ")
    monkeypatch.setenv("HOKUSAI_API_URL", "")
    found = lookup_api_key()
    assert found is not None and found.source == "file"
    assert lookup_api_url().source == "default"


@pytest.mark.parametrize("name", ["api_key", "api_url"])
@pytest.mark.parametrize("given", ["", "  \n"])
def test_an_argument_given_empty_is_refused_not_replaced_by_the_environment(
    monkeypatch: pytest.MonkeyPatch, name: str, given: str
) -> None:
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
    monkeypatch.setenv("HOKUSAI_API_URL", "http://api.test")
    with pytest.raises(HokusaiConfigurationError) as caught:
        key_and_url(**{name: given})
    assert caught.value.user_message == f"{name} was given empty."
    assert caught.value.hint == f"pass a value, or leave {name} out (None) to use the configured one"


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("api_key", 5, "api_key must be a string (str), not int."),
        ("api_key", KEY.encode(), "api_key must be a string (str), not bytes: decode it first (api_key.decode())."),
        ("api_url", 8741, "api_url must be a string (str), not int."),
    ],
)
def test_an_argument_of_another_type_is_refused_by_name_without_its_value(name: str, value: object, says: str) -> None:
    with pytest.raises(HokusaiConfigurationError) as caught:
        key_and_url(**{name: value, "api_key": KEY} if name == "api_url" else {name: value})  # type: ignore[arg-type]
    assert str(caught.value) == says


MALFORMED = (
    "The API key is malformed: Hokusai keys are `hk_live_` followed by at least 32 letters and digits. Check that it "
    "was copied whole, without quotes or spaces."
)


@pytest.mark.parametrize(
    "key",
    [
        KEY[:20] + "\r\n" + KEY[20:],  # the ends are stripped as a pasted line's, not the inside
        KEY[:20] + "\x00" + KEY[20:],
        KEY[:20] + "é" + KEY[20:],
        KEY[:20] + " " + KEY[20:],
        "garbage",
        "hk_live_short",
    ],
)
def test_a_key_of_the_wrong_shape_is_refused_before_sending_without_showing_it(key: str) -> None:
    with pytest.raises(HokusaiConfigurationError) as caught:
        require_api_key(key)
    error = caught.value
    assert (error.user_message, error.hint) == (MALFORMED, "the key was passed as an argument: pass a valid key")
    assert KEY[:12] not in str(error) and "garbage" not in str(error)


@pytest.mark.parametrize(
    ("source", "fix"),
    [
        ("env", "the key is HOKUSAI_API_KEY's: set it to a valid key, or unset it to use the saved login"),
        ("file", "the key is the saved login's ({path}): run `hokusai login` with a valid key"),
    ],
)
def test_a_malformed_keys_fix_names_where_it_came_from(monkeypatch: pytest.MonkeyPatch, source: str, fix: str) -> None:
    if source == "env":
        monkeypatch.setenv("HOKUSAI_API_KEY", KEY[:20] + "\n" + KEY[20:])
    else:
        write_credentials(api_key=KEY[:20] + " " + KEY[20:])
    with pytest.raises(HokusaiConfigurationError) as caught:
        require_api_key()
    assert (caught.value.user_message, caught.value.hint) == (MALFORMED, fix.format(path=credentials_path()))
    assert KEY[:12] not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:99999", "is not a valid URL (Port out of range 0-65535)"),
        ("http://[::1", "is not a valid URL (Invalid IPv6 URL)"),
        ("http://api.test:port", "is not a valid URL (Port could not be cast to integer value as 'port')"),
        ("http://:8000", "names no host"),
    ],
)
@pytest.mark.parametrize("source", ["argument", "env", "file", "setup()"])
def test_an_api_url_python_cannot_parse_is_refused_naming_its_source(
    monkeypatch: pytest.MonkeyPatch, url: str, problem: str, source: str
) -> None:
    if source == "env":
        monkeypatch.setenv("HOKUSAI_API_URL", url)
    elif source == "file":
        write_credentials(api_key=KEY, api_url=url)
    elif source == "setup()":
        remember_setup(api_key=None, api_url=url)
    with pytest.raises(HokusaiConfigurationError) as caught:
        lookup_api_url(url if source == "argument" else None)
    assert caught.value.user_message == f"The API URL {url!r} (from {source}) {problem}."


def test_an_unparsable_api_url_hides_its_password() -> None:
    with pytest.raises(HokusaiConfigurationError) as caught:
        lookup_api_url("http://user:s3cret@[::1")
    assert "s3cret" not in str(caught.value)
    assert "'http://***@[::1'" in caught.value.user_message


def test_pasted_newline_is_stripped() -> None:
    found = lookup_api_key(KEY + "\n")
    assert found is not None and found.value == KEY


def test_no_key_anywhere_fails_with_a_hint() -> None:
    assert lookup_api_key() is None
    with pytest.raises(HokusaiConfigurationError) as caught:
        require_api_key()
    assert str(caught.value) == (
        "No Hokusai API key provided. "
        "(HINT: run `hokusai login` or set HOKUSAI_API_KEY; in Python, `setup(api_key=...)` also works)"
    )


def test_setting_repr_hides_the_value() -> None:
    found = lookup_api_key(KEY)
    assert KEY not in repr(found)
    assert repr(found) == "Setting(source='argument')"


def test_api_url_order_and_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (lookup_api_url().value, lookup_api_url().source) == (DEFAULT_API_URL, "default")
    write_credentials(api_key=KEY, api_url="http://file.test/")
    assert (lookup_api_url().value, lookup_api_url().source) == ("http://file.test", "file")
    monkeypatch.setenv("HOKUSAI_API_URL", "https://env.test")
    assert lookup_api_url().value == "https://env.test"
    assert lookup_api_url("http://arg.test").value == "http://arg.test"


def test_api_url_must_be_http() -> None:
    with pytest.raises(HokusaiConfigurationError, match=r"The API URL 'localhost:8000' \(from argument\)"):
        lookup_api_url("localhost:8000")


@pytest.mark.parametrize("content", [b"api_key = no section\n", b"\x00\xff garbage"], ids=["no section", "binary"])
def test_broken_file_names_itself(content: bytes) -> None:
    credentials_path().parent.mkdir(parents=True)
    credentials_path().write_bytes(content)
    with pytest.raises(HokusaiConfigurationError, match="is not valid INI"):
        lookup_api_key()


def test_delete() -> None:
    assert delete_credentials() is False
    write_credentials(api_key=KEY)
    assert delete_credentials() is True
    assert not credentials_path().exists()


def test_the_saved_key_is_not_sent_to_another_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """`hokusai login` saved the key for one server; an option or variable naming another must not receive it."""
    write_credentials(api_key=KEY, api_url="http://hokusai.test:8000")
    monkeypatch.setenv("HOKUSAI_API_URL", "http://elsewhere.test:8000")

    with pytest.raises(HokusaiConfigurationError) as refused:
        check_key_destination(require_api_key(), lookup_api_url())

    assert refused.value.user_message == (
        "The key saved by `hokusai login` is for http://hokusai.test:8000; it is not sent to "
        "http://elsewhere.test:8000 (from env)."
    )
    assert "hokusai login --api-url http://elsewhere.test:8000" in str(refused.value.hint)
    assert KEY not in str(refused.value)


@pytest.mark.parametrize(
    ("saved_url", "env_url", "env_key"),
    [
        ("http://hokusai.test:8000", "http://hokusai.test:8000/", None),  # the same server
        ("http://hokusai.test", "http://hokusai.test:80", None),  # the same origin, the port spelled out
        ("http://hokusai.test:8000", "http://elsewhere.test:8000", KEY[:8] + KEY[:7:-1]),  # a key given explicitly
        (None, "http://elsewhere.test:8000", None),  # a file that names no server
        ("http://hokusai.test:8000", None, None),  # the URL comes from the file itself
    ],
)
def test_a_key_goes_where_it_was_saved_for_or_where_it_was_given(
    monkeypatch: pytest.MonkeyPatch, saved_url: str | None, env_url: str | None, env_key: str | None
) -> None:
    write_credentials(api_key=KEY, api_url=saved_url)
    for name, value in (("HOKUSAI_API_URL", env_url), ("HOKUSAI_API_KEY", env_key)):
        if value is not None:
            monkeypatch.setenv(name, value)
    check_key_destination(require_api_key(), lookup_api_url())  # raises nothing


def test_a_password_in_a_url_is_never_shown() -> None:
    assert without_userinfo("http://user:secret@hokusai.test:8000/x") == "http://***@hokusai.test:8000/x"
    assert without_userinfo("http://hokusai.test:8000") == "http://hokusai.test:8000"


@pytest.mark.parametrize(
    ("source", "fix"),
    [
        ("env", "is HOKUSAI_API_KEY's: set it to a valid key, or unset it to use the saved login"),
        ("file", "is the saved login's ({path}): run `hokusai login` with a valid key"),
        ("setup()", "was given to hokusai.setup(): pass a valid key"),
        ("argument", "was passed as an argument: pass a valid key"),
    ],
)
def test_a_refused_keys_fix_names_where_it_came_from(source: str, fix: str) -> None:
    expected = f"the key {KEY[:12]}… " + fix.format(path=credentials_path())
    assert refused_key_fix(Setting(KEY, source)) == expected
