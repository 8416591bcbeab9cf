"""Properties of tlsrpt_lmtp.core.decompress.decode_payload over generated containers.

Documented behaviour: a Payload whose JSON bytes never exceed ``limit``, or PayloadError.
"""

from __future__ import annotations

import gzip

from hypothesis import example, given
from hypothesis import strategies as st

from tests.support import factories as f
from tests.support import properties as p
from tlsrpt_lmtp.core.decompress import PayloadError, decode_payload

limits = st.integers(16, 4096)
bodies = st.builds(
    lambda pad, tail: b'{"pad": "' + b"x" * pad + b'"' + tail + b"}",
    st.integers(0, 6000),
    st.binary(max_size=20),
)
_ZIP = f.zip_archive([("report.json", f.to_json(f.report_dict()))])


def decoded_or_refused(data: bytes, limit: int) -> bytes | None:
    try:
        payload = decode_payload(data, limit=limit)
    except PayloadError as exc:
        assert str(exc)
        return None
    assert len(payload.json_bytes) <= limit
    assert all(isinstance(w, str) for w in payload.warnings)
    return payload.json_bytes


@given(bodies.flatmap(lambda b: st.tuples(st.just(b), p.containers(b))), limits)
def test_the_report_comes_back_whole_or_is_refused_by_size(
    case: tuple[bytes, bytes], limit: int
) -> None:
    body, container = case
    out = decoded_or_refused(container, limit)
    if len(body) <= limit:
        assert out == body
    else:
        assert out is None


@given(st.sampled_from([1, 8, 64]), st.integers(16, 4096))
def test_a_bomb_never_exceeds_the_cap(megabytes: int, limit: int) -> None:
    size = megabytes * f.MiB
    for bomb in (f.gzip_bomb(size), f.zip_bomb(size), gzip.compress(f.gzip_bomb(size))):
        assert decoded_or_refused(bomb, limit) is None


@given(st.binary(max_size=200))
def test_arbitrary_bytes_are_json_or_refused(data: bytes) -> None:
    decoded_or_refused(data, 1024)


@given(
    bodies.map(lambda b: gzip.compress(b) + gzip.compress(b)).flatmap(p.mutated),
    limits,
)
def test_damaged_gzip_is_json_or_refused(data: bytes, limit: int) -> None:
    decoded_or_refused(data, limit)


@given(bodies.map(lambda b: f.zip_archive([("report.json", b)])).flatmap(p.mutated), limits)
@example(_ZIP[:40] + _ZIP[43:], 1024)  # three bytes gone: "negative seek value -3"
def test_damaged_zip_is_json_or_refused(data: bytes, limit: int) -> None:
    """zipfile raises more than BadZipFile on damaged archives (ValueError, zlib.error...)."""
    decoded_or_refused(data, limit)
