"""A phone's network switch, for real: the client in its own network namespace reaches the server
over "wifi", then mid-answer the Wi-Fi link goes down and the route moves to "cellular", leaving the
open connection hanging (dropped, not reset). The client notices (no byte for `stall_s`, the server
sending a keepalive every CHAT_STREAM_KEEPALIVE_S), or is told (the app's network callback: SIGUSR1
here), resumes from the cellular address, and ends with exactly the stored text.

Needs root and iproute2 (tests/support/netns.py); skips without them, and fails under
CHAT_REQUIRE_SERVICES=1 (CI runs as root). Figures: docs/transports.md, "Network switch".
"""

import json
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from tests.conftest import require_service
from tests.support.netns import PhoneNetwork, unavailable_reason
from tests.support.server import ROOT, LiveServer, query
from tests.support.wait import eventually_sync

KEEPALIVE_S = 0.5
STALL_S = 2.0  # four keepalive periods: a healthy stream is never this quiet
# About 300 tokens at 40 tokens/s: the answer still runs well after the switch.
ANSWER = {
    "CHAT_SIMULATED_TOKENS_PER_S": "40",
    "CHAT_SIMULATED_POINTS": "10",
    "CHAT_SIMULATED_MAX_TOKENS": "600",
    "CHAT_STREAM_KEEPALIVE_S": str(KEEPALIVE_S),
}
SWITCH_AFTER = 40  # tokens received over Wi-Fi


class Phone:
    """The client process in the phone's namespace, and the JSON lines it writes."""

    def __init__(self, command: list[str]):
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[dict] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._queue.put(json.loads(line))
        self._queue.put(None)

    def wait(self, until, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"waited {timeout:g} s; the phone said: {self.lines[-5:]}") from None
            if line is None:
                raise AssertionError(f"the phone exited ({self.process.wait()}): {self.process.stderr.read()[-3000:]}")
            self.lines.append(line)
            if until(line):
                return line

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def sent_again(database_url: str, generation_id: str, after: int, until: int, transport: str) -> int:
    """Bytes of the token events the server wrote after the phone's last id into the dropped connection
    (which it sends again on the new one), each token as one event, as live tokens go."""
    chunks = query(database_url, "SELECT first_seq, tokens FROM chat_tokenchunk WHERE generation_id = %s", uuid.UUID(generation_id))
    texts = {chunk["first_seq"] + n: text for chunk in chunks for n, text in enumerate(json.loads(chunk["tokens"]))}
    size = 0
    for seq in range(after + 1, until + 1):
        text = json.dumps(texts[seq], ensure_ascii=False)
        if transport == "sse":
            size += len(f'id: {seq}\nevent: token\ndata: {{"seq":{seq},"text":{text}}}\n\n'.encode())
        else:
            size += len(f'{{"type":"token","id":{seq},"seq":{seq},"text":{text}}}'.encode()) + 2  # frame header
    return size


@pytest.mark.timeout(150)
@pytest.mark.parametrize("told", [False, True], ids=["silent", "told"])
@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_a_network_switch_mid_answer_ends_with_exactly_the_stored_text(database_templates, tmp_path, transport, told):
    reason = unavailable_reason()
    require_service(reason is None, reason or "")
    with PhoneNetwork() as net:
        env = {**ANSWER, "ALLOWED_HOSTS": net.server_address}
        server = LiveServer(database_url=database_templates.fresh("sqlite"), env=env, workdir=tmp_path, listener=net.listening_socket())
        server.start()
        phone = None
        try:
            phone = Phone(net.command(sys.executable, "-m", "tests.support.phone", server.url, "--transport", transport, "--stall-s", str(STALL_S)))
            before = phone.wait(lambda line: line["kind"] == "token" and line["seq"] >= SWITCH_AFTER, timeout=60)
            net.switch_to_cellular()
            switched = time.monotonic()
            if told:
                phone.process.send_signal(signal.SIGUSR1)  # `ip netns exec` execs the client: this is its pid
            answer = phone.wait(lambda line: line["kind"] == "answer", timeout=90)
        finally:
            if phone is not None:
                phone.stop()
            server.stop()
    generation_id = answer["generation_id"]
    (stored,) = query(
        server.database_url,
        "SELECT g.status, g.last_seq, m.content FROM chat_generation g JOIN chat_message m ON m.id = g.assistant_message_id "
        "WHERE g.id = %s",
        uuid.UUID(generation_id),
    )
    assert (answer["status"], answer["fallback"], stored["status"]) == ("complete", False, "complete")
    assert answer["text"] == stored["content"] and answer["last_event_id"] == stored["last_seq"]
    tokens = [line for line in phone.lines if line["kind"] == "token"]
    seqs = [line["seq"] for line in tokens]
    assert seqs == sorted(set(seqs)) and answer["duplicates"] == 0, "a token was sent twice"
    assert "".join(line["text"] for line in tokens) == stored["content"]

    # The new connection came from the cellular address and resumed where the phone was.
    connections = eventually_sync(
        lambda: query(
            server.database_url,
            "SELECT client_addr, resumed_from, tokens_sent, ended_at FROM chat_streamconnection WHERE generation_id = %s ORDER BY id",
            uuid.UUID(generation_id),
        ),
        until=lambda rows: rows and all(row["ended_at"] for row in rows),
        what="the connections to end",
    )
    first, *_, last = connections
    interrupted = next(n for n, line in enumerate(phone.lines) if line["kind"] == "state" and line["state"] == "interrupted")
    assert phone.lines[interrupted]["reason"] == ("Reconnecting: the network changed." if told else f"No data for {STALL_S:g} s.")
    had = max(line["seq"] for line in phone.lines[:interrupted] if line["kind"] == "token")  # when it reconnected
    assert first["client_addr"] == net.addresses["wifi"] and last["client_addr"] == net.addresses["cell"], connections
    assert last["resumed_from"] == had >= before["seq"], (connections, had)

    first_new = next(line for line in phone.lines[interrupted:] if line["kind"] == "token")
    dropped_until = first["tokens_sent"]  # the first connection started at the answer's start
    resent = sent_again(server.database_url, generation_id, had, dropped_until, transport)
    print(
        f"\nnetwork switch {transport} ({'told' if told else 'silent'}): first new token {first_new['t'] - switched:.2f} s "
        f"after the switch; {len(connections)} connections; the server wrote {dropped_until - had} tokens "
        f"({resent} B) into the dropped connection and sent them again; 0 tokens shown twice"
    )
