"""The event JSON Schemas of docs/schema/ and the real emitters of both formats (json, ecs) fed
the same events, each line checked against its schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tlsrpt_lmtp.output.sinks import Emitter, open_emitter

jsonschema = pytest.importorskip("jsonschema")

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schema"


def validator(fmt: str) -> Any:
    schema = json.loads((SCHEMAS / f"events-{fmt}.schema.json").read_text())
    cls = jsonschema.Draft202012Validator
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


class BothFormats:
    """The real emitters of both formats, fed the same events (as two daemons would be)."""

    def __init__(self, directory: Path) -> None:
        self.paths = {fmt: directory / f"events.{fmt}.jsonl" for fmt in ("json", "ecs")}
        self.emitters: dict[str, Emitter] = {
            fmt: open_emitter(fmt, str(path)) for fmt, path in self.paths.items()
        }

    def __call__(self, event: dict[str, Any]) -> None:
        for emitter in self.emitters.values():
            emitter(event)

    def close(self) -> None:
        for emitter in self.emitters.values():
            emitter.close()

    def check(self) -> dict[str, list[dict[str, Any]]]:
        """Validate every line of both files; returns the documents by format."""
        docs: dict[str, list[dict[str, Any]]] = {}
        for fmt, path in self.paths.items():
            check = validator(fmt)
            docs[fmt] = [json.loads(line) for line in path.read_text().splitlines()]
            for doc in docs[fmt]:
                errors = [f"{list(e.absolute_path)}: {e.message}" for e in check.iter_errors(doc)]
                assert not errors, (fmt, doc, errors)
        assert len(docs["json"]) == len(docs["ecs"])
        for plain, ecs in zip(docs["json"], docs["ecs"], strict=True):
            assert ecs["event"]["action"] == plain["event"]
            assert ecs["event"].get("id") == plain.get("event_id")
        return docs
