// The message list: one view per message, and scrolling that follows the
// stream unless the person scrolled up.

import { renderMarkdown } from "./markdown.js";

// Within this many pixels of the bottom counts as "at the bottom": the list
// keeps following the stream; scrolled further up, it stays where it is.
const FOLLOW_SLACK_PX = 48;

const list = document.getElementById("messages");
const welcome = document.getElementById("welcome");
const jump = document.getElementById("jump");
let follow = true;

/** A message's elements: {article, label, content, notice, actions, role}. */
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
  const actions = document.createElement("div");
  actions.className = "message-actions";
  if (role === "assistant") bubble.append(notice);
  article.append(labelEl, bubble, actions);
  welcome.hidden = true;
  list.append(article);
  return { article, label: labelEl, content, notice, actions, role };
}

export function renderText(view, text) {
  if (view.role === "assistant") view.content.replaceChildren(renderMarkdown(text));
  else view.content.textContent = text;
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

export function markPrevious(view) {
  view.article.classList.add("previous");
  view.label.textContent = "Earlier answer";
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
