"""Who may run what on a Space: the pure rules in benchmark/access.py."""

from __future__ import annotations

import pytest

from benchmark.app import access
from benchmark.config import RunConfig
from benchmark.errors import AccessDenied, ConfigError

# The variables a Docker Space with `hf_oauth: true` receives (dummy values).
SPACE = {
    "SYSTEM": "spaces",
    "SPACE_ID": "alice/tgi-benchmark",
    "SPACE_AUTHOR_NAME": "alice",
    "SPACE_HOST": "alice-tgi-benchmark.hf.space",
    "OAUTH_CLIENT_ID": "dummy-client-id",
    "OAUTH_CLIENT_SECRET": "dummy-secret",
    "OAUTH_SCOPES": "openid profile",
    "OPENID_PROVIDER_URL": "https://huggingface.co",
}


def space(**extra: str) -> dict[str, str]:
    return {**SPACE, **extra}


def test_locally_everyone_runs_without_signing_in():
    rules = access.decide({}, None)
    assert rules.can_run and rules.can_use_endpoint
    assert rules.max_endpoint_requests is None
    assert rules.request_cap(endpoint=True) is None
    assert not access.is_space({})
    rules.require_run()
    rules.require_endpoint()


@pytest.mark.parametrize("env", [{"SYSTEM": "spaces"}, {"SPACE_ID": "a/b"}, {"SYSTEM": "Spaces"}])
def test_either_variable_marks_a_space(env):
    assert access.is_space(env)


def test_anonymous_visitor_on_a_space_is_told_to_sign_in():
    rules = access.decide(space(), None)
    assert not rules.can_run and not rules.can_use_endpoint
    assert rules.reason == ("Sign in with Hugging Face to run benchmarks, or duplicate this "
                            "Space to run your own.")
    with pytest.raises(AccessDenied, match="Sign in with Hugging Face"):
        rules.require_run()
    with pytest.raises(AccessDenied):
        rules.require_endpoint()


@pytest.mark.parametrize("name", ["", "   ", None])
def test_blank_username_counts_as_anonymous(name):
    assert access.decide(space(), name).reason == access.SIGN_IN_MESSAGE


@pytest.mark.parametrize("name", ["alice", "Alice", " ALICE "])
def test_owner_may_run_whatever_the_case(name):
    rules = access.decide(space(), name)
    assert rules.can_run and rules.can_use_endpoint
    assert "owner" in rules.reason


def test_allowed_users_list_is_comma_or_space_separated_and_case_insensitive():
    env = space(ALLOWED_USERS="Bob, @carol  dave;erin")
    for name in ("bob", "BOB", "carol", "Dave", "erin"):
        rules = access.decide(env, name)
        assert rules.can_run, name
        assert "ALLOWED_USERS" in rules.reason
    assert access.allowed_users(env) == {"bob", "carol", "dave", "erin"}


def test_other_signed_in_user_cannot_run_and_is_told_why():
    rules = access.decide(space(ALLOWED_USERS="bob"), "mallory")
    assert not rules.can_run and not rules.can_use_endpoint
    assert "mallory" in rules.reason and "alice" in rules.reason
    assert "ALLOWED_USERS" in rules.reason and "duplicate this Space" in rules.reason
    with pytest.raises(AccessDenied, match="mallory"):
        rules.require_run()


def test_a_name_that_only_contains_an_allowed_name_is_not_allowed():
    assert not access.decide(space(ALLOWED_USERS="bob"), "bobby").can_run
    assert not access.decide(space(), "alice2").can_run


def test_star_lets_every_signed_in_visitor_run_but_not_anonymous_ones():
    env = space(ALLOWED_USERS="*")
    assert access.decide(env, "anyone").can_run
    assert not access.decide(env, None).can_run


def test_star_does_not_open_endpoint_runs_to_strangers():
    """'*' lets anyone run on the Space's own server, not aim it at other addresses."""
    stranger = access.decide(space(ALLOWED_USERS="*, bob"), "anyone")
    assert stranger.can_run and not stranger.can_use_endpoint
    assert "only for the owner and users named in ALLOWED_USERS" in stranger.reason
    assert access.decide(space(ALLOWED_USERS="*, bob"), "bob").can_use_endpoint


def test_members_of_an_owning_organization_count_as_owner():
    env = space(SPACE_AUTHOR_NAME="acme-labs")
    assert access.decide(env, "zoe", orgs=["acme-labs"]).can_run
    assert not access.decide(env, "zoe", orgs=["other"]).can_run


def test_space_without_sign_in_lets_nobody_run_and_names_the_fix():
    env = {k: v for k, v in SPACE.items() if not k.startswith("OAUTH")}
    assert not access.oauth_enabled(env)
    rules = access.decide(env, "alice")
    assert not rules.can_run
    assert "hf_oauth: true" in rules.reason
    assert access.oauth_enabled(SPACE)
    assert not access.oauth_enabled({"OAUTH_CLIENT_ID": "x"})  # not a Space: Gradio mocks it


def test_endpoint_runs_on_a_space_are_capped_by_default():
    rules = access.decide(space(), "alice")
    assert rules.max_endpoint_requests == access.DEFAULT_MAX_ENDPOINT_REQUESTS == 2000
    assert rules.request_cap(endpoint=True) == 2000
    assert rules.request_cap(endpoint=False) is None


def test_cap_from_the_environment_is_enforced_by_run_config():
    rules = access.decide(space(MAX_ENDPOINT_REQUESTS="100"), "alice")
    cap = rules.request_cap(endpoint=True)
    assert cap == 100
    small = RunConfig(tokenizer_name="t", batch_sizes=(1, 2), runs=10, warmups=1,
                      max_total_requests=cap)
    assert small.validate() is small  # 33 requests
    big = RunConfig(tokenizer_name="t", batch_sizes=(1, 2, 4, 8, 16, 32), runs=10,
                    max_total_requests=cap)
    with pytest.raises(ConfigError, match="limit here is 100"):
        big.validate()
    unbounded = RunConfig(tokenizer_name="t", mode="concurrency", duration_s=60.0,
                          max_total_requests=cap)
    with pytest.raises(ConfigError, match="unbounded"):
        unbounded.validate()


def test_cap_can_be_set_locally_too():
    assert access.decide({"MAX_ENDPOINT_REQUESTS": "5_000"}, None).max_endpoint_requests == 5000


@pytest.mark.parametrize("value", ["lots", "0", "-3", "1.5"])
def test_mistyped_cap_turns_endpoint_runs_off_instead_of_lifting_the_limit(value):
    with pytest.raises(ConfigError, match="MAX_ENDPOINT_REQUESTS"):
        access.max_endpoint_requests(space(MAX_ENDPOINT_REQUESTS=value))
    rules = access.decide(space(MAX_ENDPOINT_REQUESTS=value), "alice")
    assert rules.can_run and not rules.can_use_endpoint
    assert "MAX_ENDPOINT_REQUESTS" in rules.reason
    assert rules.max_endpoint_requests == 2000
    anonymous = access.decide(space(MAX_ENDPOINT_REQUESTS=value), None)
    assert not anonymous.can_run and "Sign in" in anonymous.reason


@pytest.mark.parametrize("value,expected", [
    (None, False), ("", False), ("0", False), ("false", False), ("no", False),
    ("1", True), ("true", True), ("YES", True), (" on ", True),
])
def test_trust_remote_code_is_off_unless_the_owner_allows_it(value, expected):
    env = {} if value is None else {"ALLOW_TRUST_REMOTE_CODE": value}
    assert access.allow_trust_remote_code(env) is expected


def test_mistyped_trust_remote_code_switch_is_an_error_not_a_yes():
    with pytest.raises(ConfigError, match="ALLOW_TRUST_REMOTE_CODE"):
        access.allow_trust_remote_code({"ALLOW_TRUST_REMOTE_CODE": "maybe"})


def test_trust_remote_code_flag_reaches_server_settings_validation():
    from benchmark.config import ServerSettings

    settings = ServerSettings(model_id="org/model", trust_remote_code=True)
    with pytest.raises(ConfigError, match="ALLOW_TRUST_REMOTE_CODE"):
        settings.validate(allow_trust_remote_code=access.allow_trust_remote_code(space()))
    allowed = access.allow_trust_remote_code(space(ALLOW_TRUST_REMOTE_CODE="1"))
    assert settings.validate(allow_trust_remote_code=allowed) is settings


def test_space_url_for_share_links():
    assert access.space_url(SPACE) == "https://alice-tgi-benchmark.hf.space"
    assert access.space_url({"SPACE_HOST": "x.hf.space"}) is None
    assert access.space_url({"SYSTEM": "spaces"}) is None


def test_owner_name_comes_from_space_author_name():
    assert access.owner(SPACE) == "alice"
    assert access.owner({}) is None
