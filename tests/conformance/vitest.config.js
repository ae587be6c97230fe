import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["conformance.test.js"],
    testTimeout: 30000,
    hookTimeout: 30000,
    // The suite's own files live in node_modules, which vitest would otherwise refuse to transform.
    server: { deps: { inline: [/@durable-streams/] } },
  },
})
