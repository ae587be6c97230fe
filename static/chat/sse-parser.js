// Server-Sent Events decoding, following the WHATWG "event stream
// interpretation" rules. Pure: no DOM, no network, so it is tested on its own.
//
// Two layers, as the spec describes them:
//   LineDecoder   text chunks -> lines (CRLF, LF or CR; a CR at the end of a
//                 chunk waits for the next chunk in case an LF follows)
//   EventDecoder  lines -> events ({type, data, id}), keeping the last event
//                 id across events, reporting `retry:` and comments
// SSEParser glues them to a byte stream with a streaming TextDecoder.

export class LineDecoder {
  constructor() {
    this.buffer = "";
    this.pendingCR = false;
  }

  /** Return the complete lines in `text`; keep the unfinished tail. */
  decode(text) {
    const lines = [];
    let start = 0;
    let i = 0;
    if (this.pendingCR && text.length > 0) {
      this.pendingCR = false;
      if (text[0] === "\n") start = i = 1;
    }
    for (; i < text.length; i++) {
      const c = text[i];
      if (c !== "\r" && c !== "\n") continue;
      lines.push(this.buffer + text.slice(start, i));
      this.buffer = "";
      if (c === "\r") {
        if (i + 1 === text.length) this.pendingCR = true;
        else if (text[i + 1] === "\n") i++;
      }
      start = i + 1;
    }
    this.buffer += text.slice(start);
    return lines;
  }
}

export class EventDecoder {
  /**
   * @param {object} handlers
   *   onEvent({type, data, id})  a dispatched event; id is the last event id
   *   onRetry(ms)                a valid `retry:` field
   *   onComment(text)            a comment line (e.g. a keepalive)
   */
  constructor({ onEvent, onRetry = () => {}, onComment = () => {} }) {
    this.onEvent = onEvent;
    this.onRetry = onRetry;
    this.onComment = onComment;
    this.lastEventId = "";
    this.reset();
  }

  reset() {
    this.type = "";
    this.data = "";
    this.hasData = false;
  }

  line(line) {
    if (line === "") return this.dispatch();
    if (line[0] === ":") return this.onComment(line.slice(1).replace(/^ /, ""));
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value[0] === " ") value = value.slice(1);
    switch (field) {
      case "event":
        this.type = value;
        break;
      case "data":
        this.data += value + "\n";
        this.hasData = true;
        break;
      case "id":
        // The spec ignores an id containing NULL; an empty id resets it.
        if (!value.includes("\0")) this.lastEventId = value;
        break;
      case "retry":
        if (/^[0-9]+$/.test(value)) this.onRetry(parseInt(value, 10));
        break;
      default:
        break; // unknown fields are ignored
    }
  }

  dispatch() {
    // The last event id is updated even when no event is dispatched.
    if (!this.hasData) return this.reset();
    const event = { type: this.type || "message", data: this.data.slice(0, -1), id: this.lastEventId };
    this.reset();
    this.onEvent(event);
  }
}

export class SSEParser {
  /** Feed bytes (Uint8Array) or text; handlers as for EventDecoder. */
  constructor(handlers) {
    this.lines = new LineDecoder();
    this.events = new EventDecoder(handlers);
    this.text = new TextDecoder("utf-8");
    this.started = false;
  }

  get lastEventId() {
    return this.events.lastEventId;
  }

  set lastEventId(value) {
    this.events.lastEventId = value;
  }

  feed(chunk) {
    let text = typeof chunk === "string" ? chunk : this.text.decode(chunk, { stream: true });
    if (!this.started && text.length > 0) {
      this.started = true;
      if (text[0] === "\uFEFF") text = text.slice(1); // one leading BOM is skipped
    }
    for (const line of this.lines.decode(text)) this.events.line(line);
  }
}
