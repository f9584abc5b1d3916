// Start server-everything over streamable HTTP behind a recording pass-through: every
// request that reaches the server is appended to TAP_LOG as {"headers", "body"}, so a test
// can prove what reached the server (and what never did). Prints the URL to use.
import { spawn } from "node:child_process";
import { appendFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";

const [everything] = process.argv.slice(2);
const log = process.env.TAP_LOG;

const free = await new Promise((resolve) => {
  const s = net.createServer().listen(0, "127.0.0.1", () => {
    const { port } = s.address();
    s.close(() => resolve(port));
  });
});
const child = spawn(process.execPath, [everything, "streamableHttp"], {
  env: { ...process.env, PORT: String(free) },
  stdio: ["ignore", "ignore", "pipe"],
});
await new Promise((resolve, reject) => {
  child.stderr.on("data", (chunk) => {
    process.stderr.write(chunk);
    if (chunk.toString().includes("listening on port")) resolve();
  });
  child.on("exit", (code) => reject(new Error(`server-everything exited with ${code}`)));
});

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks);
    if (log) {
      let parsed = body.toString("utf8");
      try {
        parsed = JSON.parse(parsed);
      } catch {}
      appendFileSync(log, JSON.stringify({ method: req.method, headers: req.headers, body: parsed }) + "\n");
    }
    const headers = { ...req.headers, host: `127.0.0.1:${free}` };
    const upstream = http.request({ host: "127.0.0.1", port: free, path: req.url, method: req.method, headers }, (ur) => {
      res.writeHead(ur.statusCode, ur.headers);
      ur.pipe(res);
    });
    upstream.on("error", (e) => {
      res.writeHead(502);
      res.end(String(e));
    });
    upstream.end(body);
  });
});
server.listen(0, "127.0.0.1", () => console.log(`listening on http://127.0.0.1:${server.address().port}/mcp`));
const stop = () => {
  child.kill();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
// The test holds our stdin: when it closes (the test is done, or died), stop.
process.stdin.on("end", stop);
process.stdin.resume();
