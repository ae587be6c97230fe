// Model output as safe DOM: Markdown (CommonMark + GFM) by marked, code
// highlighted by highlight.js, the HTML sanitised by DOMPurify.
//
// Safety does not rest on the sanitiser alone: raw HTML in the text is shown
// as text (the renderer escapes it), only http(s) and mailto URLs become links
// (anything else, javascript:, data: or //host, stays text), and DOMPurify then
// keeps only the tags and attributes below.

import DOMPurify from "../vendor/dompurify/purify.es.js";
import hljs from "../vendor/highlight/highlight.min.js";
import { Marked } from "../vendor/marked/marked.esm.js";

const SAFE_URL = /^(https?:\/\/|mailto:)/i;
const LINK_REL = "noopener noreferrer nofollow";
// A table's delimiter row (| --- | :-: |): until it arrives, pipe rows are not yet a table.
const TABLE_DELIMITER = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-*:?\s*)*\|?\s*$/;

const ALLOWED_TAGS = [
  "a", "blockquote", "br", "button", "code", "del", "div", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
  "input", "li", "ol", "p", "pre", "span", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
];
const ALLOWED_ATTR = ["href", "target", "rel", "class", "start", "type", "checked", "disabled", "align", "aria-label"];

const escapes = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escape = (text) => String(text).replace(/[&<>"']/g, (c) => escapes[c]);

/** A fenced code block: a head with its language and a copy button, then the highlighted code. */
function codeBlock(code, info = "") {
  const language = (info.match(/^[\w+#.-]+/) || [""])[0].toLowerCase();
  const known = language && hljs.getLanguage(language);
  const body = known ? hljs.highlight(code, { language, ignoreIllegals: true }).value : escape(code);
  const codeClass = known ? ` class="hljs language-${language}"` : ' class="hljs"';
  return (
    '<div class="code-block"><div class="code-head">' +
    `<span class="code-lang">${escape(language || "text")}</span>` +
    '<button type="button" class="copy-code" aria-label="Copy code">Copy</button></div>' +
    `<pre><code${codeClass}>${body}</code></pre></div>`
  );
}

const marked = new Marked({
  gfm: true,
  breaks: true, // a chat answer's single newlines are line breaks, as people mean them
  renderer: {
    html: ({ text, block }) => (block ? `<p>${escape(text.trim())}</p>\n` : escape(text)),
    code: ({ text, lang }) => codeBlock(text, lang || ""),
    // A task list's box is read-only, and says what it shows to a screen reader.
    checkbox: ({ checked }) => `<input type="checkbox" disabled${checked ? " checked" : ""} aria-label="${checked ? "Done" : "Not done"}"> `,
    link({ href, tokens, raw }) {
      if (!SAFE_URL.test(href.trim())) return escape(raw);
      return `<a href="${escape(href.trim())}">${this.parser.parseInline(tokens)}</a>`;
    },
    // No remote images (they would load from anywhere): a safe link to it, or its text.
    image({ href, text, raw }) {
      if (!SAFE_URL.test(href.trim())) return escape(raw);
      return `<a href="${escape(href.trim())}">${escape(text || href)}</a>`;
    },
  },
});

const purify = DOMPurify(window);
purify.addHook("afterSanitizeAttributes", (node) => {
  if (node.nodeName !== "A") return;
  if (!SAFE_URL.test(node.getAttribute("href") || "")) node.removeAttribute("href");
  node.setAttribute("target", "_blank");
  node.setAttribute("rel", LINK_REL);
});

// A line of only "-" or "=": under a paragraph line it makes that line a heading.
const SETEXT_UNDERLINE = /^ {0,3}(-+|=+)[ \t]*$/;

/**
 * What to show of an answer while it streams: all of it, but a trailing run of
 * table rows that has no delimiter row yet (it would show as a paragraph, then
 * jump to a table), the unfinished last row of a table, and an unfinished last
 * line of only "-" or "=" (a list item or a rule on its way would make the line
 * above a large heading for a moment).
 */
export function streamingText(text) {
  const unfinished = text.slice(text.lastIndexOf("\n") + 1);
  if (unfinished && SETEXT_UNDERLINE.test(unfinished)) text = text.slice(0, text.length - unfinished.length);
  const lines = text.split("\n");
  const finished = lines.at(-1) === ""; // the last row has its newline
  const end = finished ? lines.length - 1 : lines.length;
  let start = end;
  while (start > 0 && lines[start - 1].trimStart().startsWith("|")) start--;
  if (start === end) return text;
  const complete = lines.slice(start, finished ? end : end - 1);
  if (!complete.some((row, index) => index > 0 && TABLE_DELIMITER.test(row))) return lines.slice(0, start).join("\n");
  return finished ? text : lines.slice(0, -1).join("\n");
}

/** The HTML of an answer: Markdown, or for a JSON answer the document pretty-printed (as it streams: as sent). */
function answerHtml(text, { format = "text" } = {}) {
  if (format === "json") {
    let shown = text;
    try {
      shown = JSON.stringify(JSON.parse(text), null, 2);
    } catch {
      // not (yet) a whole document
    }
    return codeBlock(shown, "json");
  }
  return marked.parse(text);
}

/** Render an answer into a DocumentFragment of sanitised nodes. */
export function renderMarkdown(text, options = {}) {
  const html = answerHtml(String(text).replace(/\r\n?/g, "\n"), options);
  return purify.sanitize(html, { ALLOWED_TAGS, ALLOWED_ATTR, RETURN_DOM_FRAGMENT: true });
}
