// The message list: one view per message (its text, time, versions and
// actions), copying, and scrolling that follows the stream unless the person
// scrolled up.

import { renderMarkdown, streamingText } from "./markdown.js";

// Within this many pixels of the bottom counts as "at the bottom": the list
// keeps following the stream; scrolled further up, it stays where it is.
const FOLLOW_SLACK_PX = 48;
// How long a copy button says "Copied".
const COPIED_MS = 1500;

const list = document.getElementById("messages");
const welcome = document.getElementById("welcome");
const jump = document.getElementById("jump");
let follow = true;

/** A message's elements: {article, label, content, notice, meta, versions, time, actions, role}. */
export function messageView(role, { messageId = null, label = "" } = {}) {
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
  const meta = document.createElement("div");
  meta.className = "message-meta";
  const versions = document.createElement("nav");
  versions.className = "versions";
  versions.hidden = true;
  const time = document.createElement("time");
  time.className = "timestamp";
  const actions = document.createElement("div");
  actions.className = "message-actions";
  meta.append(versions, actions, time);
  if (role === "assistant") bubble.append(notice);
  article.append(labelEl, bubble, meta);
  welcome.hidden = true;
  list.append(article);
  return {
    article, label: labelEl, bubble, content, notice, meta, versions, time, actions, role, source: "", shown: null, thinking: null,
  };
}

/**
 * Show a message's text: an answer as Markdown (or pretty JSON, `format: "json"`), a
 * user's message as typed. While `streaming`, an answer's unfinished tail may be held back;
 * so it stays in an answer `cut` short (stopped, interrupted, failed): no half row of a table.
 */
export function renderText(view, text, { format = view.format ?? "text", streaming = false, cut = false } = {}) {
  view.source = text;
  view.format = format;
  if (view.role !== "assistant") {
    view.content.textContent = text;
    return;
  }
  const shown = (streaming || cut) && format !== "json" ? streamingText(text) : text;
  view.shown = shown;
  view.content.replaceChildren(renderMarkdown(shown, { format }));
}

/**
 * Show an answer's reasoning above its text as a "Thinking" block: open while
 * the model thinks, then collapsed with how long it thought. It opens and
 * closes only when the thinking starts or stops, so a reader's own toggle stays.
 */
export function renderReasoning(view, reasoning, { thinking = false, ms = 0 } = {}) {
  if (!reasoning) {
    view.thinking?.details.remove();
    view.thinking = null;
    return;
  }
  if (!view.thinking) {
    const details = document.createElement("details");
    details.className = "thinking";
    const summary = document.createElement("summary");
    const body = document.createElement("div");
    body.className = "thinking-text";
    details.append(summary, body);
    view.bubble.insertBefore(details, view.content);
    view.thinking = { details, summary, body, open: null };
  }
  const block = view.thinking;
  block.body.textContent = reasoning; // plain text: reasoning is notes, not a document
  block.summary.textContent = thinking ? "Thinking…" : ms > 0 ? `Thought for ${thoughtFor(ms)}` : "Thoughts";
  block.details.classList.toggle("live", thinking);
  if (block.open !== thinking) {
    block.details.open = thinking;
    block.open = thinking;
  }
}

function thoughtFor(ms) {
  const seconds = Math.max(1, Math.round(ms / 1000));
  return seconds < 60 ? `${seconds} s` : `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
}

/** Whether the answer shows all of `text` (a streaming render may have held back its tail). */
export function showsAll(view, text) {
  return view.shown === text;
}

/** The time it was sent, on hover; the full date in its tooltip. */
export function setTime(view, iso) {
  if (!iso) return;
  const date = new Date(iso);
  const today = new Date().toDateString() === date.toDateString();
  view.time.dateTime = date.toISOString();
  view.time.textContent = today
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  view.time.title = date.toLocaleString([], { dateStyle: "full", timeStyle: "medium" });
}

/** The ‹ i/n › switcher between a message's versions; onPick(index) picks one. */
export function setVersions(view, index, count, onPick) {
  view.versions.replaceChildren();
  view.versions.hidden = count < 2;
  if (count < 2) return;
  view.versions.setAttribute("aria-label", "Versions");
  const previous = button("‹", "btn icon version-previous", () => onPick(index - 1));
  previous.setAttribute("aria-label", "Previous version");
  previous.disabled = index === 0;
  const position = document.createElement("span");
  position.className = "version-position";
  position.textContent = `${index + 1}/${count}`;
  const next = button("›", "btn icon version-next", () => onPick(index + 1));
  next.setAttribute("aria-label", "Next version");
  next.disabled = index === count - 1;
  view.versions.append(previous, position, next);
}

/** Edit a user's message in place: onSend(text) sends the new version; Cancel puts the old text back. */
export function startEdit(view, onSend) {
  if (view.article.classList.contains("editing")) return;
  const field = document.createElement("textarea");
  field.className = "edit-field";
  field.value = view.source;
  field.rows = Math.min(8, view.source.split("\n").length + 1);
  field.setAttribute("aria-label", "Edit your message");
  const finish = () => {
    view.article.classList.remove("editing");
    view.bubble.hidden = false;
    view.meta.hidden = false;
    form.remove();
  };
  const send = button("Send", "btn primary small edit-send", () => {
    if (!field.value.trim()) return;
    finish();
    onSend(field.value);
  });
  const cancel = button("Cancel", "btn small edit-cancel", finish);
  const form = document.createElement("div");
  form.className = "edit-form";
  const row = document.createElement("div");
  row.className = "edit-buttons";
  row.append(cancel, send);
  form.append(field, row);
  field.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send.click();
    } else if (event.key === "Escape") {
      event.preventDefault(); // cancels the edit only, not the answer
      finish();
    }
  });
  view.article.classList.add("editing");
  view.bubble.hidden = true;
  view.meta.hidden = true;
  view.article.append(form);
  field.focus();
}

export function setNotice(view, text, tone = "muted", action = null) {
  view.notice.replaceChildren();
  if (!text) return;
  view.notice.dataset.tone = tone;
  const span = document.createElement("span");
  span.textContent = text;
  view.notice.append(span);
  if (action) view.notice.append(action);
}

export function button(label, className, onClick) {
  const el = document.createElement("button");
  el.type = "button";
  el.className = className;
  el.textContent = label;
  el.addEventListener("click", onClick);
  return el;
}

export function clearMessages() {
  for (const el of [...list.querySelectorAll(".message")]) el.remove();
  welcome.hidden = false;
}

/** The shown content of the answer to a generation, if it is on the page. */
export function shownAnswer(generationId) {
  return list.querySelector(`.message[data-generation-id="${CSS.escape(generationId)}"] .content`);
}

export function removeAll(selector) {
  for (const el of list.querySelectorAll(selector)) el.remove();
}

// --- Copying ----------------------------------------------------------------------

/** Put `text` on the clipboard and say so on `el` for a moment. */
export async function copyText(text, el) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // No clipboard API (a plain-http origin other than localhost), or no permission.
    const field = document.createElement("textarea");
    field.value = text;
    field.className = "visually-hidden";
    document.body.append(field);
    field.select();
    document.execCommand("copy");
    field.remove();
  }
  const label = el.dataset.label ?? el.textContent;
  el.dataset.label = label;
  el.textContent = "Copied";
  el.classList.add("copied");
  clearTimeout(el.copiedTimer);
  el.copiedTimer = setTimeout(() => {
    el.textContent = label;
    el.classList.remove("copied");
  }, COPIED_MS);
}

// A code block's copy button is part of the rendered answer: one listener serves them all.
list.addEventListener("click", (event) => {
  const copy = event.target.closest?.(".copy-code");
  const code = copy?.closest(".code-block")?.querySelector("code");
  if (code) copyText(code.textContent, copy);
});

// --- Scrolling: follow the stream unless the user scrolled up -----------------

function atBottom() {
  return list.scrollHeight - list.scrollTop - list.clientHeight <= FOLLOW_SLACK_PX;
}

/** Keep the newest text in view if the list follows the stream. */
export function followScroll() {
  if (follow) list.scrollTop = list.scrollHeight;
  jump.hidden = follow || atBottom();
}

/** Follow the stream again (a new answer, a newly opened conversation). */
export function followStream() {
  follow = true;
  followScroll();
}

list.addEventListener("scroll", () => {
  follow = atBottom();
  jump.hidden = follow;
});
jump.addEventListener("click", followStream);
