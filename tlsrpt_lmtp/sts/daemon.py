"""`tlsrpt-lmtp policy serve` and `policy query`: wiring the service to its adapters."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import signal
import sys
from collections.abc import Callable

import dns.asyncresolver

from tlsrpt_lmtp.config import ConfigError, PolicyConfig
from tlsrpt_lmtp.core.events import Event
from tlsrpt_lmtp.net.dns import make_resolver
from tlsrpt_lmtp.sts.cache import Entry, PolicyCache
from tlsrpt_lmtp.sts.dnsclient import DnsClient
from tlsrpt_lmtp.sts.domain import policy_domain
from tlsrpt_lmtp.sts.fetch import Fetcher, tls_context
from tlsrpt_lmtp.sts.policy import checked_policy
from tlsrpt_lmtp.sts.reply import exim_line, postfix_reply
from tlsrpt_lmtp.sts.server import (
    Limits,
    ReplyOptions,
    line_handler,
    listen,
    listen_socketmap,
)
from tlsrpt_lmtp.sts.service import PolicyService, Timing
from tlsrpt_lmtp.sts.shared import shared_tier


def build_service(config: PolicyConfig, emit: Callable[[Event], None]) -> PolicyService:
    resolver = make_resolver(dns.asyncresolver.Resolver, config.nameservers, config.dns_timeout)
    dane = (
        make_resolver(dns.asyncresolver.Resolver, (config.dane_resolver,), config.dns_timeout)
        if config.dane_resolver
        else None
    )
    dns_client = DnsClient(resolver, dane)
    fetcher = Fetcher(
        dns_client.addresses,
        tls_context(config.ca_file or None),
        timeout=config.fetch_timeout,
        allow_private=config.allow_private_policy_hosts,
    )
    cache = PolicyCache(
        config.data_dir / "policy-cache.sqlite3",
        size=config.cache_size,
        max_bytes=config.cache_bytes,
    )
    timing = Timing(refresh_window=config.refresh_window)
    safe_emit = _never_blocking(emit)
    try:
        shared = shared_tier(config.cache, safe_emit, checked_policy, config.cache_timeout)
    except ValueError as exc:
        cache.close()
        raise ConfigError(str(exc)) from None
    # wait for another node's fetch at most as long as that fetch can take
    shared.lease = config.fetch_timeout + 2 * config.dns_timeout + 1
    return PolicyService(dns_client, fetcher, cache, safe_emit, timing=timing, shared=shared)


def _never_blocking(emit: Callable[[Event], None]) -> Callable[[Event], None]:
    """The daemon's events are a log of what it did: a sink that fails (syslog collector
    down, disk full) must never turn a policy answer into an error. The failure is said on
    stderr instead, once per kind of error until the sink works again."""
    failing: list[str] = []

    def safe(event: Event) -> None:
        try:
            emit(event)
        except OSError as exc:
            why = exc.strerror or str(exc)
            if why not in failing:
                failing.append(why)
                print(f"tlsrpt-lmtp: cannot write policy events: {why}", file=sys.stderr)
            return
        failing.clear()

    return safe


def reply_options(config: PolicyConfig) -> ReplyOptions:
    return ReplyOptions(
        tlsrpt_maps=frozenset(config.tlsrpt_maps),
        tlsrpt_all=config.tlsrpt_attributes,
        enforce_testing=config.enforce_testing,
    )


async def serve(config: PolicyConfig, service: PolicyService) -> None:
    options = reply_options(config)
    limits = Limits(max_connections=config.max_connections, idle_timeout=config.idle_timeout)
    servers = [await listen_socketmap(config.listen, service, options, limits)]
    if config.exim_listen:
        handler = line_handler(service, options, limits)
        servers.append(await listen(config.exim_listen, handler))
    where = config.listen + (f", Exim lines on {config.exim_listen}" if config.exim_listen else "")
    # What start-up allocated lives as long as the process: keep it out of the collector's
    # full passes, which otherwise walk it all and show up in the cache-hit tail latency.
    gc.collect()
    gc.freeze()
    print(f"tlsrpt-lmtp: policy socketmap on {where}", file=sys.stderr, flush=True)
    refresher = asyncio.ensure_future(service.refresh_loop())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        refresher.cancel()
        for server in servers:
            server.close()
        service.cache.close()
        await service.shared.close()


async def query(config: PolicyConfig, service: PolicyService, key: str) -> str:
    """What an administrator debugging a domain wants to see, as text."""
    before = _cache_state(service, key)
    shared = await _shared_state(service, key)
    answer = await service.lookup(key)
    after = _cache_state(service, key)
    options = reply_options(config)
    lines = [f"domain:        {answer.domain or '(none: ' + (answer.reason or '') + ')'}"]
    lines.append(f"result:        {answer.kind}" + (f" ({answer.reason})" if answer.reason else ""))
    if answer.policy is not None:
        lines.append(f"policy id:     {answer.policy_id}")
        lines += ["policy:"] + [f"    {line}" for line in answer.policy.lines]
    lines.append(f"cache before:  {before}")
    lines.append(f"cache after:   {after}")
    if shared:
        lines.append(f"shared before: {shared}")
    plain = postfix_reply(answer, tlsrpt=False, enforce_testing=options.enforce_testing)
    full = postfix_reply(answer, tlsrpt=True, enforce_testing=options.enforce_testing)
    lines.append(f"postfix < 3.10 gets: {plain}")
    lines.append(f"postfix >= 3.10 (TLSRPT attributes) gets: {full}")
    lines.append(f"exim gets:     {exim_line(answer, enforce_testing=options.enforce_testing)}")
    service.cache.close()
    await service.shared.close()
    return "\n".join(lines)


def _cache_state(service: PolicyService, key: str) -> str:
    domain = policy_domain(key)
    entry = service.cache.get(domain) if domain else None
    return "no cached policy" if entry is None else _described(entry)


async def _shared_state(service: PolicyService, key: str) -> str:
    """The shared cache's policy for the domain ("" when there is no shared cache)."""
    domain = policy_domain(key)
    if not service.shared.enabled or domain is None:
        return ""
    entry = await service.shared.find(domain, service.clock())
    if not service.shared.available():
        return "unavailable (sts.shared_cache_unavailable says why)"
    return "no valid policy" if entry is None else _described(entry)


def _described(entry: Entry) -> str:
    def when(t: float) -> str:
        return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds")

    return (
        f"id {entry.policy_id}, fetched {when(entry.fetched_at)}, expires {when(entry.expires_at)}"
    )
