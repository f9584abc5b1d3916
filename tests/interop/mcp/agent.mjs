// An MCP agent built on the official TypeScript SDK. Connects to the proxy over stdio
// (`node agent.mjs COMMAND ARGS...`) or streamable HTTP (`node agent.mjs http://...`, with
// its key in AGENT_KEY), runs the script of calls in CALLS (JSON), and prints one JSON
// line per call. It can sample: a sampling request from the server is answered with a
// fixed message, so a test can see server-to-client requests arrive.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CreateMessageRequestSchema } from "@modelcontextprotocol/sdk/types.js";

const [target, ...args] = process.argv.slice(2);
const transport = target.startsWith("http")
  ? new StreamableHTTPClientTransport(new URL(target), {
      requestInit: { headers: process.env.AGENT_KEY ? { Authorization: `Bearer ${process.env.AGENT_KEY}` } : {} },
    })
  : new StdioClientTransport({ command: target, args, env: process.env, stderr: "inherit" });
const client = new Client({ name: "interop-agent", version: "1.0.0" }, { capabilities: { sampling: {} } });
client.setRequestHandler(CreateMessageRequestSchema, async () => ({
  model: "interop-agent-model",
  role: "assistant",
  content: { type: "text", text: "sampled by the agent" },
}));
try {
  await client.connect(transport);
} catch (e) {
  console.log(JSON.stringify({ ok: false, connect: false, error: String(e?.message ?? e) }));
  process.exit(0);
}
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
  if (call.method === "wait") {
    // Let the test change the world mid-session: say so, and go on at its next line.
    console.log(JSON.stringify({ waiting: true }));
    await new Promise((resolve) => process.stdin.once("data", resolve));
    process.stdin.pause();
    continue;
  }
  try {
    let result;
    let progress = 0;
    if (call.method === "tools/list") result = await client.listTools();
    else if (call.method === "resources/list") result = await client.listResources();
    else if (call.method === "resources/read") result = await client.readResource({ uri: call.uri });
    else {
      const options = call.progress ? { onprogress: () => (progress += 1) } : {};
      result = await client.callTool({ name: call.name, arguments: call.arguments ?? {} }, undefined, options);
    }
    console.log(JSON.stringify({ ok: true, result, progress }));
  } catch (e) {
    console.log(JSON.stringify({ ok: false, error: String(e?.message ?? e) }));
  }
}
// Over HTTP, end the session as a polite client does (DELETE) unless told to walk away.
if (transport.terminateSession && !process.env.NO_TERMINATE) await transport.terminateSession();
await client.close();
