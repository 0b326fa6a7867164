// Drives the official MCP TypeScript SDK 1.x client through Airlock.
//
// Usage: node ts_client.mjs URL AGENT_KEY PLAN_JSON
// PLAN_JSON: {"calls": [{"name": ..., "args": {...}}]}
// Prints one JSON object: the negotiated protocol version, the listed tools,
// and each call's result (or the error raised).
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, key, planText] = process.argv.slice(2);
const plan = JSON.parse(planText);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${key}` } },
});
const client = new Client({ name: "airlock-test", version: "1.0.0" });
await client.connect(transport);
const out = { protocol_version: transport.protocolVersion ?? null, calls: [] };
const listed = await client.listTools();
out.tools = listed.tools.map((t) => t.name);
out.cache_scope = listed.cacheScope ?? null;
for (const call of plan.calls ?? []) {
  try {
    const r = await client.callTool({ name: call.name, arguments: call.args ?? {} });
    const text = r.content.filter((c) => c.type === "text").map((c) => c.text).join(" ");
    out.calls.push({ name: call.name, is_error: Boolean(r.isError), text });
  } catch (e) {
    out.calls.push({ name: call.name, exception: String(e) });
  }
}
await transport.terminateSession().catch(() => {});
await client.close();
console.log(JSON.stringify(out));
