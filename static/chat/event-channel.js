// The per-user event channel (/api/events/, served by django-eventstream):
// conversation created / renamed / deleted and generation status changes.
// Read and kept going with the same code as the answer streams
// (recovery.js), and resumed with Last-Event-ID after a drop, so a missed
// event is replayed, not lost.

import { AttemptFailed, RetryLoop, readEventStream, retryDelay } from "./recovery.js";
import { clientConfig } from "./stream-client.js";

// The channel is quiet when nothing happens; django-eventstream sends a
// keep-alive every 20 s or so, so a longer silence means a dead connection.
const CHANNEL_STALL_MS = 45_000;
// A channel that the server closes at once is not asked again at once.
const MIN_RECONNECT_MS = 250;
// Event types that django-eventstream uses for its own bookkeeping.
const HOUSEKEEPING = new Set(["stream-open", "keep-alive", "message"]);

export class EventChannel {
  constructor(url, { onEvent, onOpen = () => {}, config = clientConfig() }) {
    Object.assign(this, { url, onEvent, onOpen, config });
    this.lastEventId = "";
    this.controller = null;
    // It retries for as long as the page is open; only 401, 403 or 404 (not
    // available to this user) stop it.
    this.loop = new RetryLoop({
      config,
      attempt: () => this.read(),
      onFailure: (failure, { failures }) =>
        failure.retryable ? Math.max(MIN_RECONNECT_MS, retryDelay(failure, failures - 1, config)) : null,
      // Back online, any connection opened before may be dead without a word: open a new one.
      onWake: (why) => why === "online" && this.controller?.abort(new AttemptFailed("The network changed.", { wake: true })),
    });
  }

  start() {
    this.loop.run();
    return this;
  }

  close() {
    this.loop.close();
    this.controller?.abort();
  }

  async read() {
    this.controller = new AbortController();
    await readEventStream(this.url, {
      lastEventId: this.lastEventId,
      silenceMs: CHANNEL_STALL_MS,
      responseMs: this.config.responseMs,
      signal: this.controller.signal,
      onOpen: () => {
        this.loop.connected();
        this.onOpen();
      },
      onEvent: (event) => this.dispatch(event),
      done: () => this.loop.closed,
    });
    return true;
  }

  dispatch(event) {
    if (event.type === "stream-error") throw new Error(event.data);
    if (event.id && event.id !== "error") this.lastEventId = event.id;
    this.loop.failures = 0;
    if (HOUSEKEEPING.has(event.type) && !event.data.startsWith("{")) return;
    let data = null;
    try {
      data = JSON.parse(event.data);
    } catch {
      data = event.data;
    }
    this.onEvent({ type: event.type, data });
  }
}
