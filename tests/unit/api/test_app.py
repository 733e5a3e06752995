"""The client address used for Amplitude's `ip: $remote`: the peer, or the load balancer's X-Forwarded-For."""

from aiohttp.test_utils import make_mocked_request

from stream.api.app import _client_ip


def request(headers):
    class Transport:
        def get_extra_info(self, name, default=None):
            return ("198.51.100.7", 51000) if name == "peername" else default
    return make_mocked_request("POST", "/2/httpapi", headers=headers, transport=Transport())


def test_the_peer_address_unless_forwarded_for_is_trusted():
    r = request({"X-Forwarded-For": "203.0.113.9, 10.0.0.2"})
    assert _client_ip(r, trust_forwarded_for=False) == "198.51.100.7"
    assert _client_ip(r, trust_forwarded_for=True) == "10.0.0.2"   # the entry the load balancer appended
    assert _client_ip(request({}), trust_forwarded_for=True) == "198.51.100.7"
