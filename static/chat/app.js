// The chat page: sidebar, messages, composer and the status line, wired to
// the API and to GenerationStream (stream-client.js), which does the hard part.

import { api, ApiError, itemsOf, nextCursorOf } from "./api.js";
import { EventChannel } from "./event-channel.js";
import { renderMarkdown } from "./markdown.js";
import { GenerationStream, State, clientConfig } from "./stream-client.js";

// Within this many pixels of the bottom counts as "at the bottom": the list
// keeps following the stream; scrolled further up, it stays where it is.
const FOLLOW_SLACK_PX = 48;
// A conversation's messages load in pages; this bounds a runaway history.
const MAX_MESSAGE_PAGES = 50;
// Clicking Delete arms it; a second click within this window deletes.
const DELETE_CONFIRM_MS = 4_000;
// Where a running stream's text and position are kept across a refresh.
const SNAPSHOT_PREFIX = "chat.stream.";
const ACTIVE_STATUSES = new Set(["queued", "streaming"]);
const BUSY_STATES = new Set([State.CONNECTING, State.STREAMING, State.INTERRUPTED]);

const $ = (id) => document.getElementById(id);
const ui = {
  app: $("app"),
  sidebar: $("sidebar"),
  scrim: $("scrim"),
  toggle: $("toggle-sidebar"),
  newChat: $("new-chat"),
  list: $("conversation-list"),
  listEmpty: $("conversation-empty"),
  title: $("conversation-title"),
  messages: $("messages"),
  welcome: $("welcome"),
  jump: $("jump"),
  status: $("status"),
  statusState: $("status-state"),
  statusDetail: $("status-detail"),
  statusTokens: $("status-tokens"),
  statusRate: $("status-rate"),
  statusRetry: $("status-retry"),
  composer: $("composer"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
};

const page = {
  config: clientConfig(),
  conversations: [],
  conversationId: null,
  stream: null, // {client, generation, view} of the answer being followed
  lastAnswer: null, // {generationId, view}: what Regenerate regenerates
  follow: true,
  busy: false,
  openToken: 0, // guards against a slow load finishing after a newer one
};

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
};
window.chatDebug = debug;

// --- Message views ------------------------------------------------------------

function messageView(role, { messageId = null, label = "" } = {}) {
  const article = document.createElement("article");
  article.className = `message ${role}`;
  if (messageId != null) article.dataset.messageId = String(messageId);
  const labelEl = document.createElement("div");
  labelEl.className = "label";
  labelEl.textContent = label;
  const bubble = document.createElement("div");
  bubble.className = "bubble";
  const content = document.createElement("div");
  content.className = role === "assistant" ? "content markdown" : "content";
  bubble.append(content);
  const notice = document.createElement("div");
  notice.className = "notice";
  const actions = document.createElement("div");
  actions.className = "message-actions";
  if (role === "assistant") bubble.append(notice);
  article.append(labelEl, bubble, actions);
  ui.welcome.hidden = true;
  ui.messages.append(article);
  return { article, label: labelEl, content, notice, actions, role };
}

function renderText(view, text) {
  if (view.role === "assistant") view.content.replaceChildren(renderMarkdown(text));
  else view.content.textContent = text;
}

function setNotice(view, text, tone = "muted", action = null) {
  view.notice.replaceChildren();
  if (!text) return;
  view.notice.dataset.tone = tone;
  const span = document.createElement("span");
  span.textContent = text;
  view.notice.append(span);
  if (action) view.notice.append(action);
}

function button(label, className, onClick) {
  const el = document.createElement("button");
  el.type = "button";
  el.className = className;
  el.textContent = label;
  el.addEventListener("click", onClick);
  return el;
}

function clearMessages() {
  for (const el of [...ui.messages.querySelectorAll(".message")]) el.remove();
  ui.welcome.hidden = false;
}

// --- Scrolling: follow the stream unless the user scrolled up -----------------

function atBottom() {
  const el = ui.messages;
  return el.scrollHeight - el.scrollTop - el.clientHeight <= FOLLOW_SLACK_PX;
}

function followScroll() {
  if (page.follow) ui.messages.scrollTop = ui.messages.scrollHeight;
  ui.jump.hidden = page.follow || atBottom();
}

ui.messages.addEventListener("scroll", () => {
  page.follow = atBottom();
  ui.jump.hidden = page.follow;
});
ui.jump.addEventListener("click", () => {
  page.follow = true;
  followScroll();
});

// --- The status line ---------------------------------------------------------------

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

function setStatus(state, label, detail = "", { outcome = "", retry = false } = {}) {
  ui.status.dataset.state = state;
  if (outcome) ui.status.dataset.outcome = outcome;
  else delete ui.status.dataset.outcome;
  ui.statusState.textContent = label;
  ui.statusDetail.textContent = detail;
  ui.statusRetry.hidden = !retry;
}

function setMetrics(tokens, tokensPerSecond) {
  ui.statusTokens.textContent = tokens ? `${tokens} tokens` : "";
  ui.statusRate.textContent = tokensPerSecond ? `${tokensPerSecond.toFixed(1)} tok/s` : "";
}

function outcomeText(result) {
  if (result.status === "interrupted") return `Stopped early: ${REASON_TEXT[result.reason] || result.reason || "unknown reason"}.`;
  if (result.status === "failed") return result.error ? `The model failed: ${result.error}` : "The model failed before answering.";
  if (result.status === "cancelled") return "You stopped this answer.";
  return "";
}

function describe(state, detail) {
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
        text: `Streaming failed ${page.config.maxFailedAttempts} times in a row; this is the answer from one plain request.${extra}`,
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

// --- Following a generation ---------------------------------------------------------

function snapshotKey(generationId) {
  return SNAPSHOT_PREFIX + generationId;
}

function loadSnapshot(generationId) {
  try {
    const raw = sessionStorage.getItem(snapshotKey(generationId));
    const snapshot = raw ? JSON.parse(raw) : null;
    if (snapshot && typeof snapshot.text === "string" && /^\d+$/.test(snapshot.lastEventId)) return snapshot;
  } catch {
    // storage disabled or corrupt: resume from the start instead
  }
  return null;
}

function saveSnapshot(generationId, text, lastEventId) {
  try {
    if (lastEventId) sessionStorage.setItem(snapshotKey(generationId), JSON.stringify({ text, lastEventId }));
  } catch {
    // storage full or disabled: a refresh will replay from the start
  }
}

function dropSnapshot(generationId) {
  try {
    sessionStorage.removeItem(snapshotKey(generationId));
  } catch {
    // nothing to drop
  }
}

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
      if (BUSY_STATES.has(client.state) || client.state === null) {
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
  const { label, text, tone = "muted", outcome = "", retry = false } = describe(state, detail);
  view.article.dataset.state = state;
  if (outcome) view.article.dataset.outcome = outcome;
  setStatus(state, label, text, { outcome, retry });
  const retryButton = retry ? button("Retry now", "btn small", () => client.retryNow()) : null;
  setNotice(view, state === State.STREAMING || state === State.CONNECTING ? "" : text, tone, retryButton);
  setMetrics(client.tokens, client.tokensPerSecond);
  if (state === State.ENDED || state === State.FALLBACK) {
    dropSnapshot(generation.id);
    setLocation(page.conversationId, null);
  }
  setBusy(BUSY_STATES.has(state));
  if (!BUSY_STATES.has(state)) refreshActions();
  followScroll(); // notices and buttons change the height too
}

ui.statusRetry.addEventListener("click", () => page.stream?.client.retryNow());

// --- Composer, Stop and Regenerate ------------------------------------------------------

function setBusy(busy) {
  page.busy = busy;
  ui.prompt.disabled = busy;
  ui.send.disabled = busy;
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
  ui.stop.disabled = false;
  ui.composer.setAttribute("aria-busy", String(busy));
  if (busy) for (const el of ui.messages.querySelectorAll(".regenerate")) el.remove();
  else if (document.activeElement === document.body) ui.prompt.focus({ preventScroll: true });
}

function refreshActions() {
  for (const el of ui.messages.querySelectorAll(".regenerate")) el.remove();
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

function flash(message) {
  setStatus("error", "Error", message);
}

async function send(content) {
  if (page.busy || !content.trim()) return;
  setBusy(true);
  try {
    if (!page.conversationId) {
      const conversation = await api("POST", "/api/conversations", { title: titleFrom(content) });
      upsertConversation(conversation, { first: true });
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
    page.follow = true;
    attach(posted.generation, view);
    touchConversation(page.conversationId);
  } catch (error) {
    setBusy(false);
    flash(error.message);
  }
}

ui.stop.addEventListener("click", async () => {
  const stream = page.stream;
  if (!stream) return;
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
});

async function regenerate(generationId) {
  if (page.busy) return;
  setBusy(true);
  try {
    const answer = await api("POST", `/api/generations/${generationId}/regenerate`, {});
    const generation = answer.generation ?? answer;
    if (page.lastAnswer?.view) markPrevious(page.lastAnswer.view);
    const view = messageView("assistant", { messageId: generation.assistant_message_id });
    page.follow = true;
    attach(generation, view);
  } catch (error) {
    setBusy(false);
    refreshActions();
    flash(error.message);
  }
}

function markPrevious(view) {
  view.article.classList.add("previous");
  view.label.textContent = "Earlier answer";
}

// --- Conversations ----------------------------------------------------------------------

function setLocation(conversationId, generationId) {
  const params = new URLSearchParams();
  if (conversationId) params.set("conversation", conversationId);
  if (generationId) params.set("generation", generationId);
  const query = params.toString();
  history.replaceState(null, "", query ? `/?${query}` : "/");
}

function conversationTitle(conversation) {
  return conversation.title || "Untitled";
}

function upsertConversation(conversation, { first = false } = {}) {
  const index = page.conversations.findIndex((c) => c.id === conversation.id);
  if (index >= 0) page.conversations[index] = { ...page.conversations[index], ...conversation };
  else if (first) page.conversations.unshift(conversation);
  else page.conversations.push(conversation);
  renderConversations();
}

function touchConversation(id) {
  const index = page.conversations.findIndex((c) => c.id === id);
  if (index > 0) {
    page.conversations.unshift(...page.conversations.splice(index, 1));
    renderConversations();
  }
}

function renderConversations() {
  // A live update must not take the title field away from someone typing in
  // it (even detaching it for a moment would blur it); the rename re-renders.
  if (ui.list.querySelector("li.renaming")) return;
  const items = page.conversations.map((conversation) => {
    const li = document.createElement("li");
    li.className = "conversation";
    li.dataset.id = String(conversation.id);
    if (conversation.id === page.conversationId) li.classList.add("active");
    const open = button(conversationTitle(conversation), "conversation-open", () => {
      closeSidebar();
      openConversation(conversation.id);
    });
    open.title = conversationTitle(conversation);
    const rename = button("✎", "conversation-action rename", () => startRename(li, conversation));
    rename.setAttribute("aria-label", `Rename ${conversationTitle(conversation)}`);
    rename.title = "Rename";
    const remove = button("✕", "conversation-action delete", () => confirmDelete(remove, conversation));
    remove.setAttribute("aria-label", `Delete ${conversationTitle(conversation)}`);
    remove.title = "Delete";
    li.append(open, rename, remove);
    return li;
  });
  ui.list.replaceChildren(...items);
  ui.listEmpty.hidden = page.conversations.length > 0;
}

function startRename(li, conversation) {
  const input = document.createElement("input");
  input.className = "conversation-rename";
  input.value = conversation.title;
  input.maxLength = 200;
  input.setAttribute("aria-label", "New title");
  let done = false;
  const finish = async (save) => {
    if (done) return;
    done = true;
    li.classList.remove("renaming");
    const title = input.value.trim();
    if (!save || title === conversation.title) return renderConversations();
    try {
      const renamed = await renameConversation(conversation.id, title);
      upsertConversation(renamed);
      if (conversation.id === page.conversationId) ui.title.textContent = conversationTitle(renamed);
    } catch (error) {
      renderConversations();
      flash(error.message);
    }
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") finish(true);
    else if (event.key === "Escape") finish(false);
  });
  input.addEventListener("blur", () => finish(true));
  li.classList.add("renaming");
  li.replaceChildren(input);
  input.focus();
  input.select();
}

async function renameConversation(id, title) {
  try {
    return await api("PATCH", `/api/conversations/${id}`, { title });
  } catch (error) {
    if (error.status === 405) return api("PUT", `/api/conversations/${id}`, { title });
    throw error;
  }
}

function confirmDelete(buttonEl, conversation) {
  if (buttonEl.dataset.armed) return deleteConversation(conversation.id);
  buttonEl.dataset.armed = "1";
  buttonEl.textContent = "Delete?";
  buttonEl.classList.add("armed");
  setTimeout(() => {
    if (!buttonEl.isConnected) return;
    delete buttonEl.dataset.armed;
    buttonEl.textContent = "✕";
    buttonEl.classList.remove("armed");
  }, DELETE_CONFIRM_MS);
}

async function deleteConversation(id) {
  try {
    await api("DELETE", `/api/conversations/${id}`);
  } catch (error) {
    if (error.status !== 404) return flash(error.message);
  }
  page.conversations = page.conversations.filter((c) => c.id !== id);
  renderConversations();
  if (id === page.conversationId) newChat();
}

async function loadConversations() {
  const all = [];
  let cursor = null;
  for (let pageNo = 0; pageNo < MAX_MESSAGE_PAGES; pageNo++) {
    const data = await api("GET", `/api/conversations?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    all.push(...itemsOf(data));
    cursor = nextCursorOf(data);
    if (!cursor) break;
  }
  page.conversations = all;
  renderConversations();
}

function selectConversation(id) {
  page.conversationId = id;
  const conversation = page.conversations.find((c) => c.id === id);
  ui.title.textContent = conversation ? conversationTitle(conversation) : "Conversation";
  for (const li of ui.list.children) li.classList.toggle("active", li.dataset.id === String(id));
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
  renderConversations();
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
        page.lastAnswer = { generationId: generation.id, view };
        if (!generationId && ACTIVE_STATUSES.has(generation.status)) generationId = generation.id;
      }
    }
    previous = view;
  }
  if (loadError) flash(loadError.message);
  else setStatus("idle", "Ready");
  page.follow = true;
  followScroll();
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
  const { label, text, outcome = "" } = describe(State.ENDED, { status: generation.status, reason: generation.reason, error: generation.error });
  view.article.dataset.state = State.ENDED;
  view.article.dataset.outcome = generation.status;
  setStatus(State.ENDED, label, text, { outcome });
  setMetrics(generation.token_count, 0);
}

// --- Live updates from the per-user event channel -----------------------------------------

let refreshTimer = null;
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(async () => {
    try {
      await loadConversations();
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
  const shown = ui.messages.querySelector(`.message[data-generation-id="${CSS.escape(generationId)}"] .content`);
  if (ACTIVE_STATUSES.has(record.status)) openConversation(conversationId, { generationId });
  else if (!shown || !shown.textContent) openConversation(conversationId);
}

// --- Sidebar drawer on narrow screens -------------------------------------------------------

function openSidebar() {
  ui.app.classList.add("sidebar-open");
  ui.scrim.hidden = false;
  ui.toggle.setAttribute("aria-expanded", "true");
}

function closeSidebar() {
  ui.app.classList.remove("sidebar-open");
  ui.scrim.hidden = true;
  ui.toggle.setAttribute("aria-expanded", "false");
}

ui.toggle.addEventListener("click", () => (ui.app.classList.contains("sidebar-open") ? closeSidebar() : openSidebar()));
ui.scrim.addEventListener("click", closeSidebar);
ui.newChat.addEventListener("click", () => {
  closeSidebar();
  newChat();
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") closeSidebar();
});

// --- Start ---------------------------------------------------------------------------------

async function main() {
  const initial = JSON.parse($("chat-initial").textContent);
  setBusy(false);
  try {
    await loadConversations();
  } catch (error) {
    flash(error.message);
  }
  new EventChannel("/api/events/", { onEvent: onChannelEvent, config: page.config }).start();
  if (initial.conversation_id) {
    await openConversation(initial.conversation_id, { generationId: initial.generation_id });
  } else {
    newChat();
    if (initial.missing) setStatus("idle", "Not found", initial.missing);
  }
  document.body.dataset.ready = "1";
}

main();
