"""How a non-JSON MLflow error body becomes the message of the JSON envelope."""

from __future__ import annotations

import pytest

from hokusai.server.errors import readable_error_text

WERKZEUG_404 = (
    b"<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n"
    b"<p>The requested URL was not found on the server. If you entered the URL manually please check your spelling "
    b"and try again.</p>\n"
)


def test_html_page_becomes_title_and_paragraphs() -> None:
    assert readable_error_text(WERKZEUG_404, "text/html; charset=utf-8") == (
        "404 Not Found: The requested URL was not found on the server. If you entered the URL manually please check "
        "your spelling and try again."
    )


def test_markup_inside_a_paragraph_keeps_its_words() -> None:
    page = b"<title>405 Method Not Allowed</title><p>The method <b>PUT</b> is not\n allowed.<br>Try GET.</p>"
    assert readable_error_text(page, "text/html") == "405 Method Not Allowed: The method PUT is not allowed. Try GET."


def test_page_without_title_or_paragraph_gives_its_text_without_scripts() -> None:
    page = b"<html><head><style>p{}</style></head><body>Bad <i>gateway</i><script>var x = 1;</script></body></html>"
    assert readable_error_text(page, "TEXT/HTML") == "Bad gateway"


@pytest.mark.parametrize("content_type", ["text/plain", None, "application/octet-stream"])
def test_non_html_text_is_kept_as_it_is(content_type: str | None) -> None:
    assert readable_error_text(b"  Permission denied <not markup>\n", content_type) == "Permission denied <not markup>"


def test_undecodable_bytes_do_not_raise() -> None:
    assert readable_error_text(b"<p>caf\xe9</p>", "text/html") == "caf\ufffd"
