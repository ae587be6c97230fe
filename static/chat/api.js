// JSON calls to /api/ with the session cookie and the CSRF token.

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
export async function api(method, path, body = undefined, { signal, headers: extra = {} } = {}) {
  const headers = { Accept: "application/json", ...extra };
  if (method !== "GET" && method !== "HEAD") headers["X-CSRFToken"] = csrfToken();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
      signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network", "The server could not be reached.");
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = data?.error || {};
    if (response.status === 401 || response.status === 403) {
      // Logged out in another tab, or the session expired.
      if (!error.code || error.code === "unauthenticated") {
        throw new ApiError(response.status, "unauthenticated", "Your session has ended. Log in again.");
      }
    }
    throw new ApiError(
      response.status,
      error.code || "error",
      error.message || `The server answered ${response.status}.`,
      error.field || null,
    );
  }
  return data;
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
