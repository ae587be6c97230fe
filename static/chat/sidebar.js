// The conversations sidebar: the list (search, rename, delete, how long ago
// each was active) and, on narrow screens, the drawer that holds it.

import { api, itemsOf, nextCursorOf } from "./api.js";
import { button } from "./messages.js";

// The list loads in pages; this bounds a runaway history.
const MAX_PAGES = 50;
// Clicking Delete arms it; a second click within this window deletes.
const DELETE_CONFIRM_MS = 4_000;
// Typing in the search field asks the server once it pauses this long.
const SEARCH_DELAY_MS = 250;

const app = document.getElementById("app");
const scrim = document.getElementById("scrim");
const toggle = document.getElementById("toggle-sidebar");
const list = document.getElementById("conversation-list");
const empty = document.getElementById("conversation-empty");
const searchEmpty = document.getElementById("search-empty");
const search = document.getElementById("search");
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto", style: "narrow" });

/** "now", "5 min. ago", "yesterday", "Mar 3": how long ago, at a glance. */
export function relativeDate(iso, now = Date.now()) {
  const date = new Date(iso);
  const seconds = (date.getTime() - now) / 1000;
  if (seconds > -60) return "now";
  if (seconds > -3600) return relative.format(Math.round(seconds / 60), "minute");
  if (seconds > -86400) return relative.format(Math.round(seconds / 3600), "hour");
  if (seconds > -7 * 86400) return relative.format(Math.round(seconds / 86400), "day");
  return date.toLocaleDateString([], { month: "short", day: "numeric" });
}

export function conversationTitle(conversation) {
  return conversation.title || "Untitled";
}

export class Sidebar {
  /**
   * onOpen(id): a conversation was picked; onRenamed(conversation);
   * onDeleted(id); onError(message).
   */
  constructor({ onOpen, onRenamed, onDeleted, onError }) {
    Object.assign(this, { onOpen, onRenamed, onDeleted, onError });
    this.conversations = [];
    this.activeId = null;
    this.query = ""; // the search the list shows ("": all)
    this.armedId = null; // the conversation whose Delete was clicked once, for DELETE_CONFIRM_MS
    this.disarmTimer = null;
    let timer = null;
    search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => this.search(search.value.trim()), SEARCH_DELAY_MS);
    });
    toggle.addEventListener("click", () => (this.isOpen ? this.close() : this.open()));
    scrim.addEventListener("click", () => this.close());
  }

  find(id) {
    return this.conversations.find((c) => c.id === id);
  }

  /** Start with a search already typed (the page's `?q=`). */
  set initialQuery(query) {
    search.value = query;
    this.query = query.trim();
  }

  /** Show only the conversations with `query` in their title or messages ("": all). */
  async search(query) {
    this.query = query;
    try {
      await this.load();
    } catch (error) {
      this.onError(error.message);
    }
  }

  async load() {
    const all = [];
    let cursor = null;
    const query = this.query;
    const q = query ? `&q=${encodeURIComponent(query)}` : "";
    for (let pageNo = 0; pageNo < MAX_PAGES; pageNo++) {
      const data = await api("GET", `/api/conversations?limit=100${q}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      all.push(...itemsOf(data));
      cursor = nextCursorOf(data);
      if (!cursor) break;
    }
    if (query !== this.query) return; // a newer search is on its way
    this.conversations = all;
    this.render();
  }

  upsert(conversation, { first = false } = {}) {
    const index = this.conversations.findIndex((c) => c.id === conversation.id);
    if (index >= 0) this.conversations[index] = { ...this.conversations[index], ...conversation };
    else if (first) this.conversations.unshift(conversation);
    else this.conversations.push(conversation);
    this.render();
  }

  /** Move a conversation to the top (it has a new message). */
  touch(id) {
    const index = this.conversations.findIndex((c) => c.id === id);
    if (index > 0) {
      this.conversations.unshift(...this.conversations.splice(index, 1));
      this.render();
    }
  }

  /** Mark the open conversation (null: none). */
  select(id) {
    this.activeId = id;
    for (const li of list.children) li.classList.toggle("active", li.dataset.id === String(id));
  }

  render() {
    // A live update must not take the title field away from someone typing in
    // it (even detaching it for a moment would blur it); the rename re-renders.
    if (list.querySelector("li.renaming")) return;
    const items = this.conversations.map((conversation) => {
      const li = document.createElement("li");
      li.className = "conversation";
      li.dataset.id = String(conversation.id);
      if (conversation.id === this.activeId) li.classList.add("active");
      const title = conversationTitle(conversation);
      const open = button(title, "conversation-open", () => {
        this.close();
        this.onOpen(conversation.id);
      });
      open.title = title;
      const when = document.createElement("time");
      when.className = "conversation-date";
      if (conversation.updated_at) {
        when.dateTime = conversation.updated_at;
        when.textContent = relativeDate(conversation.updated_at);
        when.title = new Date(conversation.updated_at).toLocaleString([], { dateStyle: "full", timeStyle: "short" });
      }
      const rename = button("✎", "conversation-action rename", () => this.startRename(li, conversation));
      rename.setAttribute("aria-label", `Rename ${title}`);
      rename.title = "Rename";
      const remove = button("✕", "conversation-action delete", () => this.confirmDelete(conversation));
      remove.setAttribute("aria-label", `Delete ${title}`);
      remove.title = "Delete";
      li.append(open, when, rename, remove);
      return li;
    });
    list.replaceChildren(...items);
    this.showArmed();
    empty.hidden = this.conversations.length > 0 || Boolean(this.query);
    searchEmpty.hidden = this.conversations.length > 0 || !this.query;
  }

  startRename(li, conversation) {
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
      if (!save || title === conversation.title) return this.render();
      try {
        const renamed = await renameConversation(conversation.id, title);
        this.upsert(renamed);
        this.onRenamed(renamed);
      } catch (error) {
        this.render();
        this.onError(error.message);
      }
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") finish(true);
      else if (event.key === "Escape") {
        event.preventDefault(); // cancels the rename only, not the answer
        finish(false);
      }
    });
    input.addEventListener("blur", () => {
      // The window lost the focus (another tab or window), not the field: the rename stays open.
      if (document.hasFocus()) finish(true);
    });
    li.classList.add("renaming");
    li.replaceChildren(input);
    input.focus();
    input.select();
  }

  confirmDelete(conversation) {
    clearTimeout(this.disarmTimer);
    if (this.armedId === conversation.id) {
      this.armedId = null;
      return this.delete(conversation.id);
    }
    this.armedId = conversation.id;
    this.showArmed();
    this.disarmTimer = setTimeout(() => {
      this.armedId = null;
      this.showArmed();
    }, DELETE_CONFIRM_MS);
  }

  /** The armed Delete button says so; kept by conversation, so a live update's re-render between two clicks keeps it. */
  showArmed() {
    for (const remove of list.querySelectorAll(".delete")) {
      const armed = remove.closest("li").dataset.id === String(this.armedId);
      remove.textContent = armed ? "Delete?" : "✕";
      remove.classList.toggle("armed", armed);
    }
  }

  async delete(id) {
    try {
      await api("DELETE", `/api/conversations/${id}`);
    } catch (error) {
      if (error.status !== 404) return this.onError(error.message);
    }
    this.conversations = this.conversations.filter((c) => c.id !== id);
    this.render();
    this.onDeleted(id);
  }

  // --- The drawer on narrow screens ------------------------------------------------

  get isOpen() {
    return app.classList.contains("sidebar-open");
  }

  open() {
    app.classList.add("sidebar-open");
    scrim.hidden = false;
    toggle.setAttribute("aria-expanded", "true");
  }

  close() {
    app.classList.remove("sidebar-open");
    scrim.hidden = true;
    toggle.setAttribute("aria-expanded", "false");
  }
}

async function renameConversation(id, title) {
  try {
    return await api("PATCH", `/api/conversations/${id}`, { title });
  } catch (error) {
    if (error.status === 405) return api("PUT", `/api/conversations/${id}`, { title });
    throw error;
  }
}
