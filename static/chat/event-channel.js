// The per-user event channel (/api/events/, served by django-eventstream):
// conversation created / renamed / deleted and generation status changes.
// Read with the same SSE parser as the answer streams, and resumed with
// Last-Event-ID after a drop, so a missed event is replayed, not lost.

import { SSEParser } from "./sse-parser.js";
import { backoffDelay, clientConfig } from "./stream-client.js";

// The channel is quiet when nothing happens; django-eventstream sends a
// keep-alive every 20 s or so, so a longer silence means a dead connection.
const CHANNEL_STALL_MS = 45_000;
// Event types that django-eventstream uses for its own bookkeeping.
const HOUSEKEEPING = new Set(["stream-open", "keep-alive", "message"]);

export class EventChannel {
  constructor(url, { onEvent, onOpen = () => {}, config = clientConfig() }) {
    Object.assign(this, { url, onEvent, onOpen, config });
    this.lastEventId = "";
    this.closed = false;
    this.controller = null;
  }

  start() {
    this.run();
    return this;
  }

  close() {
    this.closed = true;
    this.controller?.abort();
  }

  async run() {
    let failures = 0;
    while (!this.closed) {
      const controller = (this.controller = new AbortController());
      let timer = setTimeout(() => controller.abort(), CHANNEL_STALL_MS);
      const rearm = () => {
        clearTimeout(timer);
        timer = setTimeout(() => controller.abort(), CHANNEL_STALL_MS);
      };
      try {
        const headers = { Accept: "text/event-stream" };
        if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
        const response = await fetch(this.url, { headers, signal: controller.signal, cache: "no-store", credentials: "same-origin" });
        if (response.status === 404 || response.status === 401 || response.status === 403) return; // not available to us
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const parser = new SSEParser({
          onEvent: (event) => {
            if (event.type === "stream-error") throw new Error(event.data);
            if (event.id && event.id !== "error") this.lastEventId = event.id;
            failures = 0;
            if (HOUSEKEEPING.has(event.type) && !event.data.startsWith("{")) return;
            let data = null;
            try {
              data = JSON.parse(event.data);
            } catch {
              data = event.data;
            }
            this.onEvent({ type: event.type, data });
          },
        });
        this.onOpen();
        const reader = response.body.getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          rearm();
          parser.feed(value);
        }
      } catch {
        // reconnect below
      } finally {
        clearTimeout(timer);
      }
      if (this.closed) return;
      const delay = Math.max(250, backoffDelay(failures++, this.config));
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}
