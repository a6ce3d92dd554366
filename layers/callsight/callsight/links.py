"""Recording links are untrusted input: which links may be fetched, and a fetch that cannot be steered elsewhere.

A note's link is whatever the telephony stored, or whatever someone typed. It is fetched only over http(s)
and only when **every** address its host resolves to is public, unless the operator allows a private
network or a host:port (a clinic's PBX on its LAN: :class:`PrivateHosts`). Cloud metadata addresses are
never fetched, whatever the allow-list says.

The connection goes to the address that was checked: the URL's host travels in the ``Host`` header and,
for https, as the TLS server name (the certificate is still verified for that name), so DNS cannot answer
a public address to the check and a private one to the connection. Redirects are followed here, at most
:data:`MAX_REDIRECTS`, each hop checked the same way. Errors name the host, never the path, query or
credentials of a link (signed links carry tokens).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final

import httpx

from callsight.errors import CallsightError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: host name and port -> every address it resolves to (injectable: tests map names to local servers)
Resolver = Callable[[str, int], list[IPAddress]]

MAX_REDIRECTS: Final = 5
DEFAULT_PORTS: Final = {"http": 80, "https": 443}
#: where cloud runtimes serve instance credentials and data (EC2/Lambda IMDS IPv4 and IPv6, ECS task
#: credentials, EKS pod identity, Alibaba): refused even when an allowed network holds them
METADATA_ADDRESSES: Final = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "fd00:ec2::254", "169.254.170.2", "169.254.170.23", "fd00:ec2::23", "100.100.100.200"))
_SHARED: Final = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")  # IPv4 addresses reached through a NAT64 gateway
_METADATA: Final = "a cloud metadata address"
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_HOST_NAME: Final = re.compile(r"(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))*")


class LinkError(CallsightError):
    """A link could not be fetched; the message names the host and the problem (never the path or query)."""


class LinkRefused(LinkError):
    """The link is not one we fetch: its scheme, its host, or an address its host resolves to."""


# ------------------------------------------------------------------------------------ addresses


def address_problem(address: IPAddress) -> str | None:
    """Why ``address`` is not a public one (e.g. "a loopback address"), or ``None`` when it is.

    IPv6 forms that carry an IPv4 address (IPv4-mapped, 6to4, NAT64) are judged by that address.
    """
    address = _embedded_ipv4(address)
    checks: tuple[tuple[bool, str], ...] = (
        (address in METADATA_ADDRESSES, _METADATA),
        (address.is_loopback, "a loopback address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address in _SHARED, "a carrier-grade NAT address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "not a public address"),
    )
    return next((problem for failed, problem in checks if failed), None)


def _embedded_ipv4(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return address


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address DNS (or /etc/hosts) gives ``host``, in the resolver's order, without duplicates."""
    found: dict[IPAddress, None] = {}
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        found[ipaddress.ip_address(str(sockaddr[0]))] = None
    return list(found)


# ----------------------------------------------------------------------------------- the policy


@dataclass(frozen=True)
class PrivateHosts:
    """The operator's exceptions to "public addresses only": networks (any port) and exact host:port pairs.

    Entries (template parameter ``RecordingPrivateHosts``): ``10.20.0.0/16`` or ``10.20.0.5`` (an address or
    network, any port), ``pbx.clinic.local:8080`` or ``127.0.0.1:8101`` (that host as the link names it, or
    that address, on that port only). A host:port entry never widens to other ports of the host.
    """

    networks: tuple[IPNetwork, ...] = ()
    host_ports: frozenset[tuple[str, int]] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> PrivateHosts:
        """From the setting's entries; raises ValueError naming the first entry that is neither form."""
        networks: list[IPNetwork] = []
        host_ports: set[tuple[str, int]] = set()
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            host_ports.add(_host_port(entry))
        return cls(tuple(networks), frozenset(host_ports))

    def allows(self, host: str, port: int, address: IPAddress) -> bool:
        """Whether a link to ``host:port`` may reach the non-public ``address``."""
        address = _embedded_ipv4(address)
        return (any(address in network for network in self.networks)
                or (host, port) in self.host_ports or (str(address), port) in self.host_ports)


def _host_port(entry: str) -> tuple[str, int]:
    host, separator, port_text = entry.rpartition(":")
    host = host.removeprefix("[").removesuffix("]").lower().rstrip(".")
    if not separator or not port_text.isdigit() or not 1 <= int(port_text) <= 65535 or not host:
        raise ValueError(f"private host entry {entry!r} is neither a network (10.20.0.0/16) nor host:port "
                         "(pbx.clinic.local:8080)")
    try:
        return str(ipaddress.ip_address(host)), int(port_text)
    except ValueError:
        pass
    if not _HOST_NAME.fullmatch(host):
        raise ValueError(f"private host entry {entry!r}: {host!r} is not a host name")
    return host, int(port_text)


@dataclass(frozen=True)
class CheckedLink:
    """A link that may be fetched: where it points and every address checked for it."""

    url: httpx.URL
    host: str  #: the host as the link names it (lower case, IDNA), the connection's Host header and TLS name
    port: int
    addresses: tuple[IPAddress, ...]

    @property
    def label(self) -> str:
        """How errors name the link: host and explicit port, nothing else (e.g. "rec.example.com:8443")."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.url.port}" if self.url.port is not None else host

    @property
    def is_ip_literal(self) -> bool:
        return _ip_or_none(self.host) is not None


class LinkPolicy:
    """Decides whether a link may be fetched: http(s), and every resolved address public or allowed."""

    def __init__(self, private_hosts: PrivateHosts | None = None, *, resolver: Resolver = system_resolver) -> None:
        self.private_hosts = private_hosts or PrivateHosts()
        self.resolver = resolver

    def check(self, link: str | httpx.URL) -> CheckedLink:
        """The link, checked; raises :class:`LinkRefused` saying why it is not fetched."""
        try:
            url = link if isinstance(link, httpx.URL) else httpx.URL(link.strip())
            host = url.raw_host.decode("ascii").lower().rstrip(".")
            port = url.port
        except (httpx.InvalidURL, UnicodeError, ValueError, TypeError):
            raise LinkRefused("the recording link is not a valid URL") from None
        if url.scheme not in DEFAULT_PORTS:
            known = re.fullmatch(r"[a-z][a-z0-9+.-]{0,15}", url.scheme)
            scheme = f"'s scheme is {url.scheme}" if known else " has no scheme"
            raise LinkRefused(f"the recording link{scheme}; only http and https are fetched")
        if not host:
            raise LinkRefused("the recording link has no host")
        port = port if port is not None else DEFAULT_PORTS[url.scheme]
        if not 1 <= port <= 65535:
            raise LinkRefused(f"the recording link's port {port} is not a TCP port")
        literal = _ip_or_none(host)
        if literal is None and not _HOST_NAME.fullmatch(host):
            raise LinkRefused("the recording link's host is not a valid host name")
        checked = CheckedLink(url=url, host=str(literal) if literal else host, port=port, addresses=())
        addresses = [literal] if literal is not None else self._resolve(checked)
        for address in addresses:
            self._check_address(checked, address)
        return CheckedLink(url=url, host=checked.host, port=port, addresses=tuple(addresses))

    def _resolve(self, link: CheckedLink) -> list[IPAddress]:
        try:
            addresses = self.resolver(link.host, link.port)
        except (OSError, UnicodeError, ValueError) as exc:
            raise LinkError(f"{link.label} cannot be resolved ({type(exc).__name__})") from None
        if not addresses:
            raise LinkError(f"{link.label} resolves to no address")
        return addresses

    def _check_address(self, link: CheckedLink, address: IPAddress) -> None:
        problem = address_problem(address)
        if problem is None:
            return
        if problem != _METADATA and self.private_hosts.allows(link.host, link.port, address):
            return
        where = f"{link.label} is" if link.is_ip_literal else f"{link.label} resolves to {address},"
        raise LinkRefused(f"{where} {problem}; recordings are fetched from public addresses only "
                          "(RecordingPrivateHosts allows a clinic's private PBX)")


def _ip_or_none(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


# ------------------------------------------------------------------------------------ the fetch


@dataclass(frozen=True)
class LinkAnswer:
    """The final (non-redirect) answer to a link, its body not read yet, and how errors name its host."""

    response: httpx.Response
    label: str


class LinkFetcher:
    """GETs untrusted links through ``http``: each hop checked by ``policy`` and connected to the checked address."""

    def __init__(self, http: httpx.Client, policy: LinkPolicy, *, max_redirects: int = MAX_REDIRECTS) -> None:
        self.http = http
        self.policy = policy
        self.max_redirects = max_redirects

    @contextmanager
    def get(self, link: str) -> Iterator[LinkAnswer]:
        """The link's final answer, streaming (closed on exit); raises :class:`LinkError` (refused, unreachable,
        too many redirects). Errors reading the body later are :class:`httpx.HTTPError`\\ s."""
        current = self.policy.check(link)
        redirects = 0
        while True:
            response = self._send(current)
            location = response.headers.get("location")
            if response.status_code not in _REDIRECT_STATUSES or not location:
                break
            response.close()
            redirects += 1
            if redirects > self.max_redirects:
                raise LinkError(f"{current.label} redirected more than {self.max_redirects} times")
            try:
                target = current.url.join(location)
            except (httpx.InvalidURL, UnicodeError, ValueError):
                raise LinkRefused(f"{current.label} redirected to an invalid URL") from None
            current = self.policy.check(target)
        try:
            yield LinkAnswer(response, current.label)
        finally:
            response.close()

    def _send(self, link: CheckedLink) -> httpx.Response:
        """GET the link from the first of its checked addresses that accepts a connection."""
        headers = {"Host": link.url.netloc.decode("ascii")}
        extensions: dict[str, str] = {}
        if link.url.scheme == "https":
            if not link.is_ip_literal:
                extensions["sni_hostname"] = link.host  # the certificate is verified for the name, not the address
            headers["Connection"] = "close"  # a TLS connection verified for one name is never reused for another
        failure: httpx.HTTPError | None = None
        for address in link.addresses:
            try:
                request = self.http.build_request("GET", link.url.copy_with(host=str(address)), headers=headers,
                                                  extensions=extensions)
                return self.http.send(request, stream=True, follow_redirects=False)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # try the next address
                failure = exc
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise LinkError(f"{type(exc).__name__} from {link.label}") from None
        raise LinkError(f"{type(failure).__name__ if failure else 'no connection'} from {link.label}")
