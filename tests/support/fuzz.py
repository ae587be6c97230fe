"""What the property-based (fuzz) tests share: their size, the odd values they send, and what a clear answer is.

CHAT_FUZZ_EXAMPLES sets the examples per property: a CI-sized default in
`make test`, and `make chaos` runs them at full size.
"""

import os

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("CHAT_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

# Digits that str.isdigit() accepts and int() refuses or reads: superscript,
# Arabic-Indic, Extended Arabic-Indic, NKo, fullwidth, mathematical bold.
NON_ASCII_DIGITS = ["²", "1²", "١٢", "۳", "߁", "５", "𝟙𝟚", "٠"]
ODD = [*NON_ASCII_DIGITS, "\x00", "1\x00", "", " ", "-1", "+1", "1e3", "0x10", "1_000", "9" * 40, "9" * 5000, "é" * 3000]
values = st.one_of(
    st.sampled_from(ODD),
    st.text(max_size=40),  # every Unicode category but surrogates
    st.text(st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=20),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(min_size=1000, max_size=9000),
)


def header_bytes(value: str) -> bytes:
    """The value as UTF-8, less what HTTP forbids in a header (controls; outer whitespace): sent raw elsewhere."""
    data = bytes(b for b in value.encode("utf-8") if b >= 0x20 and b != 0x7F)
    return data.strip(b" \t")


# Daphne (Twisted) closes, without an answer, a connection whose request line or one
# header line exceeds 16384 bytes; a longer head in several lines gets a 400.
LINE_LIMIT = 16384


def send(client: httpx.Client, method: str, url: str, **kwargs) -> httpx.Response | None:
    """Send and read the answer; None if the server dropped a request it could not parse.

    Daphne (Twisted) drops, before the app sees anything, a request with a line
    over LINE_LIMIT, or with a NEL byte (0x85) in a header value.
    """
    request = client.build_request(method, url, **kwargs)
    longest = max([len(request.url.raw_path) + 14, *(len(k) + len(v) + 4 for k, v in request.headers.raw)])
    nel = any(b"\x85" in value for _, value in request.headers.raw)
    try:
        response = client.send(request, stream=True)
    except httpx.RemoteProtocolError:
        if longest > LINE_LIMIT or nel:
            return None
        raise
    try:
        if response.status_code != 200 or url != "/api/events/":
            response.read()  # a finished answer's replay ends by itself; the event channel never does
    finally:
        response.close()
    return response


def assert_clear_answer(response: httpx.Response | None) -> None:
    """Below 500; a 4xx from the app is in the one error shape (the server's own 400s for a huge head are not)."""
    if response is None:
        return
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if 400 <= response.status_code < 500 and response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        assert set(body) == {"error"} and {"code", "message", "field"} <= set(body["error"]), body
