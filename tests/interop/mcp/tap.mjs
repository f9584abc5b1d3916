// Start an MCP server and append every line it receives on stdin to TAP_LOG, so a test
// can prove what reached the server (and what never did).
import { spawn } from "node:child_process";
import { appendFileSync } from "node:fs";

const [program, ...args] = process.argv.slice(2);
const log = process.env.TAP_LOG;
const child = spawn(program, args, { stdio: ["pipe", "inherit", "inherit"] });
let pending = "";
process.stdin.on("data", (chunk) => {
  if (log) {
    pending += chunk.toString("utf8");
    const lines = pending.split("\n");
    pending = lines.pop();
    for (const line of lines) appendFileSync(log, line + "\n");
  }
  child.stdin.write(chunk);
});
process.stdin.on("end", () => {
  // The proxy closed its side: the session with this server is over.
  if (log) appendFileSync(log, JSON.stringify({ tap: "closed" }) + "\n");
  child.stdin.end();
});
child.on("exit", (code) => process.exit(code ?? 0));
