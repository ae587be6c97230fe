"""The chat page through a phone's network switch: Chromium in its own network namespace (the same
"wifi" and "cellular" links as tests/client/test_network_switch.py), the Wi-Fi link and address gone
mid-answer, the open connection left hanging. The page recovers by itself and shows exactly the
stored answer. Needs root, iproute2 and Chromium; figures in docs/transports.md."""

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from tests.browser.chat_page import CHROMIUM
from tests.conftest import require_service
from tests.support.netns import PhoneNetwork, unavailable_reason
from tests.support.server import ROOT, LiveServer, query

STALL_MS = 2000
ANSWER = {
    "CHAT_SIMULATED_TOKENS_PER_S": "40",
    "CHAT_SIMULATED_POINTS": "10",
    "CHAT_SIMULATED_MAX_TOKENS": "600",
    "CHAT_STREAM_KEEPALIVE_S": "0.5",
}


def read_line(process: subprocess.Popen, kind: str) -> dict:
    for line in process.stdout:
        message = json.loads(line)
        if message["kind"] == kind:
            return message
    raise AssertionError(f"the browser's process exited ({process.wait()}) before `{kind}`:\n{process.stderr.read()[-3000:]}")


@pytest.mark.timeout(180)
def test_the_page_rides_through_a_network_switch(database_templates, tmp_path):
    reason = unavailable_reason()
    require_service(reason is None, reason or "")
    require_service(os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: install Debian's chromium package")
    with PhoneNetwork() as net:
        env = {**ANSWER, "ALLOWED_HOSTS": net.server_address}
        server = LiveServer(database_url=database_templates.fresh("sqlite"), env=env, workdir=tmp_path, listener=net.listening_socket())
        server.start()
        browser = None
        try:
            browser = subprocess.Popen(
                net.command(sys.executable, "-m", "tests.support.phone_browser", server.url, str(STALL_MS)),
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            read_line(browser, "ready")
            net.switch_to_cellular()
            switched = time.monotonic()
            browser.stdin.write("switched\n")
            browser.stdin.flush()
            answer = read_line(browser, "answer")
        finally:
            if browser is not None and browser.poll() is None:
                browser.kill()
            server.stop()
    (stored,) = query(
        server.database_url,
        "SELECT g.status, m.content FROM chat_generation g JOIN chat_message m ON m.id = g.assistant_message_id WHERE g.id = %s",
        uuid.UUID(answer["generation_id"]),
    )
    assert (answer["state"], stored["status"]) == ("ended", "complete") and not answer["errors"]
    assert answer["text"] == stored["content"]
    addresses = [row["client_addr"] for row in query(
        server.database_url, "SELECT client_addr FROM chat_streamconnection WHERE generation_id = %s ORDER BY id", uuid.UUID(answer["generation_id"])
    )]
    assert addresses[0] == net.addresses["wifi"] and addresses[-1] == net.addresses["cell"], addresses
    states = [t["state"] for t in answer["transitions"]]
    assert states[0] == "interrupted" and "streaming" in states and states[-1] == "ended", answer["transitions"]
    back = next(t for t in answer["transitions"] if t["state"] == "streaming")
    interrupted = answer["transitions"][0]
    print(
        f"\nnetwork switch, the chat page: interrupted {interrupted['t'] - switched:.2f} s after the switch "
        f"({interrupted['reason']}), streaming again at {back['t'] - switched:.2f} s; exact stored text"
    )
