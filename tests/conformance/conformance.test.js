// The Durable Streams server conformance suite, against the server at DS_BASE_URL
// (tests/durable/test_ds_conformance.py starts it, behind a proxy that adds a bearer token).
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

const baseUrl = process.env.DS_BASE_URL
if (!baseUrl) {
  throw new Error("DS_BASE_URL is required: run this through tests/durable/test_ds_conformance.py")
}

runConformanceTests({ baseUrl, longPollTimeoutMs: Number(process.env.DS_LONG_POLL_TIMEOUT_MS || 15000) })
