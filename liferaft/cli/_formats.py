"""kcat-style format strings: how `liferaft produce` splits a line, how `liferaft consume` prints
a record.

Output (consume --format), as kcat's -f:

    %t topic   %p partition   %o offset   %T timestamp (ms)   %k key   %v value
    %h headers (k=v,k=v)      %K key length   %S value length   %%  a percent sign
    \\n \\t \\r \\\\ \\0       a newline, tab, carriage return, backslash, NUL byte

Keys and values are written as their raw bytes: output is binary-safe (pipe it into a file and
the bytes are the ones produced). A null key or a tombstone (null value) is written as the
`null` text given (empty by default); its length (%K, %S) is -1, as in kcat.

Input (produce --format): the tokens %k (key), %v (value), %h (headers, k=v,k=v) and %p
(partition), with literal text between them: each field of a line runs up to the next literal,
the last one to the end of the line. `--key-separator SEP` is the format `%k SEP %v`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "0": "\0"}
OUTPUT_TOKENS = frozenset("tpoTkvhKS")
INPUT_TOKENS = frozenset("kvhp")


def unescape(text: str) -> str:
    r"""'\t' as typed on a command line -> a tab (and \n, \r, \\, \0)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in ESCAPES:
            out.append(ESCAPES[text[i + 1]])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _parse(fmt: str, tokens: frozenset[str]) -> list[tuple[bool, str]]:
    """A format -> [(is_token, token letter or literal text)]; ValueError names a bad token."""
    parts: list[tuple[bool, str]] = []
    literal: list[str] = []
    text = unescape(fmt)
    i = 0
    while i < len(text):
        c = text[i]
        if c != "%":
            literal.append(c)
            i += 1
            continue
        if i + 1 >= len(text):
            raise ValueError(f"format {fmt!r} ends with a lone '%' (write %% for a percent sign)")
        t = text[i + 1]
        i += 2
        if t == "%":
            literal.append("%")
            continue
        if t not in tokens:
            known = " ".join(f"%{k}" for k in sorted(tokens))
            raise ValueError(f"format {fmt!r}: unknown token %{t} (known: {known} %%)")
        if literal:
            parts.append((False, "".join(literal)))
            literal = []
        parts.append((True, t))
    if literal:
        parts.append((False, "".join(literal)))
    return parts


def format_headers(headers: tuple[tuple[str, bytes | None], ...], null: bytes) -> bytes:
    return b",".join(k.encode("utf-8") + b"=" + (v if v is not None else null) for k, v in headers)


def parse_headers(text: bytes) -> list[tuple[str, bytes]]:
    """b'a=1,b=2' -> [('a', b'1'), ('b', b'2')]; '' -> []."""
    out: list[tuple[str, bytes]] = []
    for item in filter(None, text.split(b",")):
        name, sep, value = item.partition(b"=")
        if not sep or not name:
            raise ValueError(f"header {item.decode('utf-8', 'replace')!r} must look like KEY=VALUE")
        out.append((name.decode("utf-8"), value))
    return out


def parse_header_option(item: str) -> tuple[str, bytes]:
    """-H KEY=VALUE -> (KEY, b'VALUE')."""
    name, sep, value = item.partition("=")
    if not sep or not name:
        raise ValueError(f"-H {item!r} must look like KEY=VALUE, e.g. -H source=shop")
    return name, value.encode("utf-8")


class RecordLike:
    """What an output format reads of a record (client.ConsumerRecord fits)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


def output_formatter(fmt: str, null: str = "") -> Callable[[RecordLike], bytes]:
    """A function printing one record as `fmt` says, as bytes."""
    parts = _parse(fmt, OUTPUT_TOKENS)
    null_b = unescape(null).encode("utf-8")

    def field(t: str, r: RecordLike) -> bytes:
        if t == "v":
            return r.value if r.value is not None else null_b
        if t == "k":
            return r.key if r.key is not None else null_b
        if t == "p":
            return str(r.partition).encode()
        if t == "o":
            return str(r.offset).encode()
        if t == "t":
            return r.topic.encode("utf-8")
        if t == "T":
            return str(r.timestamp_ms).encode()
        if t == "h":
            return format_headers(r.headers, null_b)
        if t == "K":
            return str(len(r.key) if r.key is not None else -1).encode()
        return str(len(r.value) if r.value is not None else -1).encode()  # "S"

    pieces: list[tuple[str, bytes]] = [
        (s, b"") if is_token else ("", s.encode("utf-8")) for is_token, s in parts
    ]

    def render(r: RecordLike) -> bytes:
        return b"".join(field(t, r) if t else literal for t, literal in pieces)

    return render


@dataclass(frozen=True, slots=True)
class ParsedLine:
    value: bytes
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    partition: int | None = None


def input_parser(fmt: str) -> Callable[[bytes], ParsedLine]:
    """A function splitting one input line as `fmt` says. ValueError: the format is bad (at
    once) or a line does not fit it (per line, naming what is missing)."""
    parts = _parse(fmt, INPUT_TOKENS)
    tokens = [s for is_token, s in parts if is_token]
    if "v" not in tokens:
        raise ValueError(f"format {fmt!r} has no %v: where is the value?")
    if len(tokens) != len(set(tokens)):
        raise ValueError(f"format {fmt!r} names a token twice")
    for (a, _), (b, _) in itertools.pairwise(parts):
        if a and b:
            raise ValueError(f"format {fmt!r}: two tokens need a separator between them")
    if tokens == ["v"] and len(parts) == 1:
        return lambda line: ParsedLine(line)
    seps = [(is_token, s.encode("utf-8") if not is_token else s) for is_token, s in parts]

    def parse(line: bytes) -> ParsedLine:
        fields: dict[str, bytes] = {}
        pos = 0
        for i, (is_token, s) in enumerate(seps):
            if not is_token:
                assert isinstance(s, bytes)
                if not line.startswith(s, pos):
                    raise ValueError(f"expected {s.decode('utf-8', 'replace')!r} at column {pos}")
                pos += len(s)
                continue
            nxt = seps[i + 1][1] if i + 1 < len(seps) else None
            if nxt is None:
                fields[str(s)] = line[pos:]
                pos = len(line)
            else:
                assert isinstance(nxt, bytes)
                end = line.find(nxt, pos)
                if end < 0:
                    raise ValueError(f"no {nxt.decode('utf-8', 'replace')!r} after column {pos}")
                fields[str(s)] = line[pos:end]
                pos = end
        if pos != len(line):
            raise ValueError(f"unexpected text after column {pos}")
        partition = None
        if "p" in fields:
            try:
                partition = int(fields["p"])
            except ValueError:
                raise ValueError(f"partition {fields['p']!r} is not a number") from None
        return ParsedLine(
            value=fields["v"],
            key=fields.get("k"),
            headers=tuple(parse_headers(fields.get("h", b""))),
            partition=partition,
        )

    return parse
