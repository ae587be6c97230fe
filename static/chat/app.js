// The chat page's wiring: the composer (with its model and JSON choices),
// Stop, Regenerate and Edit, versions, opening conversations, live updates,
// and following answers with GenerationStream (stream-client.js), which does
// the hard part. Message views, the message tree, the status line, the
// sidebar and the refresh snapshots have modules of their own.

import { api, apiStream, itemsOf, nextCursorOf } from "./api.js";
import { MessageTree } from "./branches.js";
import { EventChannel } from "./event-channel.js";
import {
  button,
  clearMessages,
  copyText,
  followScroll,
  followStream,
  messageView,
  removeAll,
  renderReasoning,
  renderText,
  setNotice,
  setTime,
  setVersions,
  showsAll,
  shownAnswer,
  startEdit,
} from "./messages.js";
import { AttemptFailed, RetryLoop, backoffDelay, retryDelay } from "./recovery.js";
import { Sidebar, conversationTitle } from "./sidebar.js";
import { dropSnapshot, loadSnapshot, saveSnapshot } from "./snapshots.js";
import { announce, describe, flash, outcomeText, retryButton, setMetrics, setStatus } from "./status-line.js";
import { GenerationStream, State, clientConfig } from "./stream-client.js";
import { chooseTheme, chosenTheme } from "./theme.js";

// A conversation's messages load in pages; this bounds a runaway history.
const MAX_MESSAGE_PAGES = 50;
const ACTIVE_STATUSES = new Set(["queued", "streaming"]);
// An answer that stopped short: Continue goes on from its text.
const CONTINUABLE_STATUSES = new Set(["interrupted", "failed"]);

/** An answer that ended before the model finished it: its unfinished tail (half a table row) stays hidden. */
const cutShort = (status) => status === "cancelled" || CONTINUABLE_STATUSES.has(status);
const BUSY_STATES = new Set([State.CONNECTING, State.STREAMING, State.INTERRUPTED]);

const $ = (id) => document.getElementById(id);
const ui = {
  newChat: $("new-chat"),
  title: $("conversation-title"),
  composer: $("composer"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
  model: $("model"),
  json: $("json-mode"),
};

const page = {
  config: clientConfig(),
  conversationId: null,
  stream: null, // {client, generation, view} of the answer being followed
  lastAnswer: null, // {generationId, view}: what Regenerate regenerates
  queue: [], // [{generation, view}]: answers sent while one streamed, followed in turn
  sending: null, // the retry loop of a message on its way
  tree: new MessageTree(), // the open conversation's messages
  views: new Map(), // message id → its view, for the branch shown
  models: [], // GET /api/models: {id, label, provider, model}, the default first
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
function attach(generation, view, { resume = false, opened = null, from = null } = {}) {
  detachStream();
  // `from`: what the bubble holds when a continuation goes on after it ({text, reasoning, lastEventId}).
  const snapshot = from ?? (resume ? loadSnapshot(generation.id) : null);
  view.article.dataset.generationId = generation.id;
  const client = new GenerationStream({
    generationId: generation.id,
    streamUrl: generation.stream_url || `/api/generations/${generation.id}/stream`,
    text: snapshot?.text ?? "",
    reasoning: snapshot?.reasoning ?? "",
    // Resuming with nothing kept: id 0 asks for the whole answer (for a
    // continuation, its earlier text arrives as one snapshot event).
    lastEventId: snapshot?.lastEventId ?? (resume ? "0" : ""),
    firstSeq: generation.first_seq ?? 1,
    opened,
    config: page.config,
    onRender: (rendered) => {
      debug.renders++;
      renderThinking(view, rendered);
      renderText(view, rendered.text, { format: generation.response_format, streaming: !isFinal(client) });
      setMetrics(rendered.tokens, rendered.tokensPerSecond);
      if (!isFinal(client)) {
        saveSnapshot(generation.id, rendered.text, rendered.reasoning, rendered.lastEventId);
      }
      followScroll();
    },
    onState: (state, detail) => onStreamState(client, generation, view, state, detail),
  });
  page.stream = { client, generation, view };
  page.lastAnswer = { generationId: generation.id, view };
  setLocation(page.conversationId, generation.id);
  if (snapshot) {
    // Kept before any text, the answer was mid-thought: the block goes on showing it thinking, and times it.
    if (snapshot.reasoning && !snapshot.text) renderThinking(view, { reasoning: snapshot.reasoning, thinking: true });
    else renderReasoning(view, snapshot.reasoning, { ms: generation.reasoning_ms });
    renderText(view, snapshot.text, { format: generation.response_format, streaming: true });
  }
  setBusy(true);
  followScroll();
  client.start();
}

/** The Thinking block, timed from when the thinking is first seen live until the text starts. */
function renderThinking(view, { reasoning, thinking }) {
  const now = performance.now();
  if (thinking) view.thinkingSince ??= now;
  else if (view.thinkingSince != null) {
    view.thoughtMs = (view.thoughtMs ?? 0) + now - view.thinkingSince;
    view.thinkingSince = null;
  }
  renderReasoning(view, reasoning, { thinking, ms: view.thoughtMs ?? 0 });
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
    // A tail held back while streaming (an unfinished table row) shows now.
    if (!showsAll(view, client.text)) {
      debug.renders++;
      renderText(view, client.text, { format: generation.response_format, cut: cutShort(detail.status) });
    }
    renderThinking(view, { reasoning: client.reasoning, thinking: false });
    const message = page.tree.byId.get(generation.assistant_message_id);
    if (message) {
      const ended = { ...message.generation, status: detail.status ?? "complete", reasoning_ms: Math.round(view.thoughtMs ?? 0) };
      page.tree.add({ ...message, content: client.text, reasoning: client.reasoning, generation: ended });
    }
  }
  setBusy(BUSY_STATES.has(state));
  if (!BUSY_STATES.has(state)) refreshActions();
  followScroll(); // notices and buttons change the height too
  if ((state === State.ENDED || state === State.FALLBACK) && page.queue.length) {
    const next = page.queue.shift();
    attach(next.generation, next.view);
  }
}

retryButton.addEventListener("click", () => (page.stream ? page.stream.client.retryNow() : page.sending?.now()));

// --- Composer, Stop and Regenerate ------------------------------------------------------

function setBusy(busy) {
  page.busy = busy;
  // The composer takes typing while an answer streams: a message sent then
  // waits behind it (multitask "enqueue"). Only one message is on its way at a time.
  ui.send.disabled = Boolean(page.sending);
  ui.stop.hidden = !busy;
  ui.stop.disabled = false;
  ui.composer.setAttribute("aria-busy", String(busy));
  if (busy) {
    removeAll(".regenerate");
    for (const control of document.querySelectorAll(".continue")) control.disabled = true;
  } else if (document.activeElement === document.body) ui.prompt.focus({ preventScroll: true });
}

function refreshActions() {
  removeAll(".regenerate, .continue");
  if (page.busy) return;
  // Every interrupted or failed answer with partial text on the branch can go on from it.
  for (const [messageId, view] of page.views) {
    const message = page.tree.byId.get(messageId);
    const generation = message && generationOf(message);
    if (view.role !== "assistant" || !CONTINUABLE_STATUSES.has(generation?.status) || !message.content) continue;
    const control = button("↪ Continue", "btn small continue", () => continueAnswer(message.id, control));
    control.setAttribute("aria-label", "Continue this answer from where it stopped");
    view.actions.append(control);
  }
  const last = page.lastAnswer;
  if (!last || !last.view.article.isConnected) return;
  // After an Error the answer may still be running on the server: retry it, don't replace it.
  if (page.stream?.generation.id === last.generationId && page.stream.client.state === State.ERROR) return;
  last.view.actions.append(button("↻ Regenerate", "btn small regenerate", () => regenerate(last.generationId)));
}

/** Go on from an interrupted answer's text, in the same bubble: its continuation's tokens follow the text shown. */
async function continueAnswer(messageId, control) {
  if (page.busy) return;
  const message = page.tree.byId.get(messageId);
  const view = page.views.get(messageId);
  control.disabled = true;
  ui.prompt.focus({ preventScroll: true }); // the button goes once the answer runs
  setBusy(true);
  try {
    const generation = await api("POST", `/api/generations/${generationOf(message).id}/continue`);
    page.tree.add({ ...message, generation });
    followStream();
    attach(generation, view, {
      from: { text: message.content, reasoning: message.reasoning ?? "", lastEventId: String(generation.first_seq - 1) },
    });
  } catch (error) {
    setBusy(false);
    refreshActions();
    flash(error.message);
  }
}

/** What a new answer is asked for with: the picked model, and JSON if the toggle is on. */
function chosenModel() {
  return ui.model.value || undefined;
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

/**
 * Send a message. While the server cannot be reached (offline, no answer),
 * it says so and tries again, as the streams do: when the network is back,
 * at once; the same Idempotency-Key each time, so it is posted once. Stop
 * gives up.
 */
async function send(content) {
  if (page.sending || !content.trim()) return;
  setBusy(true);
  const key = idempotencyKey();
  let problem = null;
  const loop = new RetryLoop({
    config: page.config,
    attempt: async () => {
      try {
        await sendOnce(content, key);
      } catch (error) {
        problem = error;
        // Only what asking again can fix is tried again: no answer (each try waited responseMs
        // already: no backoff on top), or a server restarting.
        if (error.status === 0) throw new AttemptFailed(error.message, { unanswered: true });
        const retryable = error.status === 502 || error.status === 503 || error.status === 504;
        throw new AttemptFailed(error.message, { retryable, status: error.status });
      }
      problem = null;
      return true;
    },
    onFailure: (failure, { failures }) => {
      if (!failure.retryable) return null;
      const delay = failure.unanswered ? backoffDelay(0, page.config) : retryDelay(failure, failures - 1, page.config);
      setStatus("error", "Error", `Not sent yet: ${failure.message} Sending again when it answers…`, { retry: true });
      return delay;
    },
    onOffline: () => setStatus("error", "Offline", "You are offline. The message is sent when the connection is back."),
  });
  page.sending = loop;
  ui.send.disabled = true;
  await loop.run();
  if (page.sending === loop) page.sending = null;
  ui.send.disabled = false;
  if (problem && !page.stream) {
    setBusy(false);
    if (!loop.givenUp) flash(problem.message);
  }
}

async function sendOnce(content, key) {
  if (!page.conversationId) {
    const conversation = await api("POST", "/api/conversations", { title: titleFrom(content) }, { timeoutMs: page.config.responseMs });
    sidebar.upsert(conversation, { first: true });
    selectConversation(conversation.id);
  }
  // After the answer shown last: on an older branch, the new message goes on from there.
  const parent = page.tree.branch().at(-1);
  // An answer still streaming goes on; this one is answered after it (the server queues it).
  const posted = await postMessage(content, parent ? parent.id : null, {
    response_format: ui.json.checked ? "json" : "text",
    multitask: "enqueue",
  }, key);
  ui.prompt.value = "";
  autosize();
  const userView = showMessage(posted.message);
  setVersionsOf(userView, posted.message.id);
  const view = showMessage(assistantOf(posted));
  followStream();
  sidebar.touch(page.conversationId);
  if (posted.generation.status === "queued" && page.stream && !isFinal(page.stream.client)) {
    posted.opened?.body?.cancel().catch(() => {}); // followed once its turn comes
    view.article.dataset.generationId = posted.generation.id;
    setNotice(view, "Queued: answered once the answer above has ended.");
    page.queue.push({ generation: posted.generation, view });
    return;
  }
  attach(posted.generation, view, { opened: posted.opened });
}

function idempotencyKey() {
  return crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2);
}

/**
 * Post a user message after `parentId` (null: a first message); add it and its answer to the tree.
 * The POST's response is the answer's stream (one request per answer): `opened`, for `attach`.
 */
async function postMessage(content, parentId, extra = {}, key = idempotencyKey()) {
  const path = `/api/conversations/${page.conversationId}/messages`;
  const body = { content, stream: true, model: chosenModel(), parent_id: parentId, ...extra };
  // A retried POST (flaky network) must not ask twice; no answer in a few seconds is a failure to retry.
  const options = { headers: { "Idempotency-Key": key }, timeoutMs: page.config.responseMs };
  let posted, opened;
  try {
    ({ data: posted, stream: opened } = await apiStream("POST", path, body, options));
  } catch (error) {
    if (error.status !== 0) throw error;
    // Cut before the answer was named: the same key asks again, for the answer it made if it made one.
    posted = await api("POST", path, body, options);
  }
  page.tree.add(posted.message);
  page.tree.add(assistantOf(posted));
  if (sidebar.find(page.conversationId)) {
    sidebar.upsert({ id: page.conversationId, model: chosenModel() ?? "", updated_at: posted.message.created_at });
  }
  return { ...posted, opened };
}

/** The (empty) assistant message a POST created, as the messages list would show it. */
function assistantOf({ message, generation }) {
  return {
    id: generation.assistant_message_id,
    conversation_id: generation.conversation_id,
    role: "assistant",
    content: "",
    created_at: generation.created_at,
    parent_id: message.role === "user" ? message.id : message.parent_id,
    generation,
  };
}

/** Send an edited version of a user message: a new branch from the same parent. */
async function sendEdit(messageId, content) {
  if (page.busy) return;
  const edited = page.tree.byId.get(messageId);
  setBusy(true);
  try {
    const posted = await postMessage(content, edited?.parent_id ?? null);
    page.tree.pick(posted.generation.assistant_message_id);
    renderBranch();
    followStream();
    attach(posted.generation, page.views.get(posted.generation.assistant_message_id), { opened: posted.opened });
  } catch (error) {
    setBusy(false);
    flash(error.message);
  }
}

ui.stop.addEventListener("click", stop);

async function stop() {
  if (page.sending && !page.stream) {
    // Still trying to send: give up, the text stays in the composer.
    page.sending.givenUp = true;
    page.sending.close();
    setStatus("idle", "Not sent", "The message was not sent; it is still in the composer.");
    return;
  }
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
  ui.prompt.focus({ preventScroll: true }); // the button goes while the new version runs
  setBusy(true);
  try {
    const answer = await api("POST", `/api/generations/${generationId}/regenerate`, { model: chosenModel() });
    const generation = answer.generation;
    // The new answer is a version beside the old one, shown in its place.
    page.tree.add(assistantOf(answer));
    page.tree.pick(generation.assistant_message_id);
    renderBranch();
    followStream();
    attach(generation, page.views.get(generation.assistant_message_id));
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
  if (conversation?.model && page.models.some((m) => m.id === conversation.model)) ui.model.value = conversation.model;
  sidebar.select(id);
  setLocation(id, null);
}

function newChat() {
  detachStream();
  page.queue = [];
  page.conversationId = null;
  page.lastAnswer = null;
  page.tree = new MessageTree();
  page.views.clear();
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
  page.queue = []; // the server still answers them; reopened, the conversation shows them
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
  page.tree = new MessageTree(messages);
  // A generation named by the URL (after a refresh) shows on its branch, whichever it is.
  const named = generationId && messages.find((m) => generationOf(m)?.id === generationId);
  if (named) page.tree.pick(named.id);
  const running = renderBranch();
  if (!generationId) generationId = running;
  if (loadError) flash(loadError.message);
  else setStatus("idle", "Ready");
  followStream();
  if (generationId) await resume(generationId, token);
  if (!page.busy) refreshActions();
}

/** The model's label for a generation's model name, if the deployment still lists it. */
function modelLabel(generation) {
  const model = page.models.find((m) => m.model === generation?.model);
  return page.models.length > 1 && model ? model.label : "";
}

/** Add a message's view: its text, time and actions (the versions are set by the caller). */
function showMessage(message) {
  const role = message.role === "user" ? "user" : "assistant";
  const generation = generationOf(message);
  const view = messageView(role, { messageId: message.id, label: role === "assistant" ? modelLabel(generation) : "" });
  renderReasoning(view, message.reasoning ?? "", { ms: generation?.reasoning_ms ?? 0 });
  renderText(view, message.content, { format: generation?.response_format ?? "text", cut: cutShort(generation?.status) });
  setTime(view, message.created_at);
  page.views.set(message.id, view);
  if (role === "assistant") {
    const copy = button("Copy", "btn small copy-answer", () => copyText(view.source, copy));
    copy.setAttribute("aria-label", "Copy the answer (Markdown)");
    view.actions.append(copy);
  } else {
    const edit = button("Edit", "btn small edit", () => {
      if (!page.busy) startEdit(view, (text) => sendEdit(message.id, text));
    });
    edit.setAttribute("aria-label", "Edit this message");
    view.actions.append(edit);
  }
  return view;
}

function setVersionsOf(view, messageId) {
  const siblings = page.tree.siblings(messageId);
  setVersions(view, siblings.indexOf(messageId), siblings.length, (index) => pickVersion(siblings[index]));
}

/**
 * Show the branch the tree picks, from the top. Returns the generation id of a
 * still-running answer on it (the last one), if any.
 */
function renderBranch() {
  clearMessages();
  page.views.clear();
  page.lastAnswer = null;
  let running = null;
  for (const message of page.tree.branch()) {
    const view = showMessage(message);
    setVersionsOf(view, message.id);
    const generation = generationOf(message);
    if (view.role === "assistant" && generation?.id) {
      view.article.dataset.generationId = generation.id;
      // How it ended, as when it was followed live ("You stopped this answer.").
      setNotice(view, outcomeText({ status: generation.status }), generation.status === "failed" ? "danger" : "muted");
      page.lastAnswer = { generationId: generation.id, view };
      running = ACTIVE_STATUSES.has(generation.status) ? generation.id : null;
    }
  }
  return running;
}

/** Show another version of a message (and the branch below it). */
async function pickVersion(messageId) {
  if (page.busy) return;
  // The branch is drawn anew: the focus goes back to the switcher it was on (its other arrow at an end).
  const control = document.activeElement?.closest?.(".versions") ? document.activeElement.className : "";
  page.tree.pick(messageId);
  const running = renderBranch();
  const view = page.views.get(messageId);
  view?.article.scrollIntoView({ block: "nearest" });
  if (control && view) {
    const arrows = [...view.versions.querySelectorAll("button")];
    (arrows.find((b) => b.className === control && !b.disabled) ?? arrows.find((b) => !b.disabled))?.focus();
  }
  if (running) await resume(running, page.openToken);
  else describeShown();
  if (!page.busy) refreshActions();
}

/** The status line says how the answer shown last ended, not the last one streamed. */
function describeShown() {
  const last = page.lastAnswer && page.tree.byId.get(Number(page.lastAnswer.view.article.dataset.messageId));
  const generation = last && generationOf(last);
  if (!generation?.status || ACTIVE_STATUSES.has(generation.status)) return setStatus("idle", "Ready");
  const { label, text, outcome = "" } = describe(State.ENDED, { status: generation.status, reason: generation.reason ?? "" });
  setStatus(State.ENDED, label, text, { outcome });
  setMetrics(generation.token_count ?? 0, 0);
}

/** Verify the generation with the server, then follow it if it still runs. */
async function resume(generationId, token) {
  let generation;
  try {
    generation = await api("GET", `/api/generations/${generationId}`);
  } catch (error) {
    dropSnapshot(generationId);
    if (error.status !== 404) flash(error.message);
    return;
  }
  if (token !== page.openToken) return;
  const known = page.tree.byId.get(generation.assistant_message_id);
  const view = page.views.get(generation.assistant_message_id) ?? showMessage(assistantOf({ message: {}, generation }));
  page.lastAnswer = { generationId: generation.id, view };
  if (ACTIVE_STATUSES.has(generation.status)) {
    attach(generation, view, { resume: true });
    return;
  }
  // It ended while nobody watched: the stored message is the answer.
  dropSnapshot(generation.id);
  setLocation(page.conversationId, null);
  if (!known?.content) {
    renderReasoning(view, generation.reasoning ?? "", { ms: generation.reasoning_ms });
    renderText(view, generation.text ?? "", { format: generation.response_format, cut: cutShort(generation.status) });
  }
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

// --- Models -------------------------------------------------------------------------------

async function loadModels() {
  page.models = itemsOf(await api("GET", "/api/models"));
  ui.model.replaceChildren(
    ...page.models.map((model) => {
      const option = document.createElement("option");
      option.value = model.id;
      option.textContent = model.label;
      return option;
    }),
  );
  ui.model.disabled = page.models.length < 2;
}

// --- Start ---------------------------------------------------------------------------------

async function main() {
  const initial = JSON.parse($("chat-initial").textContent);
  setBusy(false);
  $("theme").value = chosenTheme();
  $("theme").addEventListener("change", (event) => chooseTheme(event.target.value));
  // `/?q=word` opens the page with that search, as the API's `?q=` does.
  sidebar.initialQuery = new URLSearchParams(location.search).get("q") ?? "";
  try {
    await Promise.all([sidebar.load(), loadModels()]);
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
