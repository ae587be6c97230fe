// A conversation as a tree of messages (each names its parent_id): edits of
// a user message and answers to one user message are siblings, "versions".
// The page shows one branch: at each level the version picked, else the one
// that leads to the newest message, so a new edit or answer shows at once.

const ROOT = "root";

export class MessageTree {
  constructor(messages = []) {
    this.byId = new Map();
    this.children = new Map(); // parent id (or ROOT) → child ids, oldest first
    this.newest = new Map(); // id → the newest id in its subtree
    this.picked = new Map(); // parent id (or ROOT) → the child id picked
    for (const message of [...messages].sort((a, b) => a.id - b.id)) this.add(message);
  }

  add(message) {
    if (this.byId.has(message.id)) {
      this.byId.set(message.id, { ...this.byId.get(message.id), ...message });
      return;
    }
    this.byId.set(message.id, message);
    const key = message.parent_id ?? ROOT;
    if (!this.children.has(key)) this.children.set(key, []);
    this.children.get(key).push(message.id);
    // Ids grow: the new message is the newest in every subtree above it.
    for (let id = message.id; id != null; id = this.byId.get(id)?.parent_id ?? null) this.newest.set(id, message.id);
  }

  siblings(id) {
    const message = this.byId.get(id);
    return message ? this.children.get(message.parent_id ?? ROOT) : [];
  }

  /** The messages of the branch shown, first to last. */
  branch() {
    const shown = [];
    for (let key = ROOT; this.children.has(key); ) {
      const ids = this.children.get(key);
      const picked = this.picked.get(key);
      const id = ids.includes(picked) ? picked : ids.reduce((a, b) => (this.newest.get(b) > this.newest.get(a) ? b : a));
      shown.push(this.byId.get(id));
      key = id;
    }
    return shown;
  }

  /** Show the branch through `id` (its versions, and those of every message above it). */
  pick(id) {
    for (let message = this.byId.get(id); message; message = this.byId.get(message.parent_id)) {
      this.picked.set(message.parent_id ?? ROOT, message.id);
    }
    // Below it: the way to its newest message, not an older pick.
    const below = (key) => {
      for (const child of this.children.get(key) ?? []) {
        this.picked.delete(key);
        below(child);
      }
    };
    below(id);
  }
}
