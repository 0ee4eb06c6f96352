"""Moving a token to another owner when MLflow refuses the hand-over halfway: the retry must finish the job."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from sqlalchemy import select

from hokusai.server.audit import AuditLog, Caller
from hokusai.server.db import Database
from hokusai.server.errors import ApiError
from hokusai.server.keys import KeyStore, Principal
from hokusai.server.models import AuditEvent, Token
from hokusai.server.registry import transfers
from hokusai.server.registry.claims import claim_token, get_token
from hokusai.server.registry.transfers import transfer
from hokusai.server.upstream import UpstreamError
from hokusai.validation import parse_scopes

ADMIN = Principal(key_id="key_admin", owner="admin", scopes=parse_scopes("admin"), prefix="hk_live_a", expires_at=None)


class _FlakyMlflow:
    """Refuses the first hand-over (as MLflow might, halfway through its grants), then accepts."""

    def __init__(self) -> None:
        self.hand_overs: list[tuple[str, str, str | None]] = []

    async def hand_over_registered_model(self, model_name: str, *, new_owner: str, previous_owner: str | None) -> None:
        self.hand_overs.append((model_name, new_owner, previous_owner))
        if len(self.hand_overs) == 1:
            raise UpstreamError("POST permissions/revoke failed with 500")


@pytest.fixture(autouse=True)
def _carried(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model still carries the token: these stand-ins for MLflow answer hand-overs, not version searches (the
    check itself is shown against a real MLflow in tests/live/test_registry_api.py)."""

    async def carried(**_: object) -> None:
        return None

    monkeypatch.setattr(transfers, "_require_carrier", carried)


def _transfers_of_alices_token(
    database: Database, mlflow: object, *owners: str
) -> Callable[[str], Coroutine[Any, Any, Token]]:
    """Token CHURN held by alice's model `churn`, accounts for `owners`; returns an admin's transfer to one of them."""
    keys = KeyStore(database, b"pepper", cache_ttl=10.0)
    for owner in owners:
        keys.create(owner=owner, name=owner, scopes=parse_scopes("read,write"))
    claim_token(database, token_id="CHURN", model_name="churn", owner="alice")
    audit, caller = AuditLog(database), Caller(principal=ADMIN, request_id=None)

    def transfer_to(new_owner: str) -> Coroutine[Any, Any, Token]:
        return transfer(
            database=database,
            keys=keys,
            upstream=mlflow,  # type: ignore[arg-type]
            audit=audit,
            caller=caller,
            token_id="CHURN",
            new_owner=new_owner,
            model_name=None,
        )

    return transfer_to


def test_a_retried_transfer_still_withdraws_the_first_owners_rights(database: Database) -> None:
    mlflow = _FlakyMlflow()
    transfer_to = _transfers_of_alices_token(database, mlflow, "bob")

    with pytest.raises(ApiError) as refused:
        asyncio.run(transfer_to("bob"))
    held_after_refusal = get_token(database, token_id="CHURN")
    moved = asyncio.run(transfer_to("bob"))

    assert refused.value.status == 502
    assert "token 'CHURN' still belongs to 'alice'; retry" in refused.value.message
    assert held_after_refusal is not None and held_after_refusal.owner == "alice"
    assert mlflow.hand_overs == [("churn", "bob", "alice"), ("churn", "bob", "alice")]  # alice's grant is withdrawn
    assert moved.owner == "bob"
    with database.session() as session:
        trail = [(event.action, event.detail) for event in session.scalars(select(AuditEvent))]
    assert [action for action, _ in trail] == ["token.transfer"]
    assert '"from": "alice"' in trail[0][1] and '"to": "bob"' in trail[0][1]


class _SlowMlflow:
    """Accepts every hand-over, yielding mid-way as a real one would while it waits on MLflow."""

    def __init__(self) -> None:
        self.hand_overs: list[tuple[str, str, str | None]] = []

    async def hand_over_registered_model(self, model_name: str, *, new_owner: str, previous_owner: str | None) -> None:
        await asyncio.sleep(0.01)
        self.hand_overs.append((model_name, new_owner, previous_owner))


def test_two_transfers_at_once_each_withdraw_the_owner_before_them(database: Database) -> None:
    mlflow = _SlowMlflow()
    transfer_to = _transfers_of_alices_token(database, mlflow, "bob", "carol")

    async def both() -> None:
        await asyncio.gather(transfer_to("bob"), transfer_to("carol"))

    asyncio.run(both())

    # One after the other, in whichever order: the second hand-over withdraws the first new owner, so only the last
    # new owner holds MANAGE at the end.
    (_, first_to, first_from), (_, second_to, second_from) = mlflow.hand_overs
    assert (first_from, second_from) == ("alice", first_to)
    assert {first_to, second_to} == {"bob", "carol"}
    held = get_token(database, token_id="CHURN")
    assert held is not None and held.owner == second_to


def test_the_previous_owner_keeps_the_model_while_they_hold_other_tokens_on_it(database: Database) -> None:
    """Alice's model carries CHURN and RETAIN: handing CHURN to bob must not lock her out of RETAIN's model."""
    mlflow = _SlowMlflow()
    transfer_to = _transfers_of_alices_token(database, mlflow, "bob")
    claim_token(database, token_id="RETAIN", model_name="churn", owner="alice")

    asyncio.run(transfer_to("bob"))

    assert mlflow.hand_overs == [("churn", "bob", None)]  # bob gets MANAGE; alice's grant stays
    with database.session() as session:
        (detail,) = [event.detail for event in session.scalars(select(AuditEvent))]
    assert '"previous_owner_keeps_model_for": ["RETAIN"]' in detail
    held = get_token(database, token_id="RETAIN")
    assert held is not None and held.owner == "alice"
