// Keeping a connection going: the one retry loop that both the answer
// streams (stream-client.js) and the per-user event channel
// (event-channel.js) use, and the one SSE request they both make.
// docs/client.md describes the rules.

import { SSEParser } from "./sse-parser.js";

/** Delay before retry number `attempt` (0-based): exponential, capped, full jitter. */
export function backoffDelay(attempt, { backoffBaseMs, backoffCapMs }, random = Math.random) {
  return Math.floor(random() * Math.min(backoffCapMs, backoffBaseMs * 2 ** attempt));
}

// A Retry-After longer than this is taken as this: a wrong header must not park the page.
export const RETRY_AFTER_CAP_MS = 300_000;

/** How long a response asks us to wait (Retry-After: seconds or an HTTP date), in ms; 0 if it does not say. */
export function retryAfterMs(response, now = Date.now()) {
  const value = (response.headers.get("Retry-After") || "").trim();
  if (!value) return 0;
  const ms = /^\d+$/.test(value) ? Number(value) * 1000 : Date.parse(value) - now;
  return Number.isFinite(ms) ? Math.min(Math.max(ms, 0), RETRY_AFTER_CAP_MS) : 0;
}

/**
 * Delay before retry number `attempt` (0-based) after `failure`: the backoff,
 * but never sooner than the server asked (a 503 or 429 with Retry-After),
 * plus up to half that again at random, so that the clients a busy server
 * turned away together do not all come back together.
 */
export function retryDelay(failure, attempt, config, random = Math.random) {
  const backoff = backoffDelay(attempt, config, random);
  const asked = failure.retryAfterMs || 0;
  return asked ? Math.max(backoff, Math.floor(asked * (1 + random() / 2))) : backoff;
}

/**
 * Why an attempt failed. `retryable` is false for what asking again cannot fix.
 * `silent`: the connection sent nothing more for a while (dead, or a black
 * hole); `unanswered`: not even a response (after a switch of network, a
 * pooled connection may be dead without a word); `wake`: the page ended it
 * itself because the network changed.
 */
export class AttemptFailed extends Error {
  constructor(
    reason,
    { retryable = true, status = 0, code = "", retryAfterMs = 0, silent = false, unanswered = false, wake = false } = {},
  ) {
    super(reason);
    this.retryable = retryable;
    this.status = status;
    this.code = code;
    this.retryAfterMs = retryAfterMs; // what the server asked for, 0 if nothing
    this.silent = silent || unanswered;
    this.unanswered = unanswered;
    this.wake = wake;
  }

  /** Whether it counts towards giving up on streaming: not the network's silence before any answer, nor a wake-up. */
  get strike() {
    return this.retryable && !this.wake && !this.unanswered;
  }
}

// Sent on the window when any connection gets an answer after failures: the
// network is back, so every loop waiting on it tries again now.
const NETWORK_BACK = "chat:network-back";

export function announceNetworkBack(source) {
  globalThis.dispatchEvent?.(new CustomEvent(NETWORK_BACK, { detail: source }));
}

/** The failure a non-2xx response stands for, with the API's error message if it sent one. */
export async function failureFromResponse(response) {
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
  if (retryable) message = "The server is busy or restarting.";
  return new AttemptFailed(message, { retryable, status: response.status, code, retryAfterMs: retryAfterMs(response) });
}

/**
 * After a switch of network the browser's idle pooled connections to the
 * server may be dead without a word, and it sends the next request on one of
 * them, which then gets no answer. So, before reconnecting: `count` small
 * requests at once, each on a connection of its own; those unanswered after
 * `ms` are given up, which closes their dead connections, and the live ones
 * go back to the pool for the next request. Any answer will do (a HEAD may be
 * a 405). Bounded by `ms`, whatever the network does.
 */
export async function drainDeadConnections(url, { count = 6, ms = 1000, fetch = globalThis.fetch } = {}) {
  const probe = async () => {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), ms);
    try {
      await fetch(url, { method: "HEAD", cache: "no-store", credentials: "same-origin", signal: controller.signal });
    } finally {
      clearTimeout(timer);
    }
  };
  await Promise.allSettled(Array.from({ length: count }, probe));
}

export const isOffline = () => typeof navigator !== "undefined" && navigator.onLine === false;

/**
 * One SSE request with `fetch`: resolves once `done()` is true (the caller
 * got what it wanted) and throws AttemptFailed otherwise: a network error, a
 * non-2xx answer, a body that ends early, no response for `responseMs`, or
 * no byte at all (keepalive comments included) for `silenceMs`: a dead
 * connection, whatever TCP thinks. Aborting `signal` with an AttemptFailed as
 * its reason throws that. `onOpen` runs when the headers arrive, `onBytes`
 * before each chunk of the body is parsed.
 */
export async function readEventStream(
  url,
  {
    lastEventId = "",
    silenceMs,
    responseMs = silenceMs,
    signal,
    onOpen = () => {},
    onBytes = () => {},
    onEvent,
    done,
    fetch = globalThis.fetch,
  },
) {
  const controller = new AbortController();
  const abort = () => controller.abort();
  signal?.addEventListener("abort", abort, { once: true });
  let silence = null; // the failure the silence timer stands for
  let stallTimer = null;
  const armStallTimer = (ms, failure) => {
    clearTimeout(stallTimer);
    stallTimer = setTimeout(() => {
      silence = failure;
      controller.abort();
    }, ms);
  };
  const headers = { Accept: "text/event-stream" };
  if (lastEventId) headers["Last-Event-ID"] = lastEventId;
  armStallTimer(responseMs, unansweredFailure(responseMs));
  const silent = silenceFailure(silenceMs);
  try {
    const response = await fetch(url, { headers, signal: controller.signal, cache: "no-store", credentials: "same-origin" });
    if (!response.ok) throw await failureFromResponse(response);
    armStallTimer(silenceMs, silent);
    onOpen(response);
    const parser = new SSEParser({ onEvent });
    parser.lastEventId = lastEventId;
    const reader = response.body.getReader();
    // A response opened elsewhere (the POST that made the answer) does not heed our signal: end its read too.
    controller.signal.addEventListener("abort", () => reader.cancel().catch(() => {}), { once: true });
    while (!done()) {
      const { value, done: ended } = await reader.read();
      if (ended) break;
      armStallTimer(silenceMs, silent); // any byte counts, keepalive comments included
      onBytes();
      parser.feed(value);
    }
  } catch (error) {
    if (error instanceof AttemptFailed) throw error;
    if (!done()) throw endedBy(signal, silence) ?? new AttemptFailed("The connection was lost.");
  } finally {
    clearTimeout(stallTimer);
    signal?.removeEventListener("abort", abort);
    controller.abort(); // done with this connection, whatever happened
  }
  // A cancelled read ends the body quietly (an opened response, above): the stall still says so.
  if (!done()) throw endedBy(signal, silence) ?? new AttemptFailed("The connection closed before the answer ended.");
}

/** Why the connection was ended on our side: the caller's reason, or its silence; null if it broke by itself. */
function endedBy(signal, silence) {
  if (signal?.reason instanceof AttemptFailed) return signal.reason;
  return silence;
}

const seconds = (ms) => Math.round(ms / 100) / 10;

export const silenceFailure = (silenceMs) => new AttemptFailed(`No data for ${seconds(silenceMs)} s.`, { silent: true });

export const unansweredFailure = (responseMs) =>
  new AttemptFailed(`No answer from the server for ${seconds(responseMs)} s.`, { unanswered: true });

/**
 * Runs `attempt()` until there is nothing left to do.
 *
 *   attempt()   resolves `true` when finished, or a delay in ms before the
 *               next attempt (a poll, not a failure); throws AttemptFailed.
 *   onFailure(failure, {failures})
 *               returns the delay before the next attempt, or null to stop.
 *   onOffline() the browser says it is offline: the loop waits for it to
 *               come back, and counts no failure meanwhile.
 *
 *   onWake(why)  the network may have changed ("online", "visible") while an
 *               attempt runs: the owner ends the connection if it may be dead.
 *
 * `failures` counts retryable failures in a row while online (not a request
 * that got no answer at all, nor one the page ended on waking: `strike`); the owner resets it (`loop.failures = 0`) when it
 * sees progress. Any wait ends early, after a little jitter, when the browser
 * comes back online, the page becomes visible again (a phone waking up), or
 * another connection of the page gets an answer after failing
 * (`announceNetworkBack`, which `connected()` sends); and at once on `now()`.
 * A wait the server asked for (Retry-After) is not cut short by the others.
 */
export class RetryLoop {
  constructor({ config, attempt, onFailure, onOffline = () => {}, onWake = () => {} }) {
    Object.assign(this, { config, attempt, onFailure, onOffline, onWake });
    this.failures = 0;
    this.closed = false;
    this.waiting = null; // "backoff", "poll" or "online" while it waits
    this.wakeUp = null; // ends the current wait
    this.lastFailure = null; // since the last answer from the server
    this.soon = () => this.wake("online");
    this.onVisible = () => document.visibilityState === "visible" && this.wake("visible");
    this.onNetworkBack = (event) => event.detail !== this && !this.lastFailure?.retryAfterMs && this.wakeSoon();
    globalThis.addEventListener?.("online", this.soon);
    globalThis.addEventListener?.(NETWORK_BACK, this.onNetworkBack);
    globalThis.document?.addEventListener("visibilitychange", this.onVisible);
  }

  /** The network may be back or different: retry now if waiting, else let the owner check its connection. */
  wake(why) {
    if (this.wakeUp) this.wakeSoon();
    else if (!this.closed) this.onWake(why);
  }

  /** An attempt got an answer from the server: after failures, tell the page's other loops. */
  connected() {
    if (this.lastFailure) announceNetworkBack(this);
    this.lastFailure = null;
  }

  async run() {
    let offline = false;
    while (!this.closed) {
      if (isOffline()) {
        if (!offline) this.onOffline();
        offline = true;
        await this.wait("online", Infinity);
        continue;
      }
      offline = false;
      let failure;
      try {
        const outcome = await this.attempt();
        if (outcome === true || this.closed) break;
        await this.wait("poll", outcome);
        continue;
      } catch (error) {
        if (this.closed) break;
        failure = error instanceof AttemptFailed ? error : new AttemptFailed("The connection was lost.");
      }
      this.lastFailure = failure;
      if (failure.retryable && isOffline()) continue; // no strike: the top of the loop waits for the network
      if (failure.strike) this.failures++;
      const delay = this.onFailure(failure, { failures: this.failures });
      if (delay === null || this.closed) break;
      await this.wait("backoff", delay);
    }
    this.close();
  }

  /** Skip the current wait. */
  now() {
    this.wakeUp?.();
  }

  /** The network or the page is back: retry after a little jitter, so that many tabs do not come back at once. */
  wakeSoon() {
    if (!this.wakeUp) return;
    const wake = this.wakeUp;
    setTimeout(wake, Math.floor(Math.random() * this.config.wakeJitterMs));
  }

  close() {
    this.closed = true;
    this.wakeUp?.();
    globalThis.removeEventListener?.(NETWORK_BACK, this.onNetworkBack);
    globalThis.removeEventListener?.("online", this.soon);
    globalThis.document?.removeEventListener("visibilitychange", this.onVisible);
  }

  wait(reason, ms) {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      let timer = null;
      const wake = () => {
        clearTimeout(timer);
        if (this.wakeUp === wake) {
          this.wakeUp = null;
          this.waiting = null;
        }
        resolve();
      };
      if (Number.isFinite(ms)) timer = setTimeout(wake, ms);
      this.waiting = reason;
      this.wakeUp = wake;
    });
  }
}
