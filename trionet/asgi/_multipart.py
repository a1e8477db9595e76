"""A strict ``multipart/form-data`` parser (RFC 7578) over an already size-limited body.

The request layer reads the body under ``max_body_size`` first, so this parser works on one
``bytes`` object; it enforces the per-form limits (number of fields and files, size of a text
field) and turns every malformation into a 400 answer.
"""

from __future__ import annotations

from ._datastructures import FormData, Headers, UploadFile, parse_options_header
from ._errors import HTTPException

__all__ = ["parse_multipart"]


def _bad(message: str) -> HTTPException:
    return HTTPException(400, f"malformed multipart body: {message}")


def parse_multipart(
    body: bytes,
    boundary: str,
    *,
    max_fields: int,
    max_files: int,
    max_field_size: int,
    charset: str = "utf-8",
) -> FormData:
    """Parse a complete ``multipart/form-data`` body.

    Args:
        body: the whole request body.
        boundary: the ``boundary`` parameter of the request's ``Content-Type``.
        max_fields: the most non-file fields accepted (more answers 400).
        max_files: the most file fields accepted (more answers 400).
        max_field_size: the largest non-file field value in bytes (larger answers 413).
        charset: the encoding of field names and text values.

    Returns:
        The fields in order, text fields as ``str`` and files as :class:`UploadFile`.

    Raises:
        HTTPException: 400 for a malformed body or too many parts, 413 for an oversized field.
    """
    if not 1 <= len(boundary) <= 200:
        raise _bad("boundary must be 1-200 characters")
    delimiter = b"--" + boundary.encode("latin-1")
    separator = b"\r\n" + delimiter
    start = body.find(delimiter)
    if start < 0:
        raise _bad("the boundary does not occur in the body")
    pos = start + len(delimiter)
    items: list[tuple[str, str | UploadFile]] = []
    fields = files = 0
    while True:
        if body.startswith(b"--", pos):
            break  # the closing delimiter; anything after it is an epilogue
        # Transport padding (spaces, tabs) may follow a delimiter before its CRLF.
        while pos < len(body) and body[pos] in b" \t":
            pos += 1
        if not body.startswith(b"\r\n", pos):
            raise _bad("expected CRLF after a boundary")
        pos += 2
        end = body.find(separator, pos)
        if end < 0:
            raise _bad("a part is not terminated by the boundary")
        name, value = _parse_part(body[pos:end], charset, max_field_size)
        if isinstance(value, UploadFile):
            files += 1
            if files > max_files:
                raise HTTPException(400, f"too many files in form (limit {max_files})")
        else:
            fields += 1
            if fields > max_fields:
                raise HTTPException(400, f"too many fields in form (limit {max_fields})")
        items.append((name, value))
        pos = end + len(separator)
    return FormData(items)


def _parse_part(
    part: bytes, charset: str, max_field_size: int
) -> tuple[str, str | UploadFile]:
    if part.startswith(b"\r\n"):
        head, data = b"", part[2:]
    else:
        head, sep, data = part.partition(b"\r\n\r\n")
        if not sep:
            raise _bad("a part has no blank line after its headers")
    raw: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n") if head else ():
        name, colon, value = line.partition(b":")
        if not colon or not name.strip():
            raise _bad(f"invalid part header line {line[:60]!r}")
        raw.append((name.strip().lower(), value.strip()))
    headers = Headers(raw)
    disposition = headers.get("content-disposition")
    if disposition is None:
        raise _bad("a part has no Content-Disposition header")
    try:
        kind, params = parse_options_header(disposition.encode("latin-1").decode(charset))
    except UnicodeDecodeError:
        raise _bad(f"a part's Content-Disposition is not valid {charset}") from None
    if kind != "form-data" or "name" not in params:
        raise _bad("a part's Content-Disposition is not form-data with a name")
    if "filename" in params:
        return params["name"], UploadFile(
            params["filename"],
            data,
            headers.get("content-type", "application/octet-stream"),
            headers,
        )
    if len(data) > max_field_size:
        raise HTTPException(
            413, f"form field {params['name']!r} is larger than {max_field_size} bytes"
        )
    try:
        return params["name"], data.decode(charset)
    except UnicodeDecodeError:
        raise _bad(f"field {params['name']!r} is not valid {charset}") from None
