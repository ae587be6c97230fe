// A small Markdown renderer for model output that cannot inject HTML.
//
// It builds DOM nodes with createElement and text nodes only: there is no
// innerHTML anywhere, so "<script>" or "<img onerror=...>" from the model is
// just text. Links are kept only for http(s) and mailto URLs.
//
// Supported, as chat answers use it: fenced code blocks (an unclosed fence
// while streaming runs to the end), ATX headings, bullet and numbered lists,
// block quotes, horizontal rules, paragraphs with line breaks, and inline
// `code`, **bold**, *italic*, [links](https://...) and bare https:// URLs.

const SAFE_URL = /^(https?:\/\/|mailto:)/i;
const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)\s*$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const BULLET = /^ {0,3}[-*+]\s+(.*)$/;
const NUMBERED = /^ {0,3}(\d{1,9})[.)]\s+(.*)$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;

/** Render Markdown text into a DocumentFragment of safe nodes. */
export function renderMarkdown(text, doc = document) {
  const fragment = doc.createDocumentFragment();
  for (const node of blocks(String(text).replace(/\r\n?/g, "\n").split("\n"), doc)) fragment.append(node);
  return fragment;
}

function el(doc, tag, children = [], attributes = {}) {
  const node = doc.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

function blocks(lines, doc) {
  const out = [];
  let i = 0;
  const isBlank = (line) => line.trim() === "";
  const startsBlock = (line) =>
    FENCE.test(line) || HEADING.test(line) || BULLET.test(line) || NUMBERED.test(line) || QUOTE.test(line) || RULE.test(line);

  while (i < lines.length) {
    const line = lines[i];
    let match;
    if (isBlank(line)) {
      i++;
    } else if ((match = FENCE.exec(line))) {
      const fence = match[1];
      const body = [];
      for (i++; i < lines.length && !lines[i].trim().startsWith(fence); i++) body.push(lines[i]);
      i++; // the closing fence, if any
      const code = el(doc, "code", [body.join("\n")]);
      if (match[2]) code.className = `language-${match[2]}`;
      out.push(el(doc, "pre", [code]));
    } else if (RULE.test(line)) {
      out.push(el(doc, "hr"));
      i++;
    } else if ((match = HEADING.exec(line))) {
      out.push(el(doc, `h${match[1].length}`, inline(match[2], doc)));
      i++;
    } else if (BULLET.test(line) || NUMBERED.test(line)) {
      const ordered = NUMBERED.test(line);
      const pattern = ordered ? NUMBERED : BULLET;
      const items = [];
      while (i < lines.length) {
        const item = pattern.exec(lines[i]);
        if (item) {
          items.push([ordered ? item[2] : item[1]]);
        } else if (!isBlank(lines[i]) && !startsBlock(lines[i]) && /^\s/.test(lines[i])) {
          items[items.length - 1].push(lines[i].trim()); // an indented continuation line
        } else if (isBlank(lines[i]) && i + 1 < lines.length && pattern.test(lines[i + 1])) {
          // a blank line between two items keeps the list going
        } else {
          break;
        }
        i++;
      }
      const list = el(doc, ordered ? "ol" : "ul", items.map((parts) => el(doc, "li", withBreaks(parts, doc))));
      const start = ordered ? parseInt(NUMBERED.exec(line)[1], 10) : 1;
      if (start !== 1) list.setAttribute("start", String(start));
      out.push(list);
    } else if (QUOTE.test(line)) {
      const quoted = [];
      while (i < lines.length && QUOTE.test(lines[i])) quoted.push(QUOTE.exec(lines[i++])[1]);
      out.push(el(doc, "blockquote", blocks(quoted, doc)));
    } else {
      const parts = [];
      while (i < lines.length && !isBlank(lines[i]) && (parts.length === 0 || !startsBlock(lines[i]))) {
        parts.push(lines[i++].trim());
      }
      out.push(el(doc, "p", withBreaks(parts, doc)));
    }
  }
  return out;
}

function withBreaks(parts, doc) {
  const nodes = [];
  parts.forEach((part, index) => {
    if (index) nodes.push(doc.createElement("br"));
    nodes.push(...inline(part, doc));
  });
  return nodes;
}

// Inline rules, tried at each position; the earliest match wins.
const INLINE = [
  { name: "code", re: /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/ },
  { name: "link", re: /\[([^\]\n]+)\]\(\s*<?([^\s()<>]+)>?\s*\)/ },
  { name: "url", re: /\bhttps?:\/\/[^\s<>()"]*[^\s<>()".,:;!?'*_]/ },
  { name: "strong", re: /\*\*(?=\S)([\s\S]*?\S)\*\*|__(?=\S)([\s\S]*?\S)__(?!\w)/ },
  { name: "em", re: /\*(?=[^\s*])([^*]*?[^\s*])\*|(?<!\w)_(?=[^\s_])([^_]*?[^\s_])_(?!\w)/ },
];

function inline(text, doc, inLink = false) {
  const nodes = [];
  let rest = text;
  while (rest) {
    let best = null;
    for (const rule of INLINE) {
      if (inLink && (rule.name === "link" || rule.name === "url")) continue; // no links inside links
      const match = rule.re.exec(rest);
      if (match && (best === null || match.index < best.match.index)) best = { rule, match };
    }
    if (!best) {
      nodes.push(doc.createTextNode(rest));
      break;
    }
    const { rule, match } = best;
    if (match.index) nodes.push(doc.createTextNode(rest.slice(0, match.index)));
    nodes.push(inlineNode(rule.name, match, doc, inLink));
    rest = rest.slice(match.index + match[0].length);
  }
  return nodes;
}

function inlineNode(name, match, doc, inLink) {
  switch (name) {
    case "code": {
      const body = match[2];
      // CommonMark strips one space on each side when both are there.
      const trimmed = /^ .* $/.test(body) && body.trim() ? body.slice(1, -1) : body;
      return el(doc, "code", [trimmed]);
    }
    case "link":
      return link(match[2], inline(match[1], doc, true), match[0], doc);
    case "url":
      return link(match[0], [match[0]], match[0], doc);
    case "strong":
      return el(doc, "strong", inline(match[1] ?? match[2], doc, inLink));
    default:
      return el(doc, "em", inline(match[1] ?? match[2], doc, inLink));
  }
}

function link(href, children, source, doc) {
  if (!SAFE_URL.test(href)) return doc.createTextNode(source); // javascript:, data: and the like stay text
  return el(doc, "a", children, { href, target: "_blank", rel: "noopener noreferrer nofollow" });
}
