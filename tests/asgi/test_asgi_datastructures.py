"""Headers, query params, option-header and cookie parsing, and the multipart parser."""

from __future__ import annotations

import pytest

import trionet.asgi
from trionet.asgi import (
    URL,
    FormData,
    Headers,
    HTTPException,
    MutableHeaders,
    QueryParams,
    UploadFile,
)
from trionet.asgi._datastructures import parse_cookie_header, parse_options_header
from trionet.asgi._multipart import parse_multipart
from trionet.errors import ASGIError


def test_public_names_are_exported_and_report_the_public_module() -> None:
    for name in trionet.asgi.__all__:
        obj = getattr(trionet.asgi, name)
        module = getattr(obj, "__module__", None)
        if isinstance(obj, type) and name != "ASGIError":
            assert module == "trionet.asgi", name
    assert issubclass(HTTPException, ASGIError)


def test_headers_are_case_insensitive_and_multi_valued() -> None:
    headers = Headers([(b"content-type", b"text/plain"), (b"x-tag", b"a"), (b"x-tag", b"b")])
    assert headers["Content-Type"] == "text/plain"
    assert headers.get("X-TAG") == "a"
    assert headers.getlist("x-tag") == ["a", "b"]
    assert "CONTENT-TYPE" in headers
    assert "missing" not in headers
    assert headers.get("missing", "dflt") == "dflt"
    assert list(headers) == ["content-type", "x-tag"]
    assert len(headers) == 2
    assert headers.multi_items() == [("content-type", "text/plain"), ("x-tag", "a"), ("x-tag", "b")]
    with pytest.raises(KeyError):
        headers["nope"]


def test_headers_from_mapping_and_latin1_values() -> None:
    headers = Headers({"X-Name": "café"})
    assert headers.raw == [(b"x-name", "café".encode("latin-1"))]
    assert headers["x-name"] == "café"


def test_mutable_headers_set_append_delete() -> None:
    headers = MutableHeaders([("a", "1"), ("a", "2")])
    headers["A"] = "3"
    assert headers.getlist("a") == ["3"]
    headers.append("a", "4")
    assert headers.getlist("a") == ["3", "4"]
    assert headers.setdefault("b", "x") == "x"
    assert headers.setdefault("b", "y") == "x"
    del headers["a"]
    assert "a" not in headers
    with pytest.raises(KeyError):
        del headers["a"]
    with pytest.raises(ValueError, match="line break"):
        headers["evil"] = "x\r\nSet-Cookie: owned=1"


def test_query_params_multi_values_and_blanks() -> None:
    params = QueryParams(b"tag=a&tag=b&empty=&x=%20y")
    assert params["tag"] == "b"
    assert params.getlist("tag") == ["a", "b"]
    assert params["empty"] == ""
    assert params["x"] == " y"
    assert params == {"tag": "b", "empty": "", "x": " y"}
    assert str(QueryParams([("a", "1 2")])) == "a=1+2"


def test_url_components() -> None:
    url = URL("https://example.com:8443/a/b?x=1#frag")
    assert url == "https://example.com:8443/a/b?x=1#frag"
    assert (url.scheme, url.hostname, url.port, url.path, url.query, url.fragment) == (
        "https",
        "example.com",
        8443,
        "/a/b",
        "x=1",
        "frag",
    )
    assert url.copy_with(path="/c", query="") == "https://example.com:8443/c#frag"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text/html", ("text/html", {})),
        ('text/html; charset="utf-8"', ("text/html", {"charset": "utf-8"})),
        (
            'form-data; name="a;b"; filename="x\\"y.txt"',
            ("form-data", {"name": "a;b", "filename": 'x"y.txt'}),
        ),
        (
            "attachment; filename=plain.txt; filename*=UTF-8''na%C3%AFve.txt",
            ("attachment", {"filename": "naïve.txt"}),
        ),
        ("Multipart/Form-Data; Boundary=abc", ("multipart/form-data", {"boundary": "abc"})),
    ],
)
def test_parse_options_header(value: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_options_header(value) == expected


def test_parse_cookie_header_is_lenient() -> None:
    assert parse_cookie_header('a=1; b="two"; flag; c=x=y') == {
        "a": "1",
        "b": "two",
        "": "flag",
        "c": "x=y",
    }


def _multipart(boundary: str, *parts: bytes) -> bytes:
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return b"preamble\r\n" + body + b"--" + boundary.encode() + b"--\r\nepilogue"


def _parse(
    body: bytes,
    boundary: str = "XyZ",
    *,
    max_fields: int = 10,
    max_files: int = 10,
    max_field_size: int = 100,
) -> FormData:
    return parse_multipart(
        body,
        boundary,
        max_fields=max_fields,
        max_files=max_files,
        max_field_size=max_field_size,
    )


def test_multipart_fields_and_files() -> None:
    body = _multipart(
        "XyZ",
        b'Content-Disposition: form-data; name="name"\r\n\r\nJos\xc3\xa9',
        b'Content-Disposition: form-data; name="doc"; filename="a.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\nline1\r\nline2",
        b'Content-Disposition: form-data; name="name"\r\n\r\nsecond',
    )
    form = _parse(body)
    assert form["name"] == "second"
    assert form.getlist("name") == ["José", "second"]
    doc = form["doc"]
    assert isinstance(doc, UploadFile)
    assert (doc.filename, doc.content_type, doc.content, doc.size) == (
        "a.txt",
        "text/plain",
        b"line1\r\nline2",
        12,
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"no boundary here", "does not occur"),
        (b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nunterminated", "not terminated"),
        (b"--XyZ\r\nContent-Disposition: form-data; name=a\r\nno blank line\r\n--XyZ--", "blank"),
        (b"--XyZ\r\nX-Other: 1\r\n\r\nv\r\n--XyZ--", "no Content-Disposition"),
        (b"--XyZ\r\nContent-Disposition: inline\r\n\r\nv\r\n--XyZ--", "form-data with a name"),
        (b"--XyZ\r\nbroken header\r\n\r\nv\r\n--XyZ--", "invalid part header"),
        (b"--XyZgarbage", "expected CRLF"),
        (b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\n\xff\r\n--XyZ--", "not valid"),
    ],
)
def test_multipart_malformed_bodies_answer_400(body: bytes, message: str) -> None:
    with pytest.raises(HTTPException) as info:
        _parse(body)
    assert info.value.status_code == 400
    assert message in info.value.detail


def test_multipart_limits() -> None:
    field = b'Content-Disposition: form-data; name="f"\r\n\r\nv'
    file = b'Content-Disposition: form-data; name="u"; filename="x"\r\n\r\nv'
    with pytest.raises(HTTPException, match="too many fields") as info:
        _parse(_multipart("XyZ", field, field, field), max_fields=2)
    assert info.value.status_code == 400
    with pytest.raises(HTTPException, match="too many files"):
        _parse(_multipart("XyZ", file, file), max_files=1)
    big = b'Content-Disposition: form-data; name="big"\r\n\r\n' + b"x" * 101
    with pytest.raises(HTTPException) as info:
        _parse(_multipart("XyZ", big))
    assert info.value.status_code == 413
