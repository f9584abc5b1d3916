// An MCP agent built on the official TypeScript SDK: connects over stdio to the command
// it is given, runs the script of calls in CALLS (JSON), and prints one JSON line per call.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const [command, ...args] = process.argv.slice(2);
const transport = new StdioClientTransport({ command, args, env: process.env, stderr: "inherit" });
const client = new Client({ name: "interop-agent", version: "1.0.0" });
await client.connect(transport);
// BENCH=N: time N sequential echo calls (after 20 warm-up calls) and print the latencies.
if (process.env.BENCH) {
  const n = Number(process.env.BENCH);
  const latencies = [];
  for (let i = 0; i < n + 20; i++) {
    const t = performance.now();
    await client.callTool({ name: "echo", arguments: { message: `hello ${i}` } });
    if (i >= 20) latencies.push(performance.now() - t);
  }
  console.log(JSON.stringify({ latencies_ms: latencies }));
  await client.close();
  process.exit(0);
}
const calls = JSON.parse(process.env.CALLS ?? "[]");
for (const call of calls) {
  try {
    let result;
    if (call.method === "tools/list") result = await client.listTools();
    else if (call.method === "resources/list") result = await client.listResources();
    else if (call.method === "resources/read") result = await client.readResource({ uri: call.uri });
    else result = await client.callTool({ name: call.name, arguments: call.arguments ?? {} });
    console.log(JSON.stringify({ ok: true, result }));
  } catch (e) {
    console.log(JSON.stringify({ ok: false, error: String(e?.message ?? e) }));
  }
}
await client.close();
