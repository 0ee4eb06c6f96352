"""MLflow admin power follows the key, not the owner; part of `hokusai.mlflow_auth`.

MLflow keeps one admin flag per user, and an owner becomes an MLflow admin the first time one of their admin keys
is used. Left alone, that flag would also empower the same owner's read/write keys, and would outlive the revocation
of the admin key. So for the user the current request's assertion names, the admin flag MLflow reads is the
flag in its store AND the assertion's `adm` claim (set only for admin keys). Rows of other users (targets of admin
calls, listings) and Basic logins are left as stored.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from hokusai.server.assertion import Identity

# The identity the current request's assertion names, set by `hokusai.mlflow_auth.authenticate_request`. A context
# variable rather than `flask.g`: MLflow's native routes run their permission checks in worker threads outside any
# Flask context, and asyncio copies contexts there.
asserted_identity: ContextVar[Identity | None] = ContextVar("hokusai_asserted_identity", default=None)


def admin_only_if_asserted(user: Any) -> Any:
    """`user` as the current request may act: an admin only if its assertion says so too."""
    identity = asserted_identity.get()
    if not user.is_admin or identity is None or identity.username != user.username or identity.is_admin:
        return user
    from mlflow.server.auth.entities import User

    return User(id_=user.id, username=user.username, password_hash=user.password_hash, is_admin=False)


def install_admin_claim(mlflow_auth_app: Any) -> None:
    store = mlflow_auth_app.store
    if getattr(store.get_user, "_hokusai_admin_claim", False):
        return
    get_user = store.get_user

    def get_user_as_asserted(username: str) -> Any:
        return admin_only_if_asserted(get_user(username))

    get_user_as_asserted._hokusai_admin_claim = True  # type: ignore[attr-defined]
    store.get_user = get_user_as_asserted
