// The reference stream client: follows one generation's SSE stream with
// fetch, resumes by Last-Event-ID, and falls back to a plain request.
// docs/client.md describes the states, the constants and the events.

import { SSEParser } from "./sse-parser.js";

// The DOM is updated at most this often, whatever the token rate: one
// re-render per frame-ish window instead of one per token.
export const RENDER_WINDOW_MS = 48;
// No byte (keepalives included) for this long means the connection is dead
// even if TCP has not noticed. The server sends a keepalive after 15 s idle
// and ends a generation whose upstream is silent for 10 s, so a healthy
// stream is never this quiet for long.
export const STALL_MS = 10_000;
// Reconnect delays: full jitter, uniform in [0, min(cap, base * 2^n)], so
// that many clients cut at once do not come back in lockstep.
export const BACKOFF_BASE_MS = 500;
export const BACKOFF_CAP_MS = 8_000;
// This many failed attempts in a row, with no token between them, and the
// client stops streaming and asks for the complete answer instead.
export const MAX_FAILED_ATTEMPTS = 3;
// While the fallback waits for a generation that is still running, it asks
// again this often; it gives up after MAX_FAILED_ATTEMPTS failed requests.
export const FALLBACK_POLL_MS = 1_000;

export const DEFAULT_CONFIG = Object.freeze({
  renderWindowMs: RENDER_WINDOW_MS,
  stallMs: STALL_MS,
  backoffBaseMs: BACKOFF_BASE_MS,
  backoffCapMs: BACKOFF_CAP_MS,
  maxFailedAttempts: MAX_FAILED_ATTEMPTS,
  fallbackPollMs: FALLBACK_POLL_MS,
});

/** The defaults, overridden by `window.CHAT_CLIENT_CONFIG` (tests set it) and then by `overrides`. */
export function clientConfig(overrides = {}) {
  const global = typeof window !== "undefined" ? window.CHAT_CLIENT_CONFIG || {} : {};
  const config = { ...DEFAULT_CONFIG };
  for (const source of [global, overrides]) {
    for (const key of Object.keys(DEFAULT_CONFIG)) {
      if (Number.isFinite(source[key]) && source[key] >= 0) config[key] = source[key];
    }
  }
  return Object.freeze(config);
}

/** Delay before reconnect number `attempt` (0-based): exponential, capped, full jitter. */
export function backoffDelay(attempt, { backoffBaseMs, backoffCapMs }, random = Math.random) {
  return Math.floor(random() * Math.min(backoffCapMs, backoffBaseMs * 2 ** attempt));
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

class AttemptFailed extends Error {
  constructor(reason, { retryable = true, status = 0, code = "" } = {}) {
    super(reason);
    this.retryable = retryable;
    this.status = status;
    this.code = code;
  }
}

/**
 * Follow one generation to its end.
 *
 * Callbacks:
 *   onRender(view)          at most every renderWindowMs: {text, tokens, tokensPerSecond, lastEventId}
 *   onState(state, detail)  on every transition (see State)
 */
export class GenerationStream {
  constructor({
    generationId,
    streamUrl = `/api/generations/${generationId}/stream`,
    generationUrl = `/api/generations/${generationId}`,
    text = "",
    lastEventId = "",
    firstSeq = 1,
    config = clientConfig(),
    fetch = globalThis.fetch.bind(globalThis),
    onRender = () => {},
    onState = () => {},
  }) {
    Object.assign(this, { generationId, streamUrl, generationUrl, config, fetch, onRender, onState });
    this.text = text;
    this.lastEventId = lastEventId;
    this.firstSeq = firstSeq;
    this.state = null;
    this.detail = {};
    this.result = null; // the terminal outcome: {status, reason, error, finishReason, usage}
    this.failures = 0; // consecutive failed attempts
    this.attempts = 0;
    this.closed = false;
    this.liveTokens = 0;
    this.firstLiveAt = 0;
    this.lastLiveAt = 0;
    this.renderTimer = null;
    this.lastRenderAt = -Infinity;
    this.renders = 0;
    this.deferred = null; // a transition applied right after the next render
    this.controller = null;
    this.wake = null; // resolves the current backoff sleep early
  }

  /** Start following; resolves when the stream has reached a final state. */
  start() {
    this.running = this.run();
    return this.running;
  }

  /** Skip the backoff wait, or start again from Error. */
  retryNow() {
    if (this.closed) return;
    if (this.wake) return this.wake();
    if (this.state === State.ERROR) {
      this.failures = 0;
      this.start();
    }
  }

  /** Stop all network activity and timers (the page is leaving this generation). */
  close() {
    this.closed = true;
    this.controller?.abort();
    clearTimeout(this.renderTimer);
    this.wake?.();
  }

  get tokens() {
    const last = parseInt(this.lastEventId, 10);
    return Number.isFinite(last) ? Math.max(0, last - this.firstSeq + 1) : 0;
  }

  get tokensPerSecond() {
    const seconds = (this.lastLiveAt - this.firstLiveAt) / 1000;
    return this.liveTokens > 1 && seconds > 0 ? (this.liveTokens - 1) / seconds : 0;
  }

  // --- The connection loop ---------------------------------------------------

  async run() {
    if (this.state === null) this.transition(State.CONNECTING, {});
    while (!this.closed && !this.result) {
      this.attempts++;
      try {
        await this.follow();
        if (this.result || this.closed) break;
        throw new AttemptFailed("The stream closed before the answer ended.");
      } catch (error) {
        if (this.closed) break;
        const failure = error instanceof AttemptFailed ? error : new AttemptFailed("The connection was lost.");
        if (failure.code === "invalid_last_event_id" && this.lastEventId !== "0") {
          // Our position is past the stored end (the server lost unflushed
          // tokens in a crash): start over from what the server has. Id 0
          // asks for everything, a continuation's earlier text included.
          this.text = "";
          this.lastEventId = "0";
          this.scheduleRender();
          continue;
        }
        if (!failure.retryable) {
          this.transition(State.ERROR, { message: failure.message, status: failure.status });
          return;
        }
        this.failures++;
        if (this.failures >= this.config.maxFailedAttempts) {
          await this.fallback(failure.message);
          return;
        }
        const delay = backoffDelay(this.failures - 1, this.config);
        this.transition(State.INTERRUPTED, {
          reason: failure.message,
          failures: this.failures,
          retryAt: Date.now() + delay,
        });
        await this.sleep(delay);
      }
    }
  }

  /** One connection: read events until the terminal one, a cut or a stall. */
  async follow() {
    const controller = (this.controller = new AbortController());
    let stalled = false;
    let stallTimer = null;
    const armStallTimer = () => {
      clearTimeout(stallTimer);
      stallTimer = setTimeout(() => {
        stalled = true;
        controller.abort();
      }, this.config.stallMs);
    };
    const headers = { Accept: "text/event-stream" };
    if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
    armStallTimer();
    try {
      const response = await this.fetch(this.streamUrl, {
        headers,
        signal: controller.signal,
        cache: "no-store",
        credentials: "same-origin",
      });
      if (!response.ok) throw await failureFromResponse(response);
      this.transition(State.STREAMING, { attempt: this.attempts });
      const parser = new SSEParser({ onEvent: (event) => this.handle(event) });
      parser.lastEventId = this.lastEventId;
      const reader = response.body.getReader();
      while (!this.result) {
        const { value, done } = await reader.read();
        if (done) break;
        armStallTimer(); // any byte counts, keepalive comments included
        parser.feed(value);
      }
      if (this.result) controller.abort(); // done with this connection
    } catch (error) {
      if (error instanceof AttemptFailed || this.result) throw error;
      if (stalled) {
        throw new AttemptFailed(`No data for ${Math.round(this.config.stallMs / 100) / 10} s.`);
      }
      throw new AttemptFailed("The connection was lost.");
    } finally {
      clearTimeout(stallTimer);
    }
  }

  handle({ type, data, id }) {
    if (this.result) return;
    if (type === "token") {
      const payload = JSON.parse(data);
      const last = parseInt(this.lastEventId, 10);
      if (Number.isFinite(last) && payload.seq <= last) return; // already have it
      this.text += payload.text;
      this.lastEventId = id;
      this.failures = 0; // progress: the run of failures is broken
      const now = performance.now();
      if (!this.liveTokens) this.firstLiveAt = now;
      this.lastLiveAt = now;
      this.liveTokens += payload.seq - (Number.isFinite(last) ? last : this.firstSeq - 1);
      this.scheduleRender();
    } else if (type === "snapshot") {
      // The whole answer up to its id (a pruned or continued generation): replace, not append.
      this.text = JSON.parse(data).text;
      this.lastEventId = id;
      this.failures = 0;
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

  // --- Fallback: one plain request for the complete answer ------------------

  async fallback(reason) {
    let errors = 0;
    this.transition(State.INTERRUPTED, { reason, failures: this.failures, fallback: true });
    while (!this.closed) {
      const controller = (this.controller = new AbortController());
      const timer = setTimeout(() => controller.abort(), this.config.stallMs);
      try {
        const response = await this.fetch(this.generationUrl, {
          headers: { Accept: "application/json" },
          signal: controller.signal,
          cache: "no-store",
          credentials: "same-origin",
        });
        if (!response.ok) throw await failureFromResponse(response);
        const generation = await response.json();
        if (TERMINAL_STATUSES.has(generation.status)) {
          this.text = generation.text ?? this.text;
          this.lastEventId = String(generation.last_seq);
          this.finish(State.FALLBACK, {
            status: generation.status,
            reason: generation.reason || "",
            error: generation.error || "",
            finishReason: generation.finish_reason || "",
            usage: generation.usage || null,
          });
          return;
        }
        // Still running: show what the server has so far, and ask again.
        errors = 0;
        if ((generation.text || "").length > this.text.length) {
          this.text = generation.text;
          this.lastEventId = String(generation.last_seq);
          this.scheduleRender();
        }
      } catch (error) {
        if (this.closed) return;
        if (error instanceof AttemptFailed && !error.retryable) {
          this.transition(State.ERROR, { message: error.message, status: error.status });
          return;
        }
        if (++errors >= this.config.maxFailedAttempts) {
          this.transition(State.ERROR, { message: "The complete answer could not be loaded either." });
          return;
        }
      } finally {
        clearTimeout(timer);
      }
      await this.sleep(errors ? backoffDelay(errors - 1, this.config) : this.config.fallbackPollMs);
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
    this.wake?.();
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

  sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(timer);
        if (self.wake === done) self.wake = null;
        resolve();
      }
      this.wake = done;
    });
  }
}

async function failureFromResponse(response) {
  let code = "";
  let message = `The server answered ${response.status}.`;
  try {
    const body = await response.json();
    code = body?.error?.code || "";
    message = body?.error?.message || message;
  } catch {
    // not JSON: keep the status message
  }
  // A 4xx will not get better by asking again (except a timeout or a rate limit).
  const retryable = response.status >= 500 || response.status === 408 || response.status === 429;
  return new AttemptFailed(message, { retryable, status: response.status, code });
}
