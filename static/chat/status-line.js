// The status line above the composer, and what each stream state says.

import { State } from "./stream-client.js";

const status = document.getElementById("status");
const stateEl = document.getElementById("status-state");
const detailEl = document.getElementById("status-detail");
const tokensEl = document.getElementById("status-tokens");
const rateEl = document.getElementById("status-rate");
export const retryButton = document.getElementById("status-retry");
// The polite live region: state changes and the end of an answer, never the
// counters (they change on every render).
const announcer = document.getElementById("announcer");

const OUTCOME_LABELS = {
  complete: "Complete",
  cancelled: "Stopped",
  interrupted: "Interrupted by the server",
  failed: "Failed",
};

const REASON_TEXT = {
  upstream_stall: "the model stopped sending",
  upstream_error: "the model's connection failed",
  server_shutdown: "the server restarted",
  worker_lost: "the server running it went away",
  operator: "an operator stopped it",
};

export function setStatus(state, label, detail = "", { outcome = "", retry = false } = {}) {
  status.dataset.state = state;
  if (outcome) status.dataset.outcome = outcome;
  else delete status.dataset.outcome;
  stateEl.textContent = label;
  detailEl.textContent = detail;
  retryButton.hidden = !retry;
}

export function setMetrics(tokens, tokensPerSecond) {
  tokensEl.textContent = tokens ? `${tokens} tokens` : "";
  rateEl.textContent = tokensPerSecond ? `${tokensPerSecond.toFixed(1)} tok/s` : "";
}

/** Have screen readers say `text` (politely: after what they are saying). */
export function announce(text) {
  if (!text) return;
  // The same words again would not be announced: make them differ invisibly.
  announcer.textContent = announcer.textContent === text ? `${text}\u00a0` : text;
}

/** An error outside any stream (a failed post, rename, load). */
export function flash(message) {
  setStatus("error", "Error", message);
  announce(message);
}

/** The sentence under an ended answer, from its status (and reason, when known). */
export function outcomeText({ status, reason = "" }) {
  if (status === "interrupted") return `Stopped early: ${REASON_TEXT[reason] || "the answer was cut short"}.`;
  if (status === "failed") return "The model could not finish this answer.";
  if (status === "cancelled") return "You stopped this answer.";
  return "";
}

/**
 * What a stream state shows: the badge `label`, one sentence in the status
 * line (`text`, with the one Retry button if `retry`), the sentence kept
 * under the answer (`notice`: its outcome), and what the live region
 * announces (`announce`: state changes and the end of an answer only).
 */
export function describe(state, detail) {
  switch (state) {
    case State.CONNECTING:
      return { label: "Connecting", text: "", announce: "" };
    case State.STREAMING:
      return { label: "Streaming", text: "", announce: detail.attempt > 1 ? "Reconnected; the answer continues." : "" };
    case State.INTERRUPTED: {
      if (detail.offline) {
        const text = "You are offline. The answer continues when the connection is back.";
        return { label: "Interrupted", text, tone: "warn", announce: text };
      }
      if (detail.stalled) {
        // The connection is fine (keepalives come); the model is silent, and the server decides.
        const text = `${detail.reason} Waiting for it…`;
        return { label: "Interrupted", text, tone: "warn", announce: "The model has stopped sending." };
      }
      if (detail.fallback) {
        const text = "The connection keeps failing; loading the answer without streaming…";
        return { label: "Interrupted", text, tone: "warn", retry: true, announce: "Connection lost. Reconnecting." };
      }
      // A dead or cut connection: a new one is on its way, the text so far stays.
      const text = `${detail.reason} Reconnecting…`;
      return { label: "Reconnecting…", text, tone: "warn", retry: true, announce: "Connection lost. Reconnecting." };
    }
    case State.FALLBACK: {
      const outcome = outcomeText(detail);
      const text = "Streaming kept failing, so the complete answer was loaded in one piece.";
      return { label: "Fallback", text, notice: outcome, tone: "info", outcome: detail.status, announce: `Answer loaded. ${outcome}` };
    }
    case State.ERROR: {
      if (detail.final) return { label: "Error", text: detail.message, tone: "danger", announce: detail.message };
      const text = "The server can't be reached; the text so far is kept and the page keeps trying.";
      return { label: "Error", text, tone: "danger", retry: true, announce: "The server can't be reached. Still trying." };
    }
    case State.ENDED: {
      const outcome = outcomeText(detail);
      return {
        label: OUTCOME_LABELS[detail.status] || detail.status,
        text: "",
        notice: outcome,
        tone: detail.status === "failed" ? "danger" : "muted",
        outcome: detail.status,
        announce: detail.status === "complete" ? "Answer complete." : `Answer ended. ${outcome}`,
      };
    }
    default:
      return { label: state, text: "", announce: "" };
  }
}
