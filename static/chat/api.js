// Calls to /api/ with the session cookie and the CSRF token: JSON, or a POST whose answer is a stream.

import { SSEParser } from "./sse-parser.js";

export class ApiError extends Error {
  constructor(status, code, message, field = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  if (meta?.content) return meta.content;
  const cookie = document.cookie.split("; ").find((part) => part.startsWith("csrftoken="));
  return cookie ? decodeURIComponent(cookie.slice("csrftoken=".length)) : "";
}

/** Call the API; return the parsed JSON (null for 204) or throw ApiError. */
export async function api(method, path, body = undefined, options = {}) {
  const response = await send(method, path, body, options);
  if (response.status === 204) return null;
  return response.json().catch(() => null);
}

/**
 * POST and stream in one request (docs/protocol.md, "One request"): return the
 * `posted` event's JSON, the body a plain POST answers with, and a Response
 * holding the whole stream for the GenerationStream to read. Throws ApiError
 * as `api` does; status 0 when the connection broke before `posted`.
 */
export async function apiStream(method, path, body, options = {}) {
  const response = await send(method, path, body, { ...options, accept: "text/event-stream" });
  if (!(response.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
    return { data: await response.json(), stream: null }; // a server that answers with JSON
  }
  // One branch finds `posted`; the other, buffered meanwhile, is the stream from its first byte.
  const [head, stream] = response.body.tee();
  try {
    return { data: await postedEvent(head), stream: new Response(stream, { status: response.status, headers: response.headers }) };
  } catch (error) {
    stream.cancel().catch(() => {});
    throw error;
  }
}

async function postedEvent(body) {
  let posted = null;
  const parser = new SSEParser({
    onEvent: ({ type, data }) => {
      if (type === "posted" && posted === null) posted = data;
    },
  });
  const reader = body.getReader();
  try {
    while (posted === null) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.feed(value);
    }
  } catch {
    // cut: below
  } finally {
    reader.cancel().catch(() => {});
  }
  if (posted === null) throw new ApiError(0, "network", "The connection was lost before the answer started.");
  return JSON.parse(posted);
}

// A request with no response in this long is given up (status 0), rather than
// left to the browser's own timeouts: after a switch of network the connection
// it went out on may be dead without a word.
export const RESPONSE_TIMEOUT_MS = 10_000;

async function send(
  method,
  path,
  body,
  { signal, headers: extra = {}, accept = "application/json", timeoutMs = RESPONSE_TIMEOUT_MS } = {},
) {
  const headers = { Accept: accept, ...extra };
  if (method !== "GET" && method !== "HEAD") headers["X-CSRFToken"] = csrfToken();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  signal?.addEventListener("abort", () => controller.abort(signal.reason), { once: true });
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
      signal: controller.signal,
    });
  } catch (error) {
    if (signal?.aborted) throw error;
    const message = controller.signal.aborted ? "The server did not answer." : "The server could not be reached.";
    throw new ApiError(0, "network", message);
  } finally {
    clearTimeout(timer);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

async function errorOf(response) {
  const data = await response.json().catch(() => null);
  const error = data?.error || {};
  if (response.status === 401 || response.status === 403) {
    // Logged out in another tab, or the session expired.
    if (!error.code || error.code === "unauthenticated") {
      return new ApiError(response.status, "unauthenticated", "Your session has ended. Log in again.");
    }
  }
  return new ApiError(response.status, error.code || "error", error.message || `The server answered ${response.status}.`, error.field || null);
}

/** The items of a list response, whatever its envelope. */
export function itemsOf(data) {
  if (Array.isArray(data)) return data;
  return data?.items ?? data?.results ?? data?.data ?? [];
}

/** The cursor for the next page of a list response, if any. */
export function nextCursorOf(data) {
  if (Array.isArray(data)) return null;
  return data?.next_cursor ?? data?.next ?? null;
}
