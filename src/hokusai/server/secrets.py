"""Platform secrets: taken from the environment when given, else generated once into the data dir (mode 0600)."""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from hokusai._private_files import ensure_private_dir, write_private_file
from hokusai.errors import HokusaiConfigurationError
from hokusai.server.settings import Settings

logger = logging.getLogger(__name__)

SECRETS_FILE = "secrets.json"
_SECRET_NAMES = ("key_pepper", "assertion_secret", "mlflow_admin_password", "flask_secret_key")


@dataclass(frozen=True, repr=False)
class PlatformSecrets:
    key_pepper: bytes
    assertion_secret: str
    mlflow_admin_password: str
    flask_secret_key: str

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}('**********')"


def _stored_secrets(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        stored = None
    if not isinstance(stored, dict) or not all(isinstance(value, str) for value in stored.values()):
        raise HokusaiConfigurationError(
            f"{path} is not a secrets file Hokusai wrote: restore it from a backup. Deleting it makes new secrets, "
            "and every existing key stops working."
        )
    return stored


def load_or_create_secrets(settings: Settings) -> PlatformSecrets:
    """The platform's secrets, generated into the data dir where the settings give none.

    A data dir that cannot be used, or a secrets file that is not Hokusai's, is a `HokusaiConfigurationError` that
    names the setting; never a traceback.
    """
    try:
        data_dir = ensure_private_dir(settings.resolved_data_dir)
        path = data_dir / SECRETS_FILE
        stored = _stored_secrets(path)
        missing = [name for name in _SECRET_NAMES if name not in stored]
        if missing:
            stored.update({name: secrets.token_urlsafe(32) for name in missing})
            write_private_file(path, json.dumps(stored, indent=2))
        path.chmod(0o600)
    except OSError as exc:
        raise HokusaiConfigurationError(
            f"The data directory {settings.resolved_data_dir} (HOKUSAI_DATA_DIR) cannot be used: "
            f"{exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}."
        ) from None
    overrides: dict[str, SecretStr | None] = {
        "key_pepper": settings.key_pepper,
        "assertion_secret": settings.assertion_secret,
        "mlflow_admin_password": settings.mlflow_admin_password,
    }
    values = {name: (overrides.get(name) or SecretStr(stored[name])).get_secret_value() for name in _SECRET_NAMES}
    return PlatformSecrets(
        key_pepper=values["key_pepper"].encode(),
        assertion_secret=values["assertion_secret"],
        mlflow_admin_password=values["mlflow_admin_password"],
        flask_secret_key=values["flask_secret_key"],
    )
