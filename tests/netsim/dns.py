"""Authoritative DNS for the loopback test internet, plus a real validating resolver (unbound).

``DnsServer`` is a small authoritative server written with dnspython (why not knot/nsd: none of
them can answer SERVFAIL, drop a query or serve deliberately broken signatures *for one chosen
name*, and changing data between assertions must take effect at once). It serves over UDP and
TCP on one ``127.x.y.z:port`` and is authoritative for the root zone ``.`` and every zone added
with ``add_zone`` (``test.`` by default). All data lives in one name space: a record goes into
the deepest zone that contains its owner name, so ``add("mx1.example.test", "A", ...)`` just works.

* Records can be changed at any time from any thread (``add``/``set``/``remove``); the next query
  sees the change. TXT values are given as plain strings (split into 255-octet strings
  automatically) or as a tuple of strings (one RR with several character-strings).
* Answers: AA set; CNAMEs are followed (chain of up to 8); NXDOMAIN vs NODATA (empty
  non-terminals count as existing) with the zone's SOA in the authority section; EDNS(0) echoed;
  UDP answers larger than the client's buffer (at most ``udp_max`` = 1232 octets) come back with
  TC=1 and an empty answer, so clients retry over TCP. No wildcards, no referrals: the server
  answers from the deepest zone it has (as BIND/Knot do for zones they serve side by side),
  except that DS is answered from the parent zone.
* DNSSEC: each zone is ``signed`` (DS in the parent), ``unsigned`` (insecure delegation: the
  parent proves there is no DS) or ``bogus`` (the parent's DS matches no key of the zone). Signed
  zones are signed online with ECDSA P-256 (algorithm 13), NSEC chain included (authenticated
  NXDOMAIN, NODATA and empty non-terminals; wildcard non-existence is proven too). RRSIG/NSEC are
  sent only when the query has DO=1. The root key is the trust anchor (``trust_anchor_ds``).
* Faults per name (optionally per type), see ``fail``: ``servfail``, ``refused``, ``timeout``
  (no answer at all), ``nxdomain``, ``bogus`` (corrupted RRSIGs), ``delay`` (answer late).

``ValidatingResolver`` runs the Debian ``unbound`` binary as a DNSSEC-validating recursive
resolver on its own loopback address with the root key above as its only trust anchor and the
``DnsServer`` as the stub for ``.``. Its cache is effectively off (``cache-max-ttl: 0``) so that a
record changed by a test is seen by the next query. Ask it with DO=1 (or AD=1) to get the AD bit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, cast, get_args

import dns.dnssec
import dns.dnssectypes
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.RRSIG
import dns.rdtypes.ANY.TXT
import dns.rrset
from cryptography.hazmat.primitives.asymmetric import ec

DnssecMode = Literal["signed", "unsigned", "bogus"]
FaultMode = Literal["servfail", "refused", "timeout", "nxdomain", "bogus", "delay"]
FAULT_MODES: tuple[FaultMode, ...] = get_args(FaultMode)
RdataInput = str | bytes | tuple[str | bytes, ...] | dns.rdata.Rdata

log = logging.getLogger(__name__)
IN = dns.rdataclass.IN
ROOT = dns.name.root
_ALGORITHM = dns.dnssectypes.Algorithm.ECDSAP256SHA256
_FORBIDDEN_TYPES = {
    dns.rdatatype.SOA,
    dns.rdatatype.NS,
    dns.rdatatype.DNSKEY,
    dns.rdatatype.DS,
    dns.rdatatype.RRSIG,
    dns.rdatatype.NSEC,
    dns.rdatatype.NSEC3,
}


def to_name(name: str | dns.name.Name) -> dns.name.Name:
    """``"example.test"`` → absolute ``dns.name.Name`` (names are always taken as absolute)."""
    if isinstance(name, dns.name.Name):
        return name if name.is_absolute() else name.concatenate(ROOT)
    return dns.name.from_text(name, origin=ROOT)


def to_rdtype(rdtype: str | int) -> dns.rdatatype.RdataType:
    if isinstance(rdtype, str):
        return dns.rdatatype.from_text(rdtype.upper())
    return dns.rdatatype.RdataType.make(rdtype)


def make_rdata(rdtype: dns.rdatatype.RdataType, value: RdataInput) -> dns.rdata.Rdata:
    """Rdata from a convenient form (see ``DnsServer.add``)."""
    if isinstance(value, dns.rdata.Rdata):
        if value.rdtype != rdtype:
            raise ValueError(f"rdata of type {value.rdtype!r} given for {rdtype!r}")
        return value
    if rdtype == dns.rdatatype.TXT:
        parts = value if isinstance(value, tuple) else (value,)
        strings: list[bytes] = []
        for part in parts:
            raw = part.encode() if isinstance(part, str) else part
            if isinstance(value, tuple):
                strings.append(raw)  # the caller chose the character-strings
            else:
                strings.extend(raw[i : i + 255] for i in range(0, max(len(raw), 1), 255))
        return dns.rdtypes.ANY.TXT.TXT(IN, rdtype, strings)
    if not isinstance(value, str):
        raise TypeError(f"{rdtype!r} rdata must be given as text, not {type(value).__name__}")
    return dns.rdata.from_text(IN, rdtype, value, origin=ROOT, relativize=False)


# --------------------------------------------------------------------------------------------
# Zone data


@dataclass(frozen=True)
class ZoneKey:
    private_key: ec.EllipticCurvePrivateKey
    dnskey: dns.rdtypes.ANY.DNSKEY.DNSKEY

    @classmethod
    def generate(cls) -> ZoneKey:
        key = ec.generate_private_key(ec.SECP256R1())
        dnskey = dns.dnssec.make_dnskey(key.public_key(), _ALGORITHM, flags=257)
        return cls(key, dnskey)

    def ds(self, owner: dns.name.Name) -> dns.rdata.Rdata:
        return dns.dnssec.make_ds(owner, self.dnskey, "SHA256")


@dataclass(frozen=True)
class Zone:
    origin: dns.name.Name
    dnssec: DnssecMode
    key: ZoneKey
    # For "bogus": the key the parent's DS is made from (the zone signs with ``key``).
    decoy_key: ZoneKey

    @property
    def signed(self) -> bool:
        return self.dnssec != "unsigned"

    @property
    def ns_name(self) -> dns.name.Name:
        if self.origin == ROOT:
            return dns.name.from_text("a.root-servers.invalid.")
        return dns.name.Name(("ns1", *self.origin.labels))


@dataclass(frozen=True)
class Fault:
    mode: FaultMode
    delay: float = 0.0


@dataclass(frozen=True)
class QueryRecord:
    """One query the server received (for assertions such as "no TXT query was made")."""

    time: float
    qname: str
    qtype: str
    transport: Literal["udp", "tcp"]
    source: tuple[str, int]
    dnssec_ok: bool


RRData = tuple[int, tuple[dns.rdata.Rdata, ...]]  # (ttl, rdatas)


@dataclass
class _Built:
    """A zone as served: records incl. synthesized SOA/NS/DNSKEY/delegations, NSEC, signatures."""

    zone: Zone
    nodes: dict[dns.name.Name, dict[int, dns.rrset.RRset]] = field(default_factory=dict)
    glue: set[dns.name.Name] = field(default_factory=set)
    exists: set[dns.name.Name] = field(default_factory=set)
    nsec_names: list[dns.name.Name] = field(default_factory=list)
    sigs: dict[tuple[dns.name.Name, int], dns.rrset.RRset] = field(default_factory=dict)

    @property
    def soa(self) -> dns.rrset.RRset:
        return self.nodes[self.zone.origin][dns.rdatatype.SOA]

    def covering_nsec(self, name: dns.name.Name) -> dns.name.Name:
        """Owner of the NSEC that covers ``name`` (greatest owner sorting before it)."""
        lo, hi = 0, len(self.nsec_names)
        while lo < hi:  # bisect_right with DNSSEC canonical order
            mid = (lo + hi) // 2
            if name < self.nsec_names[mid]:
                hi = mid
            else:
                lo = mid + 1
        return self.nsec_names[max(lo - 1, 0)]


@dataclass
class DnsState:
    """Everything a test can change; ``DnsServer.snapshot``/``restore`` copy it."""

    zones: dict[dns.name.Name, Zone]
    records: dict[dns.name.Name, dict[int, RRData]]
    faults: dict[tuple[dns.name.Name, int | None], Fault]

    def copy(self) -> DnsState:
        return DnsState(
            dict(self.zones),
            {name: dict(types) for name, types in self.records.items()},
            dict(self.faults),
        )


# --------------------------------------------------------------------------------------------
# The server


class DnsServer:
    """Authoritative DNS server on ``host:port`` (UDP and TCP). See the module docstring."""

    def __init__(
        self,
        host: str,
        port: int = 53,
        *,
        zones: Sequence[tuple[str, DnssecMode]] = (("test.", "signed"),),
        default_ttl: int = 60,
        negative_ttl: int = 5,
        udp_max: int = 1232,
    ) -> None:
        self.host = host
        self.port = port
        self.default_ttl = default_ttl
        self.negative_ttl = negative_ttl
        self.udp_max = udp_max
        self.queries: deque[QueryRecord] = deque(maxlen=20000)
        # Called (in the changing thread) after every change of records, zones or faults.
        self.change_listeners: list[Callable[[], None]] = []
        self._lock = threading.RLock()
        self._version = 0
        self._built_version = -1
        self._built: dict[dns.name.Name, _Built] = {}
        self._sig_cache: dict[tuple[object, ...], dns.rdata.Rdata] = {}
        now = int(time.time())
        self._inception = now - 3600
        self._expiration = now + 60 * 86400
        self._state = DnsState({}, {}, {})
        self._add_zone(ROOT, "signed")
        for name, mode in zones:
            self._add_zone(to_name(name), mode)
        self._udp_transport: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- change tracking ------------------------------------------------------------------

    @contextlib.contextmanager
    def _mutating(self) -> Iterator[None]:
        with self._lock:
            yield
            self._version += 1
        for listener in list(self.change_listeners):
            listener()

    # ---- addresses ------------------------------------------------------------------------

    @property
    def nameserver(self) -> str:
        """``"127.x.y.z:port"``."""
        return f"{self.host}:{self.port}"

    @property
    def trust_anchor_ds(self) -> str:
        """The root's DS in zone-file syntax: the trust anchor for a validating resolver."""
        root = self._state.zones[ROOT]
        return f". IN DS {root.key.ds(ROOT).to_text()}"

    @property
    def trust_anchor_dnskey(self) -> str:
        root = self._state.zones[ROOT]
        return f". IN DNSKEY {root.key.dnskey.to_text()}"

    # ---- zones ----------------------------------------------------------------------------

    def _add_zone(self, origin: dns.name.Name, dnssec: DnssecMode) -> Zone:
        if dnssec not in get_args(DnssecMode):
            raise ValueError(f"dnssec must be one of {get_args(DnssecMode)}, not {dnssec!r}")
        with self._mutating():
            old = self._state.zones.get(origin)
            zone = (
                replace(old, dnssec=dnssec)
                if old
                else Zone(origin, dnssec, ZoneKey.generate(), ZoneKey.generate())
            )
            self._state.zones[origin] = zone
            return zone

    def add_zone(self, name: str, dnssec: DnssecMode = "signed") -> Zone:
        """Serve ``name`` as its own zone (delegated from its parent zone); or change its mode."""
        origin = to_name(name)
        if origin == ROOT and dnssec != "signed":
            raise ValueError("the root zone is the trust anchor and stays signed")
        return self._add_zone(origin, dnssec)

    def remove_zone(self, name: str) -> None:
        origin = to_name(name)
        if origin == ROOT:
            raise ValueError("the root zone cannot be removed")
        with self._mutating():
            self._state.zones.pop(origin, None)

    def zone_of(self, name: str | dns.name.Name) -> Zone:
        """The zone that holds ``name``'s records (the deepest zone containing it)."""
        return self._zone_for(to_name(name))

    def _zone_for(self, name: dns.name.Name) -> Zone:
        zones = self._state.zones
        candidate = name
        while True:
            zone = zones.get(candidate)
            if zone is not None:
                return zone
            candidate = candidate.parent()

    def _parent_zone(self, zone: Zone) -> Zone:
        return self._zone_for(zone.origin.parent())

    # ---- records --------------------------------------------------------------------------

    def add(
        self, name: str, rdtype: str | int, *values: RdataInput, ttl: int | None = None
    ) -> None:
        """Add records to ``name``/``rdtype`` (existing ones are kept; duplicates collapse).

        ``values``: rdata text in zone-file syntax (``"10 mx1.example.test"``, ``"127.0.1.5"``,
        ``"3 1 1 ab12..."``), except for TXT where a ``str``/``bytes`` is the *value* of one
        record (quotes not needed; split into 255-octet strings) and a tuple is one record made
        of exactly those character-strings. ``dns.rdata.Rdata`` objects are accepted too.
        """
        self._store(name, rdtype, values, ttl, replace_existing=False)

    def set(
        self, name: str, rdtype: str | int, *values: RdataInput, ttl: int | None = None
    ) -> None:
        """Replace the RRset ``name``/``rdtype`` (no values: remove it)."""
        self._store(name, rdtype, values, ttl, replace_existing=True)

    def _store(
        self,
        name: str,
        rdtype: str | int,
        values: Sequence[RdataInput],
        ttl: int | None,
        *,
        replace_existing: bool,
    ) -> None:
        owner = to_name(name)
        rtype = to_rdtype(rdtype)
        if rtype in _FORBIDDEN_TYPES:
            raise ValueError(
                f"{dns.rdatatype.to_text(rtype)} records are managed by the server "
                "(use add_zone / the zone's dnssec mode)"
            )
        rdatas = tuple(make_rdata(rtype, v) for v in values)
        with self._mutating():
            node = self._state.records.setdefault(owner, {})
            old_ttl, old = node.get(rtype, (0, ()))
            if not replace_existing:
                rdatas = old + tuple(r for r in rdatas if r not in old)
            if not rdatas:
                node.pop(rtype, None)
                if not node:
                    self._state.records.pop(owner, None)
            else:
                use_ttl = ttl if ttl is not None else (old_ttl if old else self.default_ttl)
                node[rtype] = (use_ttl, tuple(dict.fromkeys(rdatas)))

    def remove(self, name: str, rdtype: str | int | None = None) -> None:
        """Remove one RRset, or every record at ``name`` when ``rdtype`` is None."""
        owner = to_name(name)
        with self._mutating():
            if rdtype is None:
                self._state.records.pop(owner, None)
            else:
                node = self._state.records.get(owner, {})
                node.pop(to_rdtype(rdtype), None)
                if not node:
                    self._state.records.pop(owner, None)

    def get(self, name: str, rdtype: str | int) -> list[str]:
        """The stored rdata of ``name``/``rdtype`` as text (what the test put there)."""
        with self._lock:
            _, rdatas = self._state.records.get(to_name(name), {}).get(to_rdtype(rdtype), (0, ()))
            return [r.to_text() for r in rdatas]

    # ---- faults ---------------------------------------------------------------------------

    def fail(
        self,
        name: str,
        mode: FaultMode,
        rdtype: str | int | None = None,
        *,
        delay: float = 3.0,
    ) -> None:
        """Make queries for ``name`` (only of ``rdtype`` if given) misbehave.

        * ``servfail`` / ``refused``: that rcode.
        * ``timeout``: no answer at all (UDP and TCP).
        * ``nxdomain``: the name does not exist; without ``rdtype`` the records at the name are
          hidden while the fault lasts (and in signed zones the NSEC chain proves it); with
          ``rdtype`` only that type answers NXDOMAIN (no NSEC proof: bogus to a validator).
        * ``bogus``: RRSIGs of the name's RRsets (incl. its NSEC) are corrupted: a validating
          resolver answers SERVFAIL; a non-validating query sees normal data.
        * ``delay``: answer correctly after ``delay`` seconds.
        """
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; one of {FAULT_MODES}")
        key = (to_name(name), None if rdtype is None else int(to_rdtype(rdtype)))
        with self._mutating():
            self._state.faults[key] = Fault(mode, delay)

    def clear_fault(self, name: str | None = None, rdtype: str | int | None = None) -> None:
        """Remove the fault on ``name``/``rdtype``, or every fault when ``name`` is None."""
        with self._mutating():
            if name is None:
                self._state.faults.clear()
            else:
                key = (to_name(name), None if rdtype is None else int(to_rdtype(rdtype)))
                self._state.faults.pop(key, None)

    def _fault_for(self, name: dns.name.Name, rdtype: int) -> Fault | None:
        faults = self._state.faults
        return faults.get((name, rdtype)) or faults.get((name, None))

    # ---- state ----------------------------------------------------------------------------

    def snapshot(self) -> DnsState:
        with self._lock:
            return self._state.copy()

    def restore(self, state: DnsState) -> None:
        with self._mutating():
            self._state = state.copy()

    def clear(self) -> None:
        """Remove all records and faults (zones stay)."""
        with self._mutating():
            self._state.records.clear()
            self._state.faults.clear()

    def queries_for(self, name: str, rdtype: str | None = None) -> list[QueryRecord]:
        qname = to_name(name).to_text().lower()
        return [
            q
            for q in list(self.queries)
            if q.qname.lower() == qname and (rdtype is None or q.qtype == rdtype.upper())
        ]

    # ---- building the served zones ------------------------------------------------------------

    def _ensure_built(self) -> None:
        if self._built_version == self._version:
            return
        state = self._state
        built = {origin: _Built(zone) for origin, zone in state.zones.items()}
        # Apex data of every zone, and the delegation (NS + glue + DS) in its parent.
        for origin, zone in state.zones.items():
            b = built[origin]
            ns_host = zone.ns_name
            soa = dns.rdata.from_text(
                IN,
                dns.rdatatype.SOA,
                f"{ns_host} {dns.name.Name(('hostmaster', *origin.labels))} {self._version} "
                f"3600 600 86400 {self.negative_ttl}",
            )
            self._put(b, origin, dns.rdatatype.SOA, self.negative_ttl, [soa])
            ns = dns.rdata.from_text(IN, dns.rdatatype.NS, ns_host.to_text())
            self._put(b, origin, dns.rdatatype.NS, 3600, [ns])
            glue_a = dns.rdata.from_text(IN, dns.rdatatype.A, self.host)
            if self._zone_for(ns_host) is zone:
                self._put(b, ns_host, dns.rdatatype.A, 3600, [glue_a])
            if zone.signed:
                self._put(b, origin, dns.rdatatype.DNSKEY, 3600, [zone.key.dnskey])
            if origin != ROOT:
                parent = built[self._parent_zone(zone).origin]
                self._put(parent, origin, dns.rdatatype.NS, 3600, [ns])
                if ns_host.is_subdomain(origin):
                    self._put(parent, ns_host, dns.rdatatype.A, 3600, [glue_a])
                    parent.glue.add(ns_host)
                if zone.signed:
                    ds_key = zone.decoy_key if zone.dnssec == "bogus" else zone.key
                    self._put(parent, origin, dns.rdatatype.DS, 3600, [ds_key.ds(origin)])
        # The test's records (minus the subtrees hidden by an "nxdomain" fault).
        hidden = {n for (n, t), f in state.faults.items() if t is None and f.mode == "nxdomain"}
        for owner, types in state.records.items():
            if hidden and any(owner.is_subdomain(h) for h in hidden):
                continue
            b = built[self._zone_for(owner).origin]
            for rdtype, (ttl, rdatas) in types.items():
                self._put(b, owner, rdtype, ttl, list(rdatas))
        for b in built.values():
            self._finish(b)
        self._built = built
        self._built_version = self._version

    @staticmethod
    def _put(
        b: _Built, owner: dns.name.Name, rdtype: int, ttl: int, rdatas: Iterable[dns.rdata.Rdata]
    ) -> None:
        rrset = dns.rrset.from_rdata_list(owner, ttl, list(rdatas))
        b.nodes.setdefault(owner, {})[rdtype] = rrset

    def _finish(self, b: _Built) -> None:
        origin = b.zone.origin
        for owner in b.nodes:
            if owner in b.glue:
                continue
            name = owner
            while name not in b.exists:
                b.exists.add(name)
                if name == origin:
                    break
                name = name.parent()
        if not b.zone.signed:
            return
        b.nsec_names = sorted(n for n in b.nodes if n not in b.glue)
        count = len(b.nsec_names)
        for i, owner in enumerate(b.nsec_names):
            present = set(b.nodes[owner]) | {dns.rdatatype.NSEC, dns.rdatatype.RRSIG}
            bitmap = " ".join(
                dns.rdatatype.to_text(dns.rdatatype.RdataType.make(t)) for t in sorted(present)
            )
            nsec = dns.rdata.from_text(
                IN, dns.rdatatype.NSEC, f"{b.nsec_names[(i + 1) % count]} {bitmap}"
            )
            self._put(b, owner, dns.rdatatype.NSEC, self.negative_ttl, [nsec])
        delegations = {
            n for n, types in b.nodes.items() if dns.rdatatype.NS in types and n != origin
        }
        for owner, types in b.nodes.items():
            if owner in b.glue:
                continue
            for rdtype, rrset in types.items():
                if rdtype == dns.rdatatype.NS and owner in delegations:
                    continue  # the child's NS: not authoritative here, not signed
                fault = self._fault_for(owner, rdtype)
                corrupt = fault is not None and fault.mode == "bogus"
                b.sigs[(owner, rdtype)] = self._sign(b.zone, rrset, corrupt)

    def _sign(self, zone: Zone, rrset: dns.rrset.RRset, corrupt: bool) -> dns.rrset.RRset:
        cache_key = (
            zone.origin.to_digestable(),
            rrset.name.to_digestable(),
            rrset.rdtype,
            rrset.ttl,
            tuple(sorted(r.to_digestable() for r in rrset)),
            id(zone.key),
            corrupt,
        )
        rrsig = self._sig_cache.get(cache_key)
        if rrsig is None:
            rrsig = dns.dnssec.sign(
                rrset,
                zone.key.private_key,
                zone.origin,
                zone.key.dnskey,
                inception=self._inception,
                expiration=self._expiration,
            )
            if corrupt:
                assert isinstance(rrsig, dns.rdtypes.ANY.RRSIG.RRSIG)
                bad = bytes(b ^ 0x5A for b in rrsig.signature)
                rrsig = rrsig.replace(signature=bad)
            if len(self._sig_cache) > 50000:
                self._sig_cache.clear()
            self._sig_cache[cache_key] = rrsig
        sig_rrset = dns.rrset.RRset(rrset.name, IN, dns.rdatatype.RRSIG, rrset.rdtype)
        sig_rrset.update_ttl(rrset.ttl)
        sig_rrset.add(rrsig)
        return sig_rrset

    # ---- answering ------------------------------------------------------------------------

    def handle(
        self, wire: bytes, transport: Literal["udp", "tcp"], source: tuple[str, int]
    ) -> tuple[bytes | None, float]:
        """Answer one query: (response wire or None to stay silent, delay in seconds)."""
        try:
            return self._handle(wire, transport, source)
        except Exception:  # a bug here must not kill the server: answer SERVFAIL, log it
            log.exception("netsim DNS: error answering a query")
            reply = self._formerr(wire)
            if reply is None:
                return None, 0.0
            return reply[:3] + bytes([(reply[3] & 0xF0) | dns.rcode.SERVFAIL]) + reply[4:], 0.0

    def _handle(
        self, wire: bytes, transport: Literal["udp", "tcp"], source: tuple[str, int]
    ) -> tuple[bytes | None, float]:
        try:
            query = dns.message.from_wire(wire)
        except dns.message.ShortHeader:
            return None, 0.0
        except Exception:
            return self._formerr(wire), 0.0
        response = dns.message.make_response(query, our_payload=self.udp_max)
        response.flags |= dns.flags.AA
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return self._wire(response, query, transport), 0.0
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return self._wire(response, query, transport), 0.0
        if query.edns > 0:
            response.set_rcode(dns.rcode.BADVERS)
            return self._wire(response, query, transport), 0.0
        question = query.question[0]
        do = bool(query.ednsflags & dns.flags.DO)
        if do:
            response.want_dnssec(True)
        self.queries.append(
            QueryRecord(
                time.time(),
                question.name.to_text(),
                dns.rdatatype.to_text(question.rdtype),
                transport,
                source,
                do,
            )
        )
        if question.rdclass != IN:
            response.set_rcode(dns.rcode.REFUSED)
            response.flags &= ~dns.flags.AA
            return self._wire(response, query, transport), 0.0
        delay = 0.0
        with self._lock:
            fault = self._fault_for(question.name, question.rdtype)
            if fault is not None:
                if fault.mode == "timeout":
                    return None, 0.0
                if fault.mode in ("servfail", "refused"):
                    response.flags &= ~dns.flags.AA
                    response.set_rcode(
                        dns.rcode.SERVFAIL if fault.mode == "servfail" else dns.rcode.REFUSED
                    )
                    return self._wire(response, query, transport), 0.0
                if fault.mode == "delay":
                    delay = fault.delay
            self._ensure_built()
            self._answer(response, question.name, question.rdtype, do, fault)
        return self._wire(response, query, transport), delay

    def _formerr(self, wire: bytes) -> bytes | None:
        if len(wire) < 12:
            return None
        (qid,) = struct.unpack("!H", wire[:2])
        flags = dns.flags.QR | (dns.rcode.FORMERR & 0xF)
        return struct.pack("!HHHHHH", qid, flags, 0, 0, 0, 0)

    def _wire(
        self,
        response: dns.message.Message,
        query: dns.message.Message,
        transport: Literal["udp", "tcp"],
    ) -> bytes:
        if transport == "tcp":
            return response.to_wire(max_size=65535)
        limit = 512 if query.edns < 0 else max(512, min(query.payload, self.udp_max))
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            response.answer = []
            response.authority = []
            response.additional = []
            response.flags |= dns.flags.TC
            return response.to_wire(max_size=limit)

    def _answer(
        self,
        response: dns.message.Message,
        qname: dns.name.Name,
        qtype: int,
        do: bool,
        fault: Fault | None,
    ) -> None:
        added: set[tuple[int, dns.name.Name, int, int]] = set()

        def add(
            section: list[dns.rrset.RRset], sid: int, b: _Built, rrset: dns.rrset.RRset
        ) -> None:
            key = (sid, rrset.name, rrset.rdtype, rrset.covers)
            if key in added:
                return
            added.add(key)
            section.append(rrset)
            if do and b.zone.signed:
                sig = b.sigs.get((rrset.name, rrset.rdtype))
                if sig is not None:
                    section.append(sig)

        def negative(b: _Built, name: dns.name.Name, nxdomain: bool) -> None:
            add(response.authority, 1, b, b.soa)
            if not (do and b.zone.signed):
                return
            if not nxdomain and name in b.nodes:
                add(response.authority, 1, b, b.nodes[name][dns.rdatatype.NSEC])
                return
            covering = b.covering_nsec(name)
            add(response.authority, 1, b, b.nodes[covering][dns.rdatatype.NSEC])
            if nxdomain:
                encloser = name.parent()
                while encloser not in b.exists:
                    encloser = encloser.parent()
                wildcard = dns.name.Name(("*", *encloser.labels))
                wild_cover = b.covering_nsec(wildcard)
                add(response.authority, 1, b, b.nodes[wild_cover][dns.rdatatype.NSEC])

        if fault is not None and fault.mode == "nxdomain" and (qname, qtype) in self._state.faults:
            b = self._built[self._zone_for(qname).origin]
            response.set_rcode(dns.rcode.NXDOMAIN)
            add(response.authority, 1, b, b.soa)
            return

        name = qname
        seen: set[dns.name.Name] = set()
        for hop in range(9):
            zone = self._zone_for(name)
            if qtype == dns.rdatatype.DS and name == zone.origin and name != ROOT:
                zone = self._parent_zone(zone)
            b = self._built[zone.origin]
            if hop > 0:
                hop_fault = self._fault_for(name, qtype)
                if hop_fault is not None and hop_fault.mode != "delay":
                    return  # leave the rest of the chain to the client
            node = b.nodes.get(name) if name not in b.glue else None
            if node is not None:
                if qtype == dns.rdatatype.ANY:
                    for rdtype, rrset in node.items():
                        if rdtype != dns.rdatatype.NSEC or do:
                            add(response.answer, 0, b, rrset)
                    return
                if qtype in node:
                    add(response.answer, 0, b, node[qtype])
                    return
                cname = node.get(dns.rdatatype.CNAME)
                if cname is not None and qtype != dns.rdatatype.CNAME:
                    add(response.answer, 0, b, cname)
                    seen.add(name)
                    target = cname[0].target
                    if target in seen:
                        return
                    name = target
                    continue
                negative(b, name, nxdomain=False)
                return
            if name in b.exists:
                negative(b, name, nxdomain=False)  # empty non-terminal
                return
            response.set_rcode(dns.rcode.NXDOMAIN)
            negative(b, name, nxdomain=True)
            return

    # ---- network --------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        server = self

        class _Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = cast(asyncio.DatagramTransport, transport)

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                wire, delay = server.handle(data, "udp", addr)
                if wire is None:
                    return
                if delay > 0:
                    loop.call_later(delay, self._send, wire, addr)
                else:
                    self._send(wire, addr)

            def _send(self, wire: bytes, addr: tuple[str, int]) -> None:
                if not self.transport.is_closing():
                    self.transport.sendto(wire, addr)

        transport, _ = await loop.create_datagram_endpoint(
            _Udp, local_addr=(self.host, self.port), reuse_port=False
        )
        self._udp_transport = transport
        try:
            self._tcp_server = await asyncio.start_server(
                self._tcp_client, self.host, self.port, reuse_address=True
            )
        except OSError:
            transport.close()
            raise

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        try:
            while True:
                header = await asyncio.wait_for(reader.readexactly(2), timeout=10)
                (length,) = struct.unpack("!H", header)
                data = await asyncio.wait_for(reader.readexactly(length), timeout=10)
                wire, delay = self.handle(data, "tcp", (peer[0], peer[1]))
                if wire is None:
                    continue
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def stop(self) -> None:
        if self._udp_transport is not None:
            self._udp_transport.close()
            self._udp_transport = None
        if self._tcp_server is not None:
            self._tcp_server.close()
            self._tcp_server = None


# --------------------------------------------------------------------------------------------
# The validating resolver


UNBOUND_BIN = shutil.which("unbound") or "/usr/sbin/unbound"


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies (no stray unbound after a killed run).

    Linux delivers it when the *thread* that forked exits, hence only used from the main thread.
    """
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def unbound_available() -> bool:
    return os.access(UNBOUND_BIN, os.X_OK)


class ValidatingResolver:
    """A real unbound on ``host:port``, validating with the ``DnsServer``'s root key."""

    def __init__(self, host: str, port: int, workdir: Path, auth: DnsServer) -> None:
        self.host = host
        self.port = port
        self.workdir = Path(workdir)
        self.auth = auth
        self.conf_file = self.workdir / "unbound.conf"
        self.log_file = self.workdir / "unbound.log"
        self.control_socket = self.workdir / "unbound.ctl"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _config(self) -> str:
        wd = self.workdir
        (wd / "root.ds").write_text(self.auth.trust_anchor_ds + "\n")
        lines = [
            "server:",
            "  verbosity: 1",
            f"  interface: {self.host}",
            f"  port: {self.port}",
            f"  outgoing-interface: {self.host}",
            "  do-ip4: yes",
            "  do-ip6: no",
            "  do-udp: yes",
            "  do-tcp: yes",
            "  do-daemonize: no",
            '  username: ""',
            '  chroot: ""',
            f'  directory: "{wd}"',
            f'  pidfile: "{wd}/unbound.pid"',
            f'  logfile: "{self.log_file}"',
            "  use-syslog: no",
            "  log-servfail: yes",
            "  val-log-level: 2",
            "  num-threads: 1",
            "  so-reuseport: no",
            "  outgoing-range: 128",
            "  num-queries-per-thread: 64",
            "  access-control: 127.0.0.0/8 allow",
            "  do-not-query-localhost: no",
            '  module-config: "validator iterator"',
            f'  trust-anchor-file: "{wd}/root.ds"',
            "  trust-anchor-signaling: no",
            "  root-key-sentinel: no",
            "  qname-minimisation: no",
            "  aggressive-nsec: no",
            "  prefetch: no",
            "  serve-expired: no",
            "  cache-max-ttl: 0",
            "  cache-max-negative-ttl: 0",
            "  val-bogus-ttl: 0",
            "  infra-host-ttl: 30",
            "  infra-keep-probing: yes",
            "  infra-cache-min-rtt: 2000",
            "  minimal-responses: yes",
            "  edns-buffer-size: 1232",
            "  ede: yes",
            "  hide-identity: yes",
            "  hide-version: yes",
        ]
        for zone in ("test.", "invalid.", "onion.", "home.arpa."):
            lines.append(f'  local-zone: "{zone}" nodefault')
        lines += [
            "remote-control:",
            "  control-enable: yes",
            f'  control-interface: "{self.control_socket}"',
            "  control-use-cert: no",
            "stub-zone:",
            '  name: "."',
            f"  stub-addr: {self.auth.host}@{self.auth.port}",
        ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 3.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_file.write_text(self._config())
        self.log_file.touch()
        self._proc = subprocess.Popen(
            [UNBOUND_BIN, "-d", "-p", "-c", str(self.conf_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_die_with_parent
            if threading.current_thread() is threading.main_thread()
            else None,
        )
        deadline = time.monotonic() + timeout
        probe = dns.message.make_query(".", "SOA", want_dnssec=True)
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(
                    f"unbound exited with {self._proc.returncode}: {err}{self.log()}"
                )
            with contextlib.suppress(dns.exception.Timeout, OSError):
                reply = dns.query.udp(probe, self.host, port=self.port, timeout=0.2)
                if reply.rcode() == dns.rcode.NOERROR:
                    return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"unbound did not answer within {timeout} s: {self.log()}")

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def control(self, *args: str, timeout: float = 3.0) -> str:
        """One remote-control command (as ``unbound-control`` would send it); returns the output.

        Spoken directly on the control socket (``UBCT1 <command>``): a millisecond, where
        spawning ``unbound-control`` would take tens.
        """
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.control_socket))
            sock.sendall(f"UBCT1 {' '.join(args)}\n".encode())
            chunks: list[bytes] = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        out = b"".join(chunks).decode(errors="replace")
        if out.startswith("error"):
            raise RuntimeError(f"unbound control {' '.join(args)}: {out.strip()}")
        return out

    def flush(self) -> None:
        """Forget everything learnt: cached answers (incl. SERVFAIL), bogus marks, server
        timing/lameness and queries in progress. ``NetSim`` calls it on every DNS change."""
        if self._proc is None:
            return
        for command in ("flush_zone .", "flush_bogus", "flush_negative", "flush_infra all"):
            self.control(command)
        self.control("flush_requestlist")

    def stop(self, timeout: float = 3.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        if proc.stderr is not None:
            proc.stderr.close()


def iter_rrsets(message: dns.message.Message) -> Iterator[dns.rrset.RRset]:
    yield from message.answer
    yield from message.authority
    yield from message.additional
