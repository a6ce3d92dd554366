"""Recording links are untrusted: the address policy, the allow-list, redirects, DNS rebinding and the pinned
https fetch, against small real local servers (a transport that reaches loopback only keeps every test on the
machine and records where each request went)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from callsight.links import LinkError, LinkFetcher, LinkPolicy, LinkRefused, PrivateHosts, address_problem
from tests.recording_links import FakeDns, LinkServer, LocalOnly, Route, make_certificates

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt "


@pytest.fixture
def server() -> Iterator[LinkServer]:
    with LinkServer({"/r.wav": Route(body=WAV), "/internal-secret": Route(body=b"internal-secret",
                                                                          content_type="text/plain")}) as running:
        yield running


@pytest.fixture
def transport() -> LocalOnly:
    return LocalOnly()


def fetch(link: str, transport: LocalOnly, *, allow: list[str] | None = None, dns: FakeDns | None = None,
          max_redirects: int = 5) -> tuple[int, bytes]:
    policy = LinkPolicy(PrivateHosts.parse(allow or []), **({"resolver": dns} if dns else {}))
    with httpx.Client(transport=transport, timeout=10) as http, \
            LinkFetcher(http, policy, max_redirects=max_redirects).get(link) as answer:
        return answer.response.status_code, answer.response.read()


@pytest.mark.parametrize(("address", "problem"), [
    ("127.0.0.1", "a loopback address"), ("127.8.9.10", "a loopback address"), ("::1", "a loopback address"),
    ("10.1.2.3", "a private address"), ("172.16.5.4", "a private address"), ("192.168.1.10", "a private address"),
    ("fc00::5", "a private address"), ("169.254.10.10", "a link-local address"), ("fe80::1", "a link-local address"),
    ("169.254.169.254", "a cloud metadata address"), ("fd00:ec2::254", "a cloud metadata address"),
    ("100.64.0.1", "a carrier-grade NAT address"), ("224.0.0.251", "a multicast address"),
    ("ff02::1", "a multicast address"), ("0.0.0.0", "an unspecified address"), ("::", "an unspecified address"),
    ("240.0.0.1", "a private address"), ("198.18.0.1", "a private address"),
    ("::ffff:127.0.0.1", "a loopback address"), ("::ffff:169.254.169.254", "a cloud metadata address"),
    ("2002:a00:1::", "a private address"), ("64:ff9b::a00:1", "a private address"),
])
def test_every_kind_of_non_public_address_is_named(address: str, problem: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) == problem


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2a00:1450:4001:82b::200e", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


def test_the_allow_list_reads_networks_and_host_ports_and_names_a_bad_entry() -> None:
    hosts = PrivateHosts.parse([" 10.20.0.0/16", "PBX.Clinic.Local:8080", "127.0.0.1:8101", "[fd00::7]:443", ""])
    ip = ipaddress.ip_address
    assert hosts.allows("anything", 1, ip("10.20.3.4")) and not hosts.allows("anything", 1, ip("10.21.0.1"))
    assert hosts.allows("pbx.clinic.local", 8080, ip("192.168.0.9"))
    assert not hosts.allows("pbx.clinic.local", 8081, ip("192.168.0.9"))  # a host:port never widens to its ports
    assert hosts.allows("other.name", 8101, ip("127.0.0.1")) and not hosts.allows("x", 8102, ip("127.0.0.1"))
    assert hosts.allows("fd00::7", 443, ip("fd00::7"))
    for bad in ("pbx.local", "pbx.local:99999", "pbx local:80", ":80"):
        with pytest.raises(ValueError, match="private host entry") as raised:
            PrivateHosts.parse([bad])
        assert bad in str(raised.value)


@pytest.mark.parametrize("link", ["http://10.1.2.3/rec.mp3", "http://169.254.169.254/latest/meta-data/",
                                  "http://[fd00:ec2::254]/latest/", "http://[::ffff:10.0.0.1]:8080/r.wav",
                                  "http://0.0.0.0:8000/r.wav"])
def test_a_private_address_literal_is_refused_without_dns_or_a_connection(link: str, transport: LocalOnly) -> None:
    dns = FakeDns({})
    with pytest.raises(LinkRefused, match="public addresses only"):
        fetch(link, transport, dns=dns)
    assert dns.calls == [] and transport.sent == []


def test_loopback_on_a_port_not_allowed_is_refused_and_the_server_sees_nothing(
        server: LinkServer, transport: LocalOnly) -> None:
    with pytest.raises(LinkRefused) as refused:
        fetch(f"{server.url}/internal-secret", transport, allow=[f"127.0.0.1:{server.port + 1}"])
    assert str(refused.value).startswith(f"{server.host_port} is a loopback address")
    assert server.requests == [] and transport.sent == []


def test_localhost_by_name_is_refused_after_resolving_it(server: LinkServer, transport: LocalOnly) -> None:
    with pytest.raises(LinkRefused, match=rf"localhost:{server.port} resolves to .*a loopback address"):
        fetch(f"http://localhost:{server.port}/r.wav", transport)  # the system resolver: /etc/hosts
    assert server.requests == [] and transport.sent == []


def test_metadata_addresses_stay_refused_even_inside_an_allowed_network(transport: LocalOnly) -> None:
    with pytest.raises(LinkRefused, match="a cloud metadata address"):
        fetch("http://169.254.169.254/latest/api/token", transport, allow=["169.254.0.0/16"])
    assert transport.sent == []


@pytest.mark.parametrize("link", ["ftp://pbx.example/r.mp3", "file:///etc/passwd", "gopher://pbx.example/",
                                  "javascript:alert(1)", "data:audio/wav;base64,UklGRg=="])
def test_only_http_and_https_are_fetched(link: str, transport: LocalOnly) -> None:
    with pytest.raises(LinkRefused, match="only http and https"):
        fetch(link, transport)
    assert transport.sent == []


@pytest.mark.parametrize("link", ["http://", "not a link", "http://pbx.example:99999/r.wav", "http://exa mple.com/",
                                  "http://[::1/"])
def test_a_malformed_link_is_refused(link: str, transport: LocalOnly) -> None:
    with pytest.raises(LinkRefused):
        fetch(link, transport)
    assert transport.sent == []


def test_an_allowed_host_port_and_an_allowed_network_are_fetched(server: LinkServer, transport: LocalOnly) -> None:
    assert fetch(f"{server.url}/r.wav", transport, allow=[server.host_port]) == (200, WAV)
    assert fetch(f"{server.url}/r.wav", transport, allow=["127.0.0.0/8"]) == (200, WAV)
    assert [path for path, _ in server.requests] == ["/r.wav", "/r.wav"]


def test_a_name_reaches_a_private_address_only_through_its_allow_entry(
        server: LinkServer, transport: LocalOnly) -> None:
    dns = FakeDns({"pbx.clinic.example": ["127.0.0.1"]})
    link = f"http://pbx.clinic.example:{server.port}/r.wav"
    refusal = f"pbx.clinic.example:{server.port} resolves to 127.0.0.1, a loopback address"
    with pytest.raises(LinkRefused, match=re.escape(refusal)):
        fetch(link, transport, dns=dns)
    assert server.requests == []
    assert fetch(link, transport, dns=dns, allow=[f"pbx.clinic.example:{server.port}"]) == (200, WAV)
    assert server.requests == [("/r.wav", f"pbx.clinic.example:{server.port}")]  # the name travels as Host


def test_every_resolved_address_must_pass(transport: LocalOnly) -> None:
    dns = FakeDns({"mixed.example": ["93.184.216.34", "10.0.0.8"]})
    with pytest.raises(LinkRefused, match=re.escape("resolves to 10.0.0.8, a private address")):
        fetch("http://mixed.example/r.wav", transport, dns=dns)
    assert transport.sent == []


def test_dns_rebinding_cannot_move_the_connection_to_a_private_address(
        server: LinkServer, transport: LocalOnly) -> None:
    dns = FakeDns({"rebind.example": lambda call: ["93.184.216.34"] if call == 1 else ["127.0.0.1"]})
    with pytest.raises(LinkError, match=re.escape(f"ConnectError from rebind.example:{server.port}")):
        fetch(f"http://rebind.example:{server.port}/internal-secret", transport, dns=dns)
    assert len(dns.calls) == 1  # resolved once, for the check
    assert [(s.address, s.host_header) for s in transport.sent] == [
        ("93.184.216.34", f"rebind.example:{server.port}")]  # connected to the checked address only
    assert server.requests == []


def test_a_redirect_to_a_private_address_is_refused(server: LinkServer, transport: LocalOnly) -> None:
    with LinkServer({"/internal-secret": Route(body=b"internal-secret", content_type="text/plain")}) as internal:
        server.routes["/signed.mp3"] = Route(302, headers={"Location": f"{internal.url}/internal-secret"})
        with pytest.raises(LinkRefused, match=re.escape(f"{internal.host_port} is a loopback address")):
            fetch(f"{server.url}/signed.mp3?token=abc", transport, allow=[server.host_port])
        assert internal.requests == [] and [path for path, _ in server.requests] == ["/signed.mp3?token=abc"]


def test_redirects_are_followed_and_capped(server: LinkServer, transport: LocalOnly) -> None:
    server.routes["/moved"] = Route(301, headers={"Location": "/r.wav"})
    assert fetch(f"{server.url}/moved", transport, allow=[server.host_port]) == (200, WAV)
    server.routes["/loop"] = Route(302, headers={"Location": "/loop"})
    with pytest.raises(LinkError, match=re.escape(f"{server.host_port} redirected more than 3 times")):
        fetch(f"{server.url}/loop", transport, allow=[server.host_port], max_redirects=3)
    assert [path for path, _ in server.requests].count("/loop") == 4


def test_errors_name_the_host_never_the_path_query_or_credentials(transport: LocalOnly) -> None:
    dns = FakeDns({"rec.example": ["10.9.9.9"]})
    with pytest.raises(LinkRefused) as refused:
        fetch("http://admin:pa55word@rec.example:8443/calls/4711.mp3?X-Amz-Signature=deadbeef", transport, dns=dns)
    message = str(refused.value)
    assert message.startswith("rec.example:8443 resolves to 10.9.9.9")
    assert not any(secret in message for secret in ("admin", "pa55word", "4711", "Signature", "deadbeef"))


def test_https_connects_to_the_checked_address_and_verifies_the_certificate_for_the_name(
        tmp_path: Path) -> None:
    certificates = make_certificates("pbx.clinic.example")
    with LinkServer({"/r.wav": Route(body=WAV)}, tls=certificates.server_context(tmp_path)) as tls_server:
        dns = FakeDns({"pbx.clinic.example": ["127.0.0.1"], "other.example": ["127.0.0.1"]})
        transport = LocalOnly(httpx.HTTPTransport(verify=certificates.client_context()))
        link = f"https://pbx.clinic.example:{tls_server.port}/r.wav"
        assert fetch(link, transport, dns=dns, allow=["127.0.0.1/32"]) == (200, WAV)
        assert transport.sent[-1].address == "127.0.0.1" and transport.sent[-1].sni == "pbx.clinic.example"
        assert tls_server.requests == [("/r.wav", f"pbx.clinic.example:{tls_server.port}")]
        # the same address under a name the certificate does not hold: the TLS check fails, nothing is asked
        with pytest.raises(LinkError, match=re.escape(f"ConnectError from other.example:{tls_server.port}")):
            fetch(f"https://other.example:{tls_server.port}/r.wav", transport, dns=dns, allow=["127.0.0.1/32"])
        assert len(tls_server.requests) == 1
