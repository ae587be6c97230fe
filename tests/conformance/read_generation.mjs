// Follow a generation's durable stream with @durable-streams/client; print each batch as a JSON line.
// Used by tests/durable/test_ds_node_client.py, which cuts the connection under it.
import { stream } from "@durable-streams/client"

const TERMINAL = new Set(["done", "interrupted", "failed", "cancelled"])
const { DS_URL, DS_TOKEN, DS_LIVE = "sse", DS_OFFSET = "-1" } = process.env

const response = await stream({
  url: DS_URL,
  offset: DS_OFFSET,
  live: DS_LIVE,
  headers: { Authorization: `Bearer ${DS_TOKEN}` },
  backoffOptions: { initialDelay: 50, maxDelay: 500, multiplier: 2 },
  // A cut connection is recoverable: retry from the last offset with the same options.
  onError: () => ({}),
  sseResilience: { logWarnings: false },
  warnOnHttp: false,
})
response.subscribeJson(async (batch) => {
  process.stdout.write(JSON.stringify({ offset: batch.offset, items: batch.items }) + "\n")
  if (batch.items.some((item) => TERMINAL.has(item.type))) {
    process.exit(0)
  }
})
