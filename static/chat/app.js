// The chat page's wiring: the composer, Stop and Regenerate, opening
// conversations, live updates, and following answers with GenerationStream
// (stream-client.js), which does the hard part. Message views, the status
// line, the sidebar and the refresh snapshots have modules of their own.

import { api, itemsOf, nextCursorOf } from "./api.js";
import { EventChannel } from "./event-channel.js";
import {
  button,
  clearMessages,
  followScroll,
  followStream,
  markPrevious,
  messageView,
  removeAll,
  renderText,
  setNotice,
  shownAnswer,
} from "./messages.js";
import { Sidebar, conversationTitle } from "./sidebar.js";
import { dropSnapshot, loadSnapshot, saveSnapshot } from "./snapshots.js";
import { announce, describe, flash, outcomeText, retryButton, setMetrics, setStatus } from "./status-line.js";
import { GenerationStream, State, clientConfig } from "./stream-client.js";

// A conversation's messages load in pages; this bounds a runaway history.
const MAX_MESSAGE_PAGES = 50;
const ACTIVE_STATUSES = new Set(["queued", "streaming"]);
const BUSY_STATES = new Set([State.CONNECTING, State.STREAMING, State.INTERRUPTED]);

const $ = (id) => document.getElementById(id);
const ui = {
  newChat: $("new-chat"),
  title: $("conversation-title"),
  composer: $("composer"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
};

const page = {
  config: clientConfig(),
  conversationId: null,
  stream: null, // {client, generation, view} of the answer being followed
  lastAnswer: null, // {generationId, view}: what Regenerate regenerates
  busy: false,
  openToken: 0, // guards against a slow load finishing after a newer one
};

const sidebar = new Sidebar({
  onOpen: (id) => openConversation(id),
  onRenamed: (conversation) => {
    if (conversation.id === page.conversationId) ui.title.textContent = conversationTitle(conversation);
  },
  onDeleted: (id) => {
    if (id === page.conversationId) newChat();
  },
  onError: flash,
});

// What tests (and curious people) can observe: every transition, every render.
const debug = {
  transitions: [],
  renders: 0,
  config: page.config,
  get state() {
    return page.stream?.client.state ?? null;
  },
  get generationId() {
    return page.stream?.generation.id ?? null;
  },
  /** Whether the stream client still retries in the background, and what it waits for. */
  get retrying() {
    return page.stream ? !page.stream.client.loop.closed : false;
  },
  get waiting() {
    return page.stream?.client.loop.waiting ?? null;
  },
  channel: { opens: 0, waiting: null },
};
window.chatDebug = debug;

// --- Following a generation ---------------------------------------------------------

function detachStream() {
  page.stream?.client.close();
  page.stream = null;
}

/**
 * Follow `generation` into `view`. A snapshot saved before a refresh (and
 * verified by the caller against the server) lets it resume from its last
 * event instead of replaying the whole answer.
 */
function attach(generation, view, { resume = false } = {}) {
  detachStream();
  const snapshot = resume ? loadSnapshot(generation.id) : null;
  view.article.dataset.generationId = generation.id;
  const client = new GenerationStream({
    generationId: generation.id,
    streamUrl: generation.stream_url || `/api/generations/${generation.id}/stream`,
    text: snapshot?.text ?? "",
    // Resuming with nothing kept: id 0 asks for the whole answer (for a
    // continuation, its earlier text arrives as one snapshot event).
    lastEventId: snapshot?.lastEventId ?? (resume ? "0" : ""),
    firstSeq: generation.first_seq ?? 1,
    config: page.config,
    onRender: (rendered) => {
      debug.renders++;
      renderText(view, rendered.text);
      setMetrics(rendered.tokens, rendered.tokensPerSecond);
      if (!isFinal(client)) {
        saveSnapshot(generation.id, rendered.text, rendered.lastEventId);
      }
      followScroll();
    },
    onState: (state, detail) => onStreamState(client, generation, view, state, detail),
  });
  page.stream = { client, generation, view };
  page.lastAnswer = { generationId: generation.id, view };
  setLocation(page.conversationId, generation.id);
  if (snapshot) renderText(view, snapshot.text);
  setBusy(true);
  followScroll();
  client.start();
}

/** The client has stopped: the answer is shown whole, or cannot be had. */
function isFinal(client) {
  const { state, detail } = client;
  return state === State.ENDED || state === State.FALLBACK || (state === State.ERROR && detail.final);
}

function onStreamState(client, generation, view, state, detail) {
  debug.transitions.push({
    state,
    detail: { ...detail },
    generationId: generation.id,
    text: client.text,
    shown: view.content.textContent,
    at: performance.now(),
  });
  if (page.stream?.client !== client) return;
  const { label, text, notice = "", tone = "muted", outcome = "", retry = false, announce: said } = describe(state, detail);
  view.article.dataset.state = state;
  if (outcome) view.article.dataset.outcome = outcome;
  setStatus(state, label, text, { outcome, retry });
  setNotice(view, notice, tone);
  announce(said);
  setMetrics(client.tokens, client.tokensPerSecond);
  if (state === State.ENDED || state === State.FALLBACK) {
    dropSnapshot(generation.id);
    setLocation(page.conversationId, null);
  }
  setBusy(BUSY_STATES.has(state));
  if (!BUSY_STATES.has(state)) refreshActions();
  followScroll(); // notices and buttons change the height too
}

retryButton.addEventListener("click", () => page.stream?.client.retryNow());

// --- Composer, Stop and Regenerate ------------------------------------------------------

function setBusy(busy) {
  page.busy = busy;
  // Read-only, not disabled: a disabled field would drop the focus, and the
  // composer keeps it while an answer streams.
  ui.prompt.readOnly = busy;
  ui.prompt.setAttribute("aria-disabled", String(busy));
  ui.send.disabled = busy;
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
  ui.stop.disabled = false;
  ui.composer.setAttribute("aria-busy", String(busy));
  if (busy) removeAll(".regenerate");
  else if (document.activeElement === document.body) ui.prompt.focus({ preventScroll: true });
}

function refreshActions() {
  removeAll(".regenerate");
  const last = page.lastAnswer;
  if (!last || page.busy || !last.view.article.isConnected) return;
  // After an Error the answer may still be running on the server: retry it, don't replace it.
  if (page.stream?.generation.id === last.generationId && page.stream.client.state === State.ERROR) return;
  last.view.actions.append(button("↻ Regenerate", "btn small regenerate", () => regenerate(last.generationId)));
}

function autosize() {
  ui.prompt.style.height = "auto";
  ui.prompt.style.height = `${Math.min(ui.prompt.scrollHeight, 192)}px`;
}

ui.prompt.addEventListener("input", autosize);
ui.prompt.addEventListener("keydown", (event) => {
  // Enter sends; Shift+Enter (and Enter while composing with an IME) is a new line.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send(ui.prompt.value);
});

function titleFrom(content) {
  const line = content.trim().split("\n")[0];
  return line.length > 60 ? `${line.slice(0, 57)}…` : line;
}

async function send(content) {
  if (page.busy || !content.trim()) return;
  setBusy(true);
  try {
    if (!page.conversationId) {
      const conversation = await api("POST", "/api/conversations", { title: titleFrom(content) });
      sidebar.upsert(conversation, { first: true });
      selectConversation(conversation.id);
    }
    const posted = await api(
      "POST",
      `/api/conversations/${page.conversationId}/messages`,
      { content, stream: true },
      // A retried POST (flaky network) must not ask twice.
      { headers: { "Idempotency-Key": crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2) } },
    );
    ui.prompt.value = "";
    autosize();
    const userView = messageView("user", { messageId: posted.message.id });
    renderText(userView, posted.message.content);
    const view = messageView("assistant", { messageId: posted.generation.assistant_message_id });
    followStream();
    attach(posted.generation, view);
    sidebar.touch(page.conversationId);
  } catch (error) {
    setBusy(false);
    flash(error.message);
  }
}

ui.stop.addEventListener("click", stop);

async function stop() {
  const stream = page.stream;
  if (!stream || !page.busy || ui.stop.disabled) return;
  ui.stop.disabled = true;
  try {
    await api("POST", `/api/generations/${stream.generation.id}/cancel`);
    // The stream delivers the `cancelled` event; a disconnected client gets
    // it when it reconnects.
    stream.client.retryNow();
  } catch (error) {
    ui.stop.disabled = false;
    flash(error.message);
  }
}

async function regenerate(generationId) {
  if (page.busy) return;
  setBusy(true);
  try {
    const answer = await api("POST", `/api/generations/${generationId}/regenerate`, {});
    const generation = answer.generation ?? answer;
    if (page.lastAnswer?.view) markPrevious(page.lastAnswer.view);
    const view = messageView("assistant", { messageId: generation.assistant_message_id });
    followStream();
    attach(generation, view);
  } catch (error) {
    setBusy(false);
    refreshActions();
    flash(error.message);
  }
}

// --- Conversations ----------------------------------------------------------------------

function setLocation(conversationId, generationId) {
  const params = new URLSearchParams();
  if (conversationId) params.set("conversation", conversationId);
  if (generationId) params.set("generation", generationId);
  const query = params.toString();
  history.replaceState(null, "", query ? `/?${query}` : "/");
}

function selectConversation(id) {
  page.conversationId = id;
  const conversation = sidebar.find(id);
  ui.title.textContent = conversation ? conversationTitle(conversation) : "Conversation";
  sidebar.select(id);
  setLocation(id, null);
}

function newChat() {
  detachStream();
  page.conversationId = null;
  page.lastAnswer = null;
  clearMessages();
  ui.title.textContent = "New chat";
  setStatus("idle", "Ready");
  setMetrics(0, 0);
  setLocation(null, null);
  setBusy(false);
  sidebar.activeId = null;
  sidebar.render();
  ui.prompt.focus();
}

async function loadMessages(conversationId) {
  const all = [];
  let cursor = null;
  for (let pageNo = 0; pageNo < MAX_MESSAGE_PAGES; pageNo++) {
    const query = `?limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
    const data = await api("GET", `/api/conversations/${conversationId}/messages${query}`);
    all.push(...itemsOf(data));
    cursor = nextCursorOf(data);
    if (!cursor) break;
  }
  return all.sort((a, b) => a.id - b.id);
}

/** The generation an assistant message belongs to, if the API says. */
function generationOf(message) {
  const generation = message.generation ?? null;
  if (generation && typeof generation === "object") return generation;
  const id = message.generation_id ?? generation;
  return id ? { id, status: message.generation_status ?? message.status ?? null } : null;
}

/**
 * Show a conversation and, if one of its answers is still being generated,
 * resume following it. `generationId` (from the URL after a refresh) names it
 * directly; otherwise the messages list says which answer is still running.
 */
async function openConversation(conversationId, { generationId = null } = {}) {
  const token = ++page.openToken;
  detachStream();
  page.lastAnswer = null;
  selectConversation(conversationId);
  clearMessages();
  setStatus("idle", "Loading");
  setMetrics(0, 0);
  setBusy(false);
  let messages = [];
  let loadError = null;
  try {
    messages = await loadMessages(conversationId);
  } catch (error) {
    if (token !== page.openToken) return;
    if (error.status === 404) return newChat();
    loadError = error; // still resume a running answer below: it matters more than the history
  }
  if (token !== page.openToken) return;
  const views = new Map();
  let previous = null;
  for (const message of messages) {
    const view = messageView(message.role === "user" ? "user" : "assistant", { messageId: message.id });
    renderText(view, message.content);
    views.set(message.id, { view, message });
    if (view.role === "assistant") {
      if (previous?.role === "assistant") markPrevious(previous);
      const generation = generationOf(message);
      if (generation?.id) {
        view.article.dataset.generationId = generation.id;
        // How it ended, as when it was followed live ("You stopped this answer.").
        setNotice(view, outcomeText({ status: generation.status }), generation.status === "failed" ? "danger" : "muted");
        page.lastAnswer = { generationId: generation.id, view };
        if (!generationId && ACTIVE_STATUSES.has(generation.status)) generationId = generation.id;
      }
    }
    previous = view;
  }
  if (loadError) flash(loadError.message);
  else setStatus("idle", "Ready");
  followStream();
  if (generationId) await resume(generationId, views, token);
  if (!page.busy) refreshActions();
}

/** Verify the generation with the server, then follow it if it still runs. */
async function resume(generationId, views, token) {
  let generation;
  try {
    generation = await api("GET", `/api/generations/${generationId}`);
  } catch (error) {
    dropSnapshot(generationId);
    if (error.status !== 404) flash(error.message);
    return;
  }
  if (token !== page.openToken) return;
  const known = views.get(generation.assistant_message_id);
  const view = known?.view ?? messageView("assistant", { messageId: generation.assistant_message_id });
  page.lastAnswer = { generationId: generation.id, view };
  if (ACTIVE_STATUSES.has(generation.status)) {
    attach(generation, view, { resume: true });
    return;
  }
  // It ended while nobody watched: the stored message is the answer.
  dropSnapshot(generation.id);
  setLocation(page.conversationId, null);
  if (!known || !known.message.content) renderText(view, generation.text ?? "");
  const ended = { status: generation.status, reason: generation.reason, error: generation.error };
  const { label, text, notice = "", tone = "muted", outcome = "" } = describe(State.ENDED, ended);
  view.article.dataset.state = State.ENDED;
  view.article.dataset.outcome = generation.status;
  setNotice(view, notice, tone);
  setStatus(State.ENDED, label, text, { outcome });
  setMetrics(generation.token_count, 0);
}

// --- Live updates from the per-user event channel -----------------------------------------

let refreshTimer = null;
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(async () => {
    try {
      await sidebar.load();
    } catch {
      // the next event or a reload will catch up
    }
  }, 100);
}

function onChannelEvent({ type, data }) {
  const record = data && typeof data === "object" ? data : {};
  const conversationId = record.conversation_id ?? record.conversation?.id ?? null;
  if (type.startsWith("conversation")) {
    if (type.endsWith("deleted") && conversationId === page.conversationId) newChat();
    else if (type.endsWith("renamed") && conversationId === page.conversationId && record.conversation) {
      ui.title.textContent = conversationTitle(record.conversation);
    }
    refreshSoon();
    return;
  }
  if (!type.startsWith("generation")) return;
  refreshSoon(); // the conversation moved to the top
  const generationId = record.generation_id ?? null;
  if (conversationId !== page.conversationId || page.busy || !generationId) return;
  if (generationId === page.stream?.generation.id) return; // ours
  // An answer started or ended on another device: show it, streaming if it still runs.
  const shown = shownAnswer(generationId);
  if (ACTIVE_STATUSES.has(record.status)) openConversation(conversationId, { generationId });
  else if (!shown || !shown.textContent) openConversation(conversationId);
}

ui.newChat.addEventListener("click", () => {
  sidebar.close();
  newChat();
});
// Escape closes the drawer if it is open, else stops a running answer.
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape" || event.defaultPrevented) return;
  if (sidebar.isOpen) sidebar.close();
  else stop();
});

// A long placeholder would wrap, and be clipped, in a phone's narrow field.
const narrow = matchMedia("(max-width: 760px)");
const widePlaceholder = ui.prompt.placeholder;
function fitPlaceholder() {
  ui.prompt.placeholder = narrow.matches ? ui.prompt.dataset.narrowPlaceholder : widePlaceholder;
}
narrow.addEventListener("change", fitPlaceholder);
fitPlaceholder();

// --- Start ---------------------------------------------------------------------------------

async function main() {
  const initial = JSON.parse($("chat-initial").textContent);
  setBusy(false);
  try {
    await sidebar.load();
  } catch (error) {
    flash(error.message);
  }
  // Events missed while the channel was down are replayed by Last-Event-ID; the list is reloaded too, in
  // case the server no longer had them.
  const onOpen = () => debug.channel.opens++ > 0 && refreshSoon();
  const channel = new EventChannel("/api/events/", { onEvent: onChannelEvent, onOpen, config: page.config });
  Object.defineProperty(debug.channel, "waiting", { get: () => channel.loop.waiting });
  channel.start();
  if (initial.conversation_id) {
    await openConversation(initial.conversation_id, { generationId: initial.generation_id });
  } else {
    newChat();
    if (initial.missing) setStatus("idle", "Not found", initial.missing);
  }
  document.body.dataset.ready = "1";
}

main();
