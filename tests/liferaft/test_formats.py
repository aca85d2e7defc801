"""kcat-style formats of `liferaft produce` and `liferaft consume` (liferaft/cli/_formats.py)."""

from __future__ import annotations

import pytest

from client import ConsumerRecord
from liferaft.cli._formats import ParsedLine, input_parser, output_formatter, parse_header_option


def record(**kw: object) -> ConsumerRecord:
    base: dict[str, object] = {
        "topic": "t",
        "partition": 2,
        "offset": 7,
        "timestamp_ms": 1000,
        "key": b"k",
        "value": b"v",
    }
    return ConsumerRecord(**{**base, **kw})  # type: ignore[arg-type]


def test_output_tokens_and_escapes() -> None:
    fmt = output_formatter(r"%t %p %o %T %k=%v %K %S [%h] 100%%\n")
    r = record(headers=(("a", b"1"), ("b", None)))
    assert fmt(r) == b"t 2 7 1000 k=v 1 1 [a=1,b=] 100%\n"


def test_output_is_binary_safe_and_a_tombstone_is_not_the_word_null() -> None:
    fmt = output_formatter(r"%v\n")
    assert fmt(record(value=b"\xff\x00\xfe")) == b"\xff\x00\xfe\n"
    assert fmt(record(value=None)) == b"\n"
    assert fmt(record(value=b"null")) == b"null\n"
    marked = output_formatter(r"%v %S\n", null="<tombstone>")
    assert marked(record(value=None)) == b"<tombstone> -1\n"


def test_unknown_or_dangling_tokens_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown token %x"):
        output_formatter("%x")
    with pytest.raises(ValueError, match="lone '%'"):
        output_formatter("%v%")


def test_input_key_separator_headers_and_partition() -> None:
    parse = input_parser(r"%k\t%h\t%p\t%v")
    assert parse(b"key\ta=1,b=2\t1\tthe\tvalue") == ParsedLine(
        value=b"the\tvalue", key=b"key", headers=(("a", b"1"), ("b", b"2")), partition=1
    )
    plain = input_parser("%v")
    assert plain(b"a:b") == ParsedLine(b"a:b")
    keyed = input_parser("%k:%v")
    assert keyed(b"a:b:c") == ParsedLine(value=b"b:c", key=b"a")
    assert keyed(b"a:") == ParsedLine(value=b"", key=b"a")


def test_input_lines_that_do_not_fit_say_why() -> None:
    keyed = input_parser("%k:%v")
    with pytest.raises(ValueError, match="no ':'"):
        keyed(b"no separator here")
    with pytest.raises(ValueError, match="not a number"):
        input_parser("%p %v")(b"x value")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        input_parser("%h|%v")(b"novalue|v")


def test_bad_input_formats_are_refused_at_once() -> None:
    with pytest.raises(ValueError, match="no %v"):
        input_parser("%k")
    with pytest.raises(ValueError, match="separator"):
        input_parser("%k%v")
    with pytest.raises(ValueError, match="twice"):
        input_parser("%v:%v")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_header_option("nokey")
    assert parse_header_option("a=b=c") == ("a", b"b=c")
