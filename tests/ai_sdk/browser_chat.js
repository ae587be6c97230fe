// A small chat page on the AI SDK's own Chat (what useChat wraps), as an app would write it against our server:
// the session with its CSRF header, the chat restored from /messages, resumed on load (`resume: true`) and
// after a dropped connection. Bundled by esbuild for tests/browser/test_ai_sdk_chat.py.
import { AbstractChat, DefaultChatTransport } from "ai"

const chatId = new URLSearchParams(location.search).get("chat")
const csrfToken = () => document.cookie.split("; ").find((c) => c.startsWith("csrftoken="))?.slice(10) ?? ""

class ArrayState {
  constructor(messages) {
    this.messages = messages
    this._status = "ready"
    this.error = undefined
  }
  get status() { return this._status }
  set status(status) { this._status = status; render() }
  pushMessage(message) { this.messages = [...this.messages, message]; render() }
  popMessage() { this.messages = this.messages.slice(0, -1); render() }
  replaceMessage(index, message) { this.messages = this.messages.with(index, message); render() }
  snapshot(thing) { return structuredClone(thing) }
}

class Chat extends AbstractChat {
  constructor({ messages, ...init }) {
    super({ ...init, state: new ArrayState(messages) })
  }
}

function render() {
  const list = document.getElementById("messages")
  list.replaceChildren(...(chat?.messages ?? []).map((message) => {
    const item = document.createElement("li")
    item.dataset.role = message.role
    item.dataset.id = message.id
    item.dataset.status = message.metadata?.status ?? ""
    for (const kind of ["reasoning", "text"]) {
      const part = document.createElement("div")
      part.className = kind
      part.textContent = message.parts.filter((p) => p.type === kind).map((p) => p.text).join("")
      item.append(part)
    }
    return item
  }))
  document.getElementById("status").textContent = chat?.status ?? "loading"
}

let chat
const stored = await fetch(`/api/ai-sdk/chat/${encodeURIComponent(chatId)}/messages`)
chat = new Chat({
  id: chatId,
  messages: stored.ok ? await stored.json() : [], // 404: a new chat
  transport: new DefaultChatTransport({
    api: "/api/ai-sdk/chat",
    headers: () => ({ "X-CSRFToken": csrfToken() }),
    body: { model: "simulated-reasoning" },
  }),
  // The answer runs on when the connection drops: pick it up again.
  onFinish: ({ isDisconnect }) => { if (isDisconnect) chat.resumeStream() },
})
render()
document.getElementById("composer").addEventListener("submit", (event) => {
  event.preventDefault()
  const prompt = document.getElementById("prompt")
  chat.sendMessage({ text: prompt.value })
  prompt.value = ""
})
document.getElementById("stop").addEventListener("click", async () => {
  await fetch(`/api/ai-sdk/chat/${encodeURIComponent(chatId)}/cancel`, { method: "POST", headers: { "X-CSRFToken": csrfToken() } })
  chat.stop()
})
await chat.resumeStream() // `resume: true`: 204 when nothing runs
render()
document.body.dataset.ready = "true"
