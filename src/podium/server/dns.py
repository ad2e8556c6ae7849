"""The service DNS server: `NAME.service.podium` from the catalog's healthy endpoints.

    UDP / TCP query -> dnspython parse -> answer(catalog) -> wire (truncated over UDP)

Names:
  NAME.service.podium        A / AAAA: the addresses of healthy copies of NAME in namespace
                             "default"; SRV: one record per copy (weight from the endpoint,
                             its port, target HEX.addr.podium with the address in the
                             additional section)
  NAME.NS.service.podium     the same, of service NAME in namespace NS
  TAG.NAME.service.podium    only copies whose service carries TAG ("default"; when NAME is
                             also a namespace holding a service TAG, that one is answered)
  TAG.NAME.NS.service.podium the same, in namespace NS
  HEXIP.addr.podium          A / AAAA of that address (SRV targets)
Unknown names in the domain get NXDOMAIN (with the SOA, for negative caching); a service
that is declared but has no healthy copy gets an empty answer. Anything outside the
domain is REFUSED: this is not an open resolver. TTLs are small (default 2 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import struct
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from podium.server.catalog import Catalog, Endpoint

log = logging.getLogger(__name__)

UDP_MAX = 512  # without EDNS
TCP_IDLE = 10.0  # seconds a TCP client may stay silent


@dataclass(frozen=True)
class DnsConfig:
    host: str = "127.0.0.1"
    port: int = 8600  # 0 = any free port (tests)
    domain: str = "podium"
    ttl: int = 2  # seconds; 0 to 5
    namespace: str = "default"


class DnsServer:
    """Answers over UDP and TCP on one port; `started` is set once both listen."""

    def __init__(self, catalog: Catalog, config: DnsConfig, *, fallback: bool = False) -> None:
        if not 0 <= config.ttl <= 5:
            raise ValueError(f"dns ttl: expected 0 to 5 seconds, got {config.ttl}")
        self.catalog = catalog
        self.config = config
        self.origin = dns.name.from_text(config.domain)
        self.port = config.port
        self.fallback = fallback  # a taken port: take any free one instead of failing
        self.started = asyncio.Event()

    # ----------------------------------------------------------------- serve

    async def run(self) -> None:
        try:
            udp_sock, tcp_sock = _bind_pair(self.config.host, self.config.port)
        except OSError as e:
            if not self.fallback:
                raise
            udp_sock, tcp_sock = _bind_pair(self.config.host, 0)
            log.warning("%s; dns listens on port %d instead", e, udp_sock.getsockname()[1])
        self.port = udp_sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), sock=udp_sock
        )
        server = await asyncio.start_server(self._serve_tcp, sock=tcp_sock)
        try:
            log.info("dns listening on %s:%d (udp+tcp)", self.config.host, self.port)
            self.started.set()
            await asyncio.Future()  # until cancelled
        finally:
            transport.close()
            server.close()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE):
                    size = struct.unpack("!H", await reader.readexactly(2))[0]
                    wire = await reader.readexactly(size)
                reply = self.answer(wire, limit=65535)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # ---------------------------------------------------------------- answer

    def answer(self, wire: bytes, *, limit: int = UDP_MAX) -> bytes | None:
        """The reply to one query in wire format; None for garbage not worth a reply."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return _formerr(wire)
        response = dns.message.make_response(query, our_payload=4096)
        response.flags &= ~dns.flags.RA
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
        elif len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
        else:
            self._resolve(query.question[0], response)
        if limit == UDP_MAX and query.edns >= 0:
            limit = max(UDP_MAX, min(query.payload, 4096))  # the client's EDNS buffer
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            response.answer.clear()
            response.additional.clear()
            response.flags |= dns.flags.TC  # the client retries over TCP
            return response.to_wire(max_size=limit)

    def _resolve(self, question: dns.rrset.RRset, response: dns.message.Message) -> None:
        qname, qtype = question.name, question.rdtype
        if question.rdclass not in (dns.rdataclass.IN, dns.rdataclass.ANY):
            response.set_rcode(dns.rcode.REFUSED)
            return
        if not qname.is_subdomain(self.origin):
            response.set_rcode(dns.rcode.REFUSED)  # not ours: no recursion for anyone
            return
        response.flags |= dns.flags.AA
        labels = [
            label.decode("ascii", "replace").lower()
            for label in qname.relativize(self.origin).labels
        ]
        if labels in ([], ["service"], ["addr"]):
            if qtype in (dns.rdatatype.SOA, dns.rdatatype.ANY) and not labels:
                response.answer.append(self._soa())
            return
        if len(labels) == 2 and labels[1] == "addr":
            address = _unhex(labels[0])
            if address is None:
                self._nxdomain(response)
            else:
                rrset = self._address_rrset(qname, [address], qtype)
                if rrset is not None:
                    response.answer.append(rrset)
            return
        found = self._service(labels)
        if found is None:
            self._nxdomain(response)
            return
        ns, name, tag = found
        endpoints = self.catalog.endpoints(ns, name, tag=tag)
        if not endpoints and tag:
            self._nxdomain(response)
            return
        random.shuffle(endpoints)  # spread clients that take the first record
        if qtype in (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.ANY):
            for rtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                if qtype in (rtype, dns.rdatatype.ANY):
                    rrset = self._address_rrset(qname, [e.address for e in endpoints], rtype)
                    if rrset is not None:
                        response.answer.append(rrset)
        if qtype in (dns.rdatatype.SRV, dns.rdatatype.ANY):
            self._srv(qname, endpoints, response)

    def _service(self, labels: list[str]) -> tuple[str, str, str] | None:
        """(namespace, name, tag) of a known service the labels before `podium` name."""
        if len(labels) not in (2, 3, 4) or labels[-1] != "service":
            return None
        default = self.config.namespace
        parts = labels[:-1]
        if len(parts) == 1:
            candidates = [(default, parts[0], "")]
        elif len(parts) == 2:  # NAME.NS, else TAG.NAME in the default namespace
            candidates = [(parts[1], parts[0], ""), (default, parts[1], parts[0])]
        else:
            candidates = [(parts[2], parts[1], parts[0])]
        for ns, name, tag in candidates:
            if self.catalog.known(ns, name):
                return ns, name, tag
        return None

    def _srv(
        self, qname: dns.name.Name, endpoints: list[Endpoint], response: dns.message.Message
    ) -> None:
        ttl = self.config.ttl
        srv = dns.rrset.RRset(qname, dns.rdataclass.IN, dns.rdatatype.SRV)
        targets: dict[dns.name.Name, str] = {}
        for e in endpoints:
            target = self._addr_name(e.address)
            targets[target] = e.address
            srv.add(
                dns.rdata.from_text(
                    dns.rdataclass.IN, dns.rdatatype.SRV, f"1 {e.weight} {e.port} {target}"
                ),
                ttl,
            )
        if srv:
            response.answer.append(srv)
        for target, address in targets.items():
            rtype = dns.rdatatype.AAAA if ":" in address else dns.rdatatype.A
            rrset = self._address_rrset(target, [address], rtype)
            if rrset is not None:
                response.additional.append(rrset)

    def _address_rrset(
        self, qname: dns.name.Name, addresses: list[str], qtype: dns.rdatatype.RdataType
    ) -> dns.rrset.RRset | None:
        want_v6 = qtype == dns.rdatatype.AAAA
        if qtype not in (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.ANY):
            return None
        rtype = dns.rdatatype.AAAA if want_v6 else dns.rdatatype.A
        rrset = dns.rrset.RRset(qname, dns.rdataclass.IN, rtype)
        for address in addresses:
            if (":" in address) == want_v6 and _is_ip(address):
                rrset.add(dns.rdata.from_text(dns.rdataclass.IN, rtype, address), self.config.ttl)
        return rrset if rrset else None

    def _addr_name(self, address: str) -> dns.name.Name:
        packed = ipaddress.ip_address(address).packed if _is_ip(address) else b""
        return dns.name.Name([packed.hex().encode(), b"addr"]).concatenate(self.origin)

    def _soa(self) -> dns.rrset.RRset:
        rrset = dns.rrset.RRset(self.origin, dns.rdataclass.IN, dns.rdatatype.SOA)
        ttl = self.config.ttl
        text = f"ns.{self.origin} hostmaster.{self.origin} 1 3600 600 86400 {ttl}"
        rrset.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SOA, text), ttl)
        return rrset

    def _nxdomain(self, response: dns.message.Message) -> None:
        response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(self._soa())


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        try:
            reply = self.server.answer(data)
        except Exception:  # a bug answering one query must not stop the server
            log.exception("dns: answering a query failed")
            return
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same port; with port 0, a port free for both."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(20 if port == 0 else 1):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            udp.bind((host, port))
            tcp.bind((host, udp.getsockname()[1]))
            tcp.listen(128)
            udp.setblocking(False)
            tcp.setblocking(False)
            return udp, tcp
        except OSError as e:
            udp.close()
            tcp.close()
            error = e
    raise OSError(f"cannot listen for dns on {host}:{port}: {error.strerror}")


def _formerr(wire: bytes) -> bytes | None:
    if len(wire) < 12:
        return None
    # Echo the id; QR set, FORMERR; no sections.
    (qid,) = struct.unpack("!H", wire[:2])
    return struct.pack("!HHHHHH", qid, 0x8000 | dns.rcode.FORMERR, 0, 0, 0, 0)


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _unhex(label: str) -> str | None:
    try:
        packed = bytes.fromhex(label)
    except ValueError:
        return None
    if len(packed) not in (4, 16):
        return None
    return str(ipaddress.ip_address(packed))
