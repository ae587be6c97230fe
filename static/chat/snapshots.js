// A running answer's text, reasoning and last event id, kept in sessionStorage so that
// a refreshed page resumes from where it was instead of replaying everything.

const PREFIX = "chat.stream.";

export function loadSnapshot(generationId) {
  try {
    const raw = sessionStorage.getItem(PREFIX + generationId);
    const snapshot = raw ? JSON.parse(raw) : null;
    if (snapshot && typeof snapshot.text === "string" && /^\d+$/.test(snapshot.lastEventId)) {
      return { reasoning: "", ...snapshot };
    }
  } catch {
    // storage disabled or corrupt: resume from the start instead
  }
  return null;
}

export function saveSnapshot(generationId, text, reasoning, lastEventId) {
  try {
    if (lastEventId) sessionStorage.setItem(PREFIX + generationId, JSON.stringify({ text, reasoning, lastEventId }));
  } catch {
    // storage full or disabled: a refresh will replay from the start
  }
}

export function dropSnapshot(generationId) {
  try {
    sessionStorage.removeItem(PREFIX + generationId);
  } catch {
    // nothing to drop
  }
}
