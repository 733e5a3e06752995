import asyncio

from stream.s3.client import Target, target_client, target_session
from stream.settings import S3Settings

S3 = S3Settings(region="eu-west-1")


def role(name, arn, external_id=None):
    return Target(name, f"bucket-{name}", "eu-west-1", "http://127.0.0.1:9", arn, external_id)


async def signing(target):
    """The credentials the target's client signs with, and its session's model loader."""
    async with target_client(target, S3) as client:
        return client._request_signer._credentials, target_session(target)._session.get_component("data_loader")


def fetched_as(creds):
    """(role, session name, external id) an assumed role's credentials are fetched as."""
    fetcher = creds._refresh_using.__self__
    return fetcher._role_arn, fetcher._assume_kwargs["RoleSessionName"], fetcher._assume_kwargs.get("ExternalId")


def test_targets_with_their_own_roles_sign_with_their_own_credentials_and_share_the_models(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "worker-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "worker-secret")

    async def go():
        own, a, b, a_again = [await signing(t) for t in (
            Target("plain", "plain", "eu-west-1"), role("a", "arn:aws:iam::111111111111:role/a", "ext-a"),
            role("b", "arn:aws:iam::222222222222:role/b"), role("a", "arn:aws:iam::111111111111:role/a", "ext-a"))]
        assert (own[0].access_key, own[0].secret_key) == ("worker-key", "worker-secret")
        assert fetched_as(a[0]) == ("arn:aws:iam::111111111111:role/a", "stream-a", "ext-a")
        assert fetched_as(b[0]) == ("arn:aws:iam::222222222222:role/b", "stream-b", None)
        assert a[0] is not b[0] and a_again[0] is a[0]      # one assumed role per credentials, not per client
        assert own[1] is a[1] is b[1]                       # one parsed copy of the models for all
    asyncio.run(go())


def test_same_role_under_another_name_is_assumed_under_its_own_session_name():
    async def go():
        x = target_session(role("x", "arn:aws:iam::111111111111:role/a"))
        y = target_session(role("y", "arn:aws:iam::111111111111:role/a"))
        assert x is not y
        assert fetched_as(y._session._credentials)[1] == "stream-y"
    asyncio.run(go())


def test_each_event_loop_gets_its_own_sessions_and_a_session_outside_a_loop_is_new():
    target = Target("plain", "plain", "eu-west-1")

    async def one():
        return target_session(target), target_session(target)
    first, second = asyncio.run(one()), asyncio.run(one())
    assert first[0] is first[1] and second[0] is second[1] and first[0] is not second[0]
    assert target_session(target) is not target_session(target)
