"""A bare aiosmtpd LMTP server that accepts every message and discards it: the LMTP ceiling.

    python -m bench.bare_lmtp --listen 127.0.0.1:PORT

Same transport stack as tlsrpt_lmtp's server (asyncio + aiosmtpd.lmtp.LMTP), no work per
message. Stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session


class Discard:
    """aiosmtpd handler: 250 for the message, nothing kept."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 2.0.0 Ok: discarded"


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    handler = Discard()
    server = await loop.create_server(
        lambda: LMTP(handler, hostname="bare-lmtp.localhost", loop=loop), host, port
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="bare aiosmtpd LMTP sink")
    parser.add_argument("--listen", required=True, help="HOST:PORT, e.g. 127.0.0.1:2424")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    asyncio.run(serve(host, int(port)))


if __name__ == "__main__":
    main()
