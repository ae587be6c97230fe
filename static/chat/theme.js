// The page's theme: the system's, or light or dark as chosen, remembered in this browser.
// The colours follow `color-scheme` (chat.css's light-dark() values); the code
// highlighting has a stylesheet per theme, switched here.

const KEY = "chat-theme";
export const THEMES = ["system", "light", "dark"];

export function chosenTheme() {
  const stored = localStorage.getItem(KEY);
  return THEMES.includes(stored) ? stored : "system";
}

/** Show the page in `choice`: "system" leaves it to the media queries, which follow the system live. */
export function applyTheme(choice = chosenTheme()) {
  const root = document.documentElement;
  if (choice === "system") delete root.dataset.theme;
  else root.dataset.theme = choice;
  for (const link of document.querySelectorAll("link[data-code-theme]")) {
    const theme = link.dataset.codeTheme;
    link.media = choice === "system" ? `(prefers-color-scheme: ${theme})` : choice === theme ? "all" : "not all";
  }
}

export function chooseTheme(choice) {
  localStorage.setItem(KEY, choice);
  applyTheme(choice);
}

applyTheme();
