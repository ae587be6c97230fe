// The reference stream client: follows one generation's SSE stream with
// fetch, resumes by Last-Event-ID, and falls back to a plain request.
// docs/client.md describes the states, the constants and the events.

import {
  AttemptFailed,
  RetryLoop,
  backoffDelay,
  drainDeadConnections,
  failureFromResponse,
  readEventStream,
  retryDelay,
  unansweredFailure,
} from "./recovery.js";

export { backoffDelay };

// The DOM is updated at most this often, whatever the token rate: one
// re-render per frame-ish window instead of one per token.
export const RENDER_WINDOW_MS = 48;
// The server's keepalive period (CHAT_STREAM_KEEPALIVE_S; the page reads it
// from its <meta name="chat-stream-keepalive-ms">): a healthy stream sends a
// token or a keepalive comment at least this often.
export const KEEPALIVE_MS = 1_500;
// No byte at all (no response, no keepalive) for this many keepalive periods,
// plus a margin for a busy server, means the connection is dead even if TCP
// has not noticed: reconnect at once, keeping the text ("Reconnecting…").
export const SILENT_PERIODS = 2;
export const SILENCE_MARGIN_MS = 500;
// A request with no response for one keepalive period plus that margin is
// given up and sent again: after a switch of network, the browser may send it
// on a pooled connection that is dead without a word (each such try closes
// one). No strike: only the network is to blame.
// Keepalives but no token for this long: the model has stalled (the server
// ends such an answer at CHAT_UPSTREAM_STALL_S, 10 s): shown as Interrupted,
// while the connection, which is fine, waits for the server's verdict.
export const STALL_MS = 10_000;
// Reconnect delays: full jitter, uniform in [0, min(cap, base * 2^n)], so
// that many clients cut at once do not come back in lockstep.
export const BACKOFF_BASE_MS = 500;
export const BACKOFF_CAP_MS = 8_000;
// This many failed attempts in a row, with no token between them, and the
// client falls back to reading the stored answer; as many failed reads of it
// in a row are shown as an Error (while it keeps trying).
export const MAX_FAILED_ATTEMPTS = 3;
// While the fallback waits for a generation that is still running, it asks
// again after this long, doubling (with full jitter) up to BACKOFF_CAP_MS.
export const FALLBACK_POLL_MS = 1_000;
// The browser is back online, or the page visible again: retry within this
// window (random) rather than at the same instant as every other tab.
export const WAKE_JITTER_MS = 250;

export const DEFAULT_CONFIG = Object.freeze({
  renderWindowMs: RENDER_WINDOW_MS,
  keepaliveMs: KEEPALIVE_MS,
  silenceMs: SILENT_PERIODS * KEEPALIVE_MS + SILENCE_MARGIN_MS,
  responseMs: KEEPALIVE_MS + SILENCE_MARGIN_MS,
  stallMs: STALL_MS,
  backoffBaseMs: BACKOFF_BASE_MS,
  backoffCapMs: BACKOFF_CAP_MS,
  maxFailedAttempts: MAX_FAILED_ATTEMPTS,
  fallbackPollMs: FALLBACK_POLL_MS,
  wakeJitterMs: WAKE_JITTER_MS,
});

/**
 * The defaults, with the server's keepalive period (its <meta>), overridden by
 * `window.CHAT_CLIENT_CONFIG` (tests set it) and then by `overrides`. The
 * silence that means a dead connection follows the keepalive period unless set.
 */
export function clientConfig(overrides = {}) {
  const global = typeof window !== "undefined" ? window.CHAT_CLIENT_CONFIG || {} : {};
  const meta = globalThis.document?.querySelector('meta[name="chat-stream-keepalive-ms"]');
  const server = meta ? { keepaliveMs: Number(meta.content) } : {};
  const config = { ...DEFAULT_CONFIG };
  for (const source of [server, global, overrides]) {
    for (const key of Object.keys(DEFAULT_CONFIG)) {
      if (Number.isFinite(source[key]) && source[key] >= 0) config[key] = source[key];
    }
  }
  const chosen = (key) => [global, overrides].some((source) => Number.isFinite(source[key]));
  if (!chosen("silenceMs")) config.silenceMs = SILENT_PERIODS * config.keepaliveMs + SILENCE_MARGIN_MS;
  if (!chosen("responseMs")) config.responseMs = config.keepaliveMs + SILENCE_MARGIN_MS;
  return Object.freeze(config);
}

export const TERMINAL_EVENTS = new Set(["done", "interrupted", "failed", "cancelled"]);
const TERMINAL_STATUSES = new Set(["complete", "interrupted", "failed", "cancelled"]);
const DONE_STATUS = { done: "complete", interrupted: "interrupted", failed: "failed", cancelled: "cancelled" };

/** Client states; docs/client.md has the transition table. */
export const State = Object.freeze({
  CONNECTING: "connecting",
  STREAMING: "streaming",
  INTERRUPTED: "interrupted",
  FALLBACK: "fallback",
  ERROR: "error",
  ENDED: "ended",
});

// What a final (non-retryable) failure says, by HTTP status.
const FINAL_MESSAGES = {
  401: "Your session has ended. Log in again to see the rest of this answer.",
  403: "Your session has ended. Log in again to see the rest of this answer.",
  404: "This answer no longer exists.",
  410: "This answer no longer exists.",
};

/**
 * Follow one generation to its end, whatever the network does.
 *
 * Streaming: one SSE request at a time (stream mode); a failed attempt is
 * retried with backoff, resuming by Last-Event-ID. After maxFailedAttempts
 * failures in a row without progress it falls back (recover mode): each
 * round tries the stream once more and, if that fails, reads the stored
 * answer with a plain GET; a finished answer ends there (Fallback), a running
 * one is polled with backoff. maxFailedAttempts failed rounds in a row are
 * shown as Error, but the rounds go on, so the client leaves Error and
 * Fallback by itself once the server answers. Only what asking again cannot
 * fix (401, 403, 404) ends in a final Error. The retry loop (recovery.js)
 * waits instead of failing while the browser is offline.
 *
 * Callbacks:
 *   onRender(view)          at most every renderWindowMs: {text, reasoning, thinking, tokens, tokensPerSecond, lastEventId}
 *   onState(state, detail)  on every transition (see State)
 */
export class GenerationStream {
  constructor({
    generationId,
    streamUrl = `/api/generations/${generationId}/stream`,
    generationUrl = `/api/generations/${generationId}`,
    text = "",
    reasoning = "",
    lastEventId = "",
    firstSeq = 1,
    opened = null, // the answer's stream already requested (the POST that made it): the first attempt reads it
    config = clientConfig(),
    fetch = globalThis.fetch.bind(globalThis),
    now = () => performance.now(),
    onRender = () => {},
    onState = () => {},
  }) {
    Object.assign(this, { generationId, streamUrl, generationUrl, config, fetch, now, onRender, onState });
    this.text = text;
    this.reasoning = reasoning; // the model's thinking, kept apart from the answer's text
    this.part = ""; // the part of the last token event: "reasoning" while the model thinks
    this.lastEventId = lastEventId;
    this.firstSeq = firstSeq;
    this.opened = opened;
    this.state = null;
    this.detail = {};
    this.result = null; // the terminal outcome: {status, reason, error, finishReason, usage}
    this.mode = "stream"; // or "recover": streaming failed; the stored answer is read
    this.attempts = 0; // stream requests made
    this.polls = 0; // plain reads in a row that found the answer still running
    this.closed = false;
    this.controller = null;
    // tok/s: only tokens that arrived live, over the time they took (see countLive)
    this.live = { tokens: 0, ms: 0, reads: 0, connection: null };
    this.renderTimer = null;
    this.lastRenderAt = -Infinity;
    this.renders = 0;
    this.deferred = null; // a transition applied right after the next render
    this.loop = new RetryLoop({
      config,
      attempt: () => (this.mode === "stream" ? this.follow() : this.recover()),
      onFailure: (failure, { failures }) => this.failed(failure, failures),
      onOffline: () => this.transition(State.INTERRUPTED, { reason: "You are offline.", offline: true, failures: this.loop.failures, fallback: this.mode === "recover" }),
      onWake: (why) => this.checkConnection(why),
    });
    this.lastByteAt = 0; // when the current connection last sent anything (performance.now())
    this.lastTokenAt = 0; // ... and its last token
    this.unanswered = 0; // requests in a row that got no response at all
    this.suspect = false; // the last connection died without a word: drain the pool before the next
  }

  /**
   * The network may have changed. Back online, every connection opened
   * before may be dead without a word: open a new one now. Visible again (a
   * phone waking up): only if this one missed a keepalive meanwhile.
   */
  checkConnection(why) {
    if (!this.controller || this.result) return;
    const quietMs = performance.now() - this.lastByteAt;
    if (why === "online" || quietMs > this.config.keepaliveMs + SILENCE_MARGIN_MS) {
      this.controller.abort(new AttemptFailed("The network changed.", { wake: true }));
    }
  }

  /** Start following; resolves when the stream has reached a final state or was closed. */
  start() {
    if (this.state === null) this.transition(State.CONNECTING, {});
    this.running = this.loop.run();
    return this.running;
  }

  /** Skip the current wait: try again now. */
  retryNow() {
    this.loop.now();
  }

  /** Stop all network activity and timers (the page is leaving this generation). */
  close() {
    this.closed = true;
    this.loop.close();
    this.controller?.abort();
    clearTimeout(this.renderTimer);
  }

  get tokens() {
    const last = parseInt(this.lastEventId, 10);
    return Number.isFinite(last) ? Math.max(0, last - this.firstSeq + 1) : 0;
  }

  get tokensPerSecond() {
    return this.live.tokens > 0 && this.live.ms > 0 ? (this.live.tokens * 1000) / this.live.ms : 0;
  }

  // --- Attempts (run by the retry loop) ---------------------------------------

  /** One stream request: read events until the terminal one; throws AttemptFailed on a cut or a stall. */
  async follow() {
    if (this.suspect) {
      // The last connection died without a word: so may the ones the browser keeps for the next request.
      this.suspect = false;
      await drainDeadConnections(this.generationUrl, { fetch: this.fetch, ms: Math.min(500, this.config.responseMs) });
      if (this.closed) return true;
    }
    this.attempts++;
    this.controller = new AbortController();
    this.live.connection = null;
    const opened = this.opened;
    this.opened = null;
    this.lastByteAt = performance.now();
    await readEventStream(this.streamUrl, {
      lastEventId: this.lastEventId,
      silenceMs: this.config.silenceMs,
      responseMs: this.config.responseMs,
      signal: this.controller.signal,
      fetch: opened ? async () => opened : this.fetch,
      onOpen: () => {
        this.loop.connected();
        this.unanswered = 0;
        this.lastByteAt = this.lastTokenAt = performance.now();
        this.transition(State.STREAMING, { attempt: this.attempts });
      },
      onBytes: () => this.received(),
      onEvent: (event) => this.handle(event),
      done: () => this.result !== null || this.closed,
    });
    return true;
  }

  /** Bytes came: the connection lives. If they held no token (keepalives) for stallMs, the model has stalled. */
  received() {
    this.live.reads++;
    this.lastByteAt = performance.now();
    queueMicrotask(() => {
      // After the chunk is parsed: a token in it is no stall.
      const quietMs = this.lastByteAt - this.lastTokenAt;
      if (quietMs >= this.config.stallMs && this.state === State.STREAMING && !this.result && !this.closed) {
        const seconds = Math.round(quietMs / 100) / 10;
        this.transition(State.INTERRUPTED, { reason: `The model has sent nothing for ${seconds} s.`, stalled: true, failures: 0 });
      }
    });
  }

  /**
   * One round of the fallback: the stream once more (it may be the network
   * that failed, and it is back), else the stored answer.
   */
  async recover() {
    let probe;
    try {
      return await this.follow();
    } catch (failure) {
      if (!failure.retryable || this.mode === "stream") throw failure; // not fixable, or it made progress and broke
      probe = failure;
    }
    const interrupted = { reason: probe.message, failures: this.loop.failures, fallback: true };
    if (this.state === State.STREAMING) this.transition(State.INTERRUPTED, interrupted); // connected, then nothing
    const generation = await this.readStored();
    this.loop.failures = 0; // the server answers
    if (TERMINAL_STATUSES.has(generation.status)) {
      this.text = generation.text ?? this.text;
      this.reasoning = generation.reasoning ?? this.reasoning;
      this.lastEventId = String(generation.last_seq);
      this.finish(State.FALLBACK, {
        status: generation.status,
        reason: generation.reason || "",
        error: generation.error || "",
        finishReason: generation.finish_reason || "",
        usage: generation.usage || null,
      });
      return true;
    }
    // Still running: show what the server has so far, and ask again later.
    if (this.state === State.ERROR) this.transition(State.INTERRUPTED, { ...interrupted, failures: 0 });
    if ((generation.text || "").length + (generation.reasoning || "").length > this.text.length + this.reasoning.length) {
      this.text = generation.text;
      this.reasoning = generation.reasoning || "";
      if (this.text) this.part = "text"; // the stored answer has reached its text: the thinking is over
      this.lastEventId = String(generation.last_seq);
      this.scheduleRender();
    }
    const poll = { backoffBaseMs: this.config.fallbackPollMs, backoffCapMs: this.config.backoffCapMs };
    return Math.max(this.config.fallbackPollMs / 2, backoffDelay(this.polls++, poll));
  }

  /** GET the generation: its status and its stored text. */
  async readStored() {
    const controller = (this.controller = new AbortController());
    const timer = setTimeout(() => controller.abort(unansweredFailure(this.config.responseMs)), this.config.responseMs);
    try {
      const response = await this.fetch(this.generationUrl, {
        headers: { Accept: "application/json" },
        signal: controller.signal,
        cache: "no-store",
        credentials: "same-origin",
      });
      if (!response.ok) throw await failureFromResponse(response);
      this.loop.connected();
      return await response.json();
    } catch (error) {
      if (error instanceof AttemptFailed) throw error;
      if (controller.signal.reason instanceof AttemptFailed) throw controller.signal.reason;
      throw new AttemptFailed("The connection was lost.");
    } finally {
      clearTimeout(timer);
    }
  }

  /** A failed attempt: decide what to show and how long to wait (null: stop). */
  failed(failure, failures) {
    this.suspect = failure.silent || failure.wake;
    if (failure.code === "invalid_last_event_id" && this.lastEventId !== "0") {
      // Our position is past the stored end (the server lost unflushed
      // tokens in a crash): start over from what the server has. Id 0
      // asks for everything, a continuation's earlier text included.
      this.text = "";
      this.reasoning = "";
      this.lastEventId = "0";
      this.scheduleRender();
      return 0;
    }
    if (!failure.retryable) {
      const message = FINAL_MESSAGES[failure.status] || failure.message;
      this.transition(State.ERROR, { message, status: failure.status, final: true });
      return null;
    }
    if (failure.wake) {
      // The page ended the connection itself, the network having changed: a new one now.
      this.transition(State.INTERRUPTED, { reason: failure.message, failures: this.loop.failures, reconnecting: true });
      return 0;
    }
    // A silent attempt already waited silenceMs: no backoff on top, so the first one after the
    // network comes back is at most that far away (several tabs are spread by the silences themselves).
    const delay = failure.silent ? backoffDelay(0, this.config) : retryDelay(failure, failures - 1, this.config);
    if (failure.unanswered) {
      // The network's fault, not the stream's: no strike towards the fallback, but said as an Error once it lasts.
      this.unanswered++;
      const retryAt = Date.now() + delay;
      if (this.unanswered >= this.config.maxFailedAttempts) {
        this.transition(State.ERROR, { message: "The server can't be reached.", retryable: true, retryAt });
      } else if (this.state !== State.ERROR) {
        this.transition(State.INTERRUPTED, { reason: failure.message, failures, retryAt, reconnecting: true });
      }
      return delay;
    }
    if (this.mode === "stream") {
      if (failures >= this.config.maxFailedAttempts) {
        this.mode = "recover";
        this.polls = 0;
        this.loop.failures = 0;
        this.transition(State.INTERRUPTED, { reason: failure.message, failures, fallback: true });
        return failure.retryAfterMs ? delay : 0; // the fallback at once, unless the server asked for time
      }
      this.transition(State.INTERRUPTED, { reason: failure.message, failures, retryAt: Date.now() + delay, reconnecting: true });
      return delay;
    }
    // Neither the stream nor the stored answer could be read.
    if (failures >= this.config.maxFailedAttempts) {
      this.transition(State.ERROR, { message: "The server can't be reached.", retryable: true, retryAt: Date.now() + delay });
    }
    return delay;
  }

  handle({ type, data, id }) {
    if (this.result) return;
    if (type === "token" || type === "reasoning") {
      // One sequence space across parts: each event appends to its own part.
      const payload = JSON.parse(data);
      const last = parseInt(this.lastEventId, 10);
      if (Number.isFinite(last) && payload.seq <= last) return; // already have it
      if (type === "token") this.text += payload.text;
      else this.reasoning += payload.text;
      this.part = type;
      this.lastEventId = id;
      this.progress();
      this.lastTokenAt = performance.now();
      if (this.state === State.INTERRUPTED) this.transition(State.STREAMING, { attempt: this.attempts }); // the model is back
      this.countLive(payload.seq - (Number.isFinite(last) ? last : this.firstSeq - 1));
      this.scheduleRender();
    } else if (type === "snapshot") {
      // The whole answer up to its id (a pruned or continued generation): replace, not append.
      const payload = JSON.parse(data);
      this.text = payload.text;
      this.reasoning = payload.reasoning ?? "";
      this.lastEventId = id;
      this.progress();
      this.lastTokenAt = performance.now();
      this.scheduleRender();
    } else if (TERMINAL_EVENTS.has(type)) {
      const payload = data ? JSON.parse(data) : {};
      if (id) this.lastEventId = id;
      this.finish(State.ENDED, {
        status: payload.status || DONE_STATUS[type],
        reason: payload.reason || "",
        error: payload.error || "",
        finishReason: payload.finish_reason || "",
        usage: payload.usage || null,
      });
    }
    // Other event types (e.g. `json`) are not this client's business.
  }

  /** The stream delivered: the run of failures is broken, and streaming is the way again. */
  progress() {
    this.loop.failures = 0;
    this.mode = "stream";
  }

  /**
   * Count `tokens` towards tok/s if they arrived live. The first read of each
   * connection is a replay of what was missed (after a refresh or a
   * reconnect, possibly much of the answer at once), so it only starts that
   * connection's clock; later reads add their tokens and the time since the
   * previous one. Time between connections does not count.
   */
  countLive(tokens) {
    const now = this.now();
    const connection = this.live.connection;
    if (!connection) {
      this.live.connection = { firstRead: this.live.reads, at: now };
    } else if (this.live.reads === connection.firstRead) {
      connection.at = now; // the replay goes on in the same read
    } else {
      this.live.tokens += tokens;
      this.live.ms += now - connection.at;
      connection.at = now;
    }
  }

  // --- State and rendering ----------------------------------------------------

  transition(state, detail) {
    if (this.closed) return;
    if (state === this.state && state !== State.INTERRUPTED) return;
    this.state = state;
    this.detail = detail;
    this.onState(state, detail);
  }

  /** End in `state` once the final text has been rendered, so both show together. */
  finish(state, result) {
    this.result = result;
    this.deferred = [state, result];
    this.scheduleRender();
  }

  scheduleRender() {
    if (this.renderTimer !== null || this.closed) return;
    const wait = Math.max(0, this.lastRenderAt + this.config.renderWindowMs - performance.now());
    this.renderTimer = setTimeout(() => this.render(), wait);
  }

  render() {
    this.renderTimer = null;
    if (this.closed) return;
    this.lastRenderAt = performance.now();
    this.renders++;
    this.onRender({
      text: this.text,
      reasoning: this.reasoning,
      thinking: this.part === "reasoning" && this.result === null,
      tokens: this.tokens,
      tokensPerSecond: this.tokensPerSecond,
      lastEventId: this.lastEventId,
    });
    if (this.deferred) {
      const [state, detail] = this.deferred;
      this.deferred = null;
      this.transition(state, detail);
    }
  }
}
