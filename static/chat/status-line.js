// The status line above the composer, and what each stream state says.

import { State } from "./stream-client.js";

const status = document.getElementById("status");
const stateEl = document.getElementById("status-state");
const detailEl = document.getElementById("status-detail");
const tokensEl = document.getElementById("status-tokens");
const rateEl = document.getElementById("status-rate");
export const retryButton = document.getElementById("status-retry");

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

/** An error outside any stream (a failed post, rename, load). */
export function flash(message) {
  setStatus("error", "Error", message);
}

function outcomeText(result) {
  if (result.status === "interrupted") return `Stopped early: ${REASON_TEXT[result.reason] || result.reason || "unknown reason"}.`;
  if (result.status === "failed") return result.error ? `The model failed: ${result.error}` : "The model failed before answering.";
  if (result.status === "cancelled") return "You stopped this answer.";
  return "";
}

/** {label, text, tone, outcome, retry} for a stream state and its detail. */
export function describe(state, detail, config) {
  switch (state) {
    case State.CONNECTING:
      return { label: "Connecting", text: "" };
    case State.STREAMING:
      return { label: "Streaming", text: detail.attempt > 1 ? "Resumed." : "" };
    case State.INTERRUPTED: {
      const waitS = detail.retryAt ? Math.max(0, (detail.retryAt - Date.now()) / 1000) : 0;
      const next = detail.fallback
        ? "Loading the complete answer without streaming…"
        : `Resuming in ${waitS.toFixed(1)} s…`;
      return { label: "Interrupted", text: `${detail.reason} ${next}`, tone: "warn", retry: true };
    }
    case State.FALLBACK: {
      const extra = detail.status && detail.status !== "complete" ? ` ${outcomeText(detail)}` : "";
      return {
        label: "Fallback",
        text: `Streaming failed ${config.maxFailedAttempts} times in a row; this is the answer from one plain request.${extra}`,
        tone: "info",
        outcome: detail.status,
      };
    }
    case State.ERROR:
      return { label: "Error", text: `${detail.message} The text so far is kept.`, tone: "danger", retry: true };
    case State.ENDED:
      return {
        label: OUTCOME_LABELS[detail.status] || detail.status,
        text: outcomeText(detail),
        tone: detail.status === "failed" ? "danger" : "muted",
        outcome: detail.status,
      };
    default:
      return { label: state, text: "" };
  }
}
