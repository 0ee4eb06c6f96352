"""Token claims against real SQLite and PostgreSQL: the primary-key insert decides every race."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from hokusai.server.db import Database
from hokusai.server.errors import ApiError
from hokusai.server.registry.claims import (
    TokenClaim,
    TokenHeld,
    claim_token,
    follow_model_rename,
    get_token,
    models_holding_tokens,
    move_claim,
    release_token,
    tokens_claiming_model,
    transfer_token,
)

RACERS = 8


def _race(database: Database, claims: list[tuple[str, str]]) -> list[TokenClaim | ApiError]:
    """Fire every (owner, model) claim on token RACE at once, released together by a barrier."""
    barrier = threading.Barrier(len(claims))

    def attempt(owner_and_model: tuple[str, str]) -> TokenClaim | ApiError:
        owner, model_name = owner_and_model
        barrier.wait()
        try:
            return claim_token(database, token_id="RACE", model_name=model_name, owner=owner)
        except ApiError as exc:
            return exc

    with ThreadPoolExecutor(len(claims)) as pool:
        return list(pool.map(attempt, claims))


def test_exactly_one_of_many_owners_wins_a_race(database: Database) -> None:
    outcomes = _race(database, [(f"user{i}", f"model-{i}") for i in range(RACERS)])

    winners = [outcome for outcome in outcomes if isinstance(outcome, TokenClaim)]
    losers = [outcome for outcome in outcomes if isinstance(outcome, ApiError)]
    assert len(winners) == 1 and winners[0].created
    assert len(losers) == RACERS - 1
    holder = get_token(database, token_id="RACE")
    assert holder is not None and holder.owner == winners[0].token.owner
    for loser in losers:
        assert (loser.status, loser.error_code) == (409, "TOKEN_ALREADY_CLAIMED")
        assert f"model '{holder.model_name}'" in loser.message
        assert holder.owner not in loser.message


def test_one_owner_racing_for_one_model_creates_once(database: Database) -> None:
    outcomes = _race(database, [("alice", "alice-model")] * RACERS)

    assert all(isinstance(outcome, TokenClaim) for outcome in outcomes)
    assert sum(outcome.created for outcome in outcomes if isinstance(outcome, TokenClaim)) == 1


def test_a_repeat_claim_is_idempotent_and_another_model_conflicts(database: Database) -> None:
    first = claim_token(database, token_id="TOK-1", model_name="m1", owner="alice")
    again = claim_token(database, token_id="TOK-1", model_name="m1", owner="alice")

    assert first.created and not again.created
    assert again.token.created_at == first.token.created_at
    with pytest.raises(TokenHeld) as conflict:
        claim_token(database, token_id="TOK-1", model_name="m2", owner="alice")
    assert conflict.value.message == (
        "Token 'TOK-1' is already claimed by your model 'm1'. A token belongs to one model: register new versions "
        "under 'm1', or choose another token id."
    )
    with pytest.raises(TokenHeld) as elsewhere:
        claim_token(database, token_id="TOK-1", model_name="m2", owner="bob")
    assert elsewhere.value.message == (
        "Token 'TOK-1' is already claimed by model 'm1'. A token belongs to one model: choose another token id, or "
        "ask an admin to transfer this one."
    )
    assert (conflict.value.holder.owner, conflict.value.holder.model_name) == ("alice", "m1")
    # Another account asking for the same model name: "claimed by model 'm1'" would name its own request back.
    with pytest.raises(TokenHeld) as same_name:
        claim_token(database, token_id="TOK-1", model_name="m1", owner="bob")
    assert same_name.value.message.startswith(
        "Token 'TOK-1' is already claimed by another account, under model name 'm1' (model names are shared by "
        "everyone, as in MLflow)."
    )
    assert "alice" not in same_name.value.message


def test_release_only_removes_the_expected_claim(database: Database) -> None:
    claim_token(database, token_id="TOK-2", model_name="m1", owner="alice")

    assert release_token(database, token_id="TOK-2", owner="bob") is None
    assert release_token(database, token_id="TOK-2", owner="alice", model_name="other") is None
    assert get_token(database, token_id="TOK-2") is not None
    released = release_token(database, token_id="TOK-2", owner="alice", model_name="m1")
    assert released is not None and released.owner == "alice"
    assert get_token(database, token_id="TOK-2") is None
    assert claim_token(database, token_id="TOK-2", model_name="m9", owner="bob").created


def test_transfer_moves_owner_and_model(database: Database) -> None:
    claim_token(database, token_id="TOK-3", model_name="m1", owner="alice")

    moved = transfer_token(database, token_id="TOK-3", new_owner="bob", model_name="m2")

    assert moved is not None
    token, previous_owner = moved
    assert (token.owner, token.model_name, previous_owner) == ("bob", "m2", "alice")
    stored = get_token(database, token_id="TOK-3")
    assert stored is not None and (stored.owner, stored.model_name) == ("bob", "m2")
    assert stored.updated_at >= stored.created_at
    assert transfer_token(database, token_id="NOPE", new_owner="bob") is None


def test_models_holding_tokens_by_token_owner_or_both(database: Database) -> None:
    claim_token(database, token_id="A", model_name="m-a", owner="alice")
    claim_token(database, token_id="B", model_name="m-b", owner="alice")
    claim_token(database, token_id="C", model_name="m-c", owner="bob")

    assert models_holding_tokens(database, token_ids=["A", "C", "NONE"]) == {"A": "m-a", "C": "m-c"}
    assert models_holding_tokens(database, owner="alice") == {"A": "m-a", "B": "m-b"}
    assert models_holding_tokens(database, token_ids=["C"], owner="alice") == {}
    assert models_holding_tokens(database, token_ids=set()) == {}
    release_token(database, token_id="A")
    assert models_holding_tokens(database, token_ids={"A", "B"}) == {"B": "m-b"}


def test_a_rename_moves_the_claims_named_on_the_model_and_no_other(database: Database) -> None:
    for token_id, model_name in (("R1", "old"), ("R2", "old"), ("R3", "old"), ("R4", "older")):
        claim_token(database, token_id=token_id, model_name=model_name, owner="alice")

    assert tokens_claiming_model(database, model_name="old") == ["R1", "R2", "R3"]
    assert follow_model_rename(database, old_name="old", new_name="new", token_ids=["R1", "R2", "R4"]) == ["R1", "R2"]
    assert models_holding_tokens(database, owner="alice") == {"R1": "new", "R2": "new", "R3": "old", "R4": "older"}
    assert follow_model_rename(database, old_name="gone", new_name="new", token_ids=["R1"]) == []


def test_a_claim_moves_only_from_the_model_and_owner_expected(database: Database) -> None:
    claim_token(database, token_id="MV", model_name="m1", owner="alice")

    assert move_claim(database, token_id="MV", owner="bob", from_model="m1", to_model="m2") is None
    assert move_claim(database, token_id="MV", owner="alice", from_model="m0", to_model="m2") is None
    assert move_claim(database, token_id="NONE", owner="alice", from_model="m1", to_model="m2") is None
    moved = move_claim(database, token_id="MV", owner="alice", from_model="m1", to_model="m2")
    assert moved is not None and (moved.owner, moved.model_name) == ("alice", "m2")
    assert models_holding_tokens(database, token_ids=["MV"]) == {"MV": "m2"}
