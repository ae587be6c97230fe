// The AI SDK's own client against our server: DefaultChatTransport, readUIMessageStream.
// Run by tests/test_ai_sdk_client.py with one JSON argument; prints one JSON object a line:
//   {"type": "update", "text", "reasoning"}   as the message grows (the test cuts the connection on these)
//   {"type": "cut", "message", "error"}       the stream broke before its end
//   {"type": "final", "message"}              the message the client ends with (null: nothing to resume)
//   {"type": "error", "status", "body"}       the request was refused
//   {"type": "chat", "status", "messages"}    scenario "chat": what useChat's Chat holds after the turn
import { AbstractChat, DefaultChatTransport, readUIMessageStream } from "ai"

const { base, token, chatId, scenario, text, model, messageId, messages = [] } = JSON.parse(process.argv[2])

const out = (line) => process.stdout.write(JSON.stringify(line) + "\n")
const joined = (message, type) =>
  (message?.parts ?? []).filter((part) => part.type === type).map((part) => part.text).join("")

const transport = new DefaultChatTransport({
  api: `${base}/api/ai-sdk/chat`,
  headers: { Authorization: `Bearer ${token}` },
  body: model === undefined ? {} : { model },
})

// Read a response to its end, or until the connection breaks; the message as the client has it.
async function read(stream) {
  let message, broken
  const onError = (error) => { broken = error }
  for await (message of readUIMessageStream({ stream, onError })) {
    out({ type: "update", text: joined(message, "text"), reasoning: joined(message, "reasoning") })
  }
  return { message, broken }
}

async function send(trigger) {
  const user = { id: "client-user-1", role: "user", parts: [{ type: "text", text }] }
  try {
    return await transport.sendMessages({
      chatId,
      trigger,
      messageId,
      messages: trigger === "submit-message" ? [...messages, user] : messages,
      abortSignal: undefined,
    })
  } catch (error) {
    out({ type: "error", status: error.statusCode ?? null, body: error.responseBody ?? String(error) })
    process.exit(0)
  }
}

// useChat's own state machine (AbstractChat, which @ai-sdk/react wraps), over plain arrays.
class ArrayState {
  constructor(messages) {
    this.messages = messages
    this.status = "ready"
    this.error = undefined
  }
  pushMessage(message) { this.messages = [...this.messages, message]; this.changed() }
  popMessage() { this.messages = this.messages.slice(0, -1); this.changed() }
  replaceMessage(index, message) { this.messages = this.messages.with(index, message); this.changed() }
  snapshot(thing) { return structuredClone(thing) }
  changed() {
    const last = this.messages.at(-1)
    if (last?.role === "assistant") out({ type: "update", text: joined(last, "text"), reasoning: joined(last, "reasoning") })
  }
}

class Chat extends AbstractChat {
  constructor({ messages = [], ...init }) {
    super({ ...init, state: new ArrayState(messages) })
  }
}

if (scenario === "chat") {
  // sendMessage; if the connection breaks, resumeStream() as `resume: true` does on the next mount.
  const chat = new Chat({ id: chatId, transport, messages })
  await chat.sendMessage({ text })
  if (chat.status === "error") {
    out({ type: "cut", message: chat.messages.at(-1), error: String(chat.error) })
    await chat.resumeStream()
  }
  out({ type: "chat", status: chat.status, messages: chat.messages })
} else if (scenario === "resume") {
  const stream = await transport.reconnectToStream({ chatId })
  out({ type: "final", message: stream === null ? null : (await read(stream)).message })
} else {
  let { message, broken } = await read(await send(scenario === "regenerate" ? "regenerate-message" : "submit-message"))
  if (broken !== undefined) {
    out({ type: "cut", message: message ?? null, error: String(broken) })
    // As useChat's `resume: true` does: the running answer again, from its start, rebuilt from empty.
    const stream = await transport.reconnectToStream({ chatId })
    message = stream === null ? null : (await read(stream)).message
  }
  out({ type: "final", message })
}
