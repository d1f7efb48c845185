// A small bridge from the Python tests to one headless Chromium (playwright-core, the system
// browser): JSON requests on stdin, one per line, JSON answers on stdout, one per line.
//   {"id": 1, "op": "open", "url": "http://..."}             -> {"id": 1, "page": 1}
//   {"id": 2, "op": "eval", "page": 1, "fn": "async (arg) => ...", "arg": ...}
//                                                           -> {"id": 2, "result": ...}
//   {"id": 3, "op": "close", "page": 1}                     -> {"id": 3}
// Failures answer {"id": N, "error": "..."}. The page's console and errors go to stderr.
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  headless: true,
  chromiumSandbox: false,
  args: [
    "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
    // upload.localhost (the upload service's URLs) is the server on loopback
    "--host-resolver-rules=MAP *.localhost 127.0.0.1",
  ],
});
const LOCAL = new Set(["127.0.0.1", "localhost", "[::1]"]);
const pages = new Map();
let nextPage = 1;

function answer(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

async function handle(req) {
  switch (req.op) {
    case "open": {
      // A fresh context per page: no storage (IndexedDB, cookies) left by an earlier test.
      // The server's certificate is self-signed (the upload URLs are https).
      const context = await browser.newContext({ ignoreHTTPSErrors: true });
      // Nothing leaves the machine (Converse's splash screen links sponsors' logos).
      await context.route((url) => !LOCAL.has(url.hostname) && !url.hostname.endsWith(".localhost"),
        (route) => route.abort("blockedbyclient"));
      const page = await context.newPage();
      const n = nextPage++;
      page.on("console", (m) => process.stderr.write(`[page ${n} ${m.type()}] ${m.text()}\n`));
      page.on("requestfailed", (r) => process.stderr.write(
        `[page ${n} request failed] ${r.method()} ${r.url()} ${r.failure()?.errorText}\n`));
      page.on("response", (r) => r.status() >= 400 && process.stderr.write(
        `[page ${n} response] ${r.status()} ${r.url()}\n`));
      page.on("pageerror", (e) => process.stderr.write(`[page ${n} error] ${e}\n`));
      await page.goto(req.url, { waitUntil: "load" });
      pages.set(n, page);
      return { page: n };
    }
    case "eval": {
      const page = pages.get(req.page);
      const expression = `(${req.fn})(${JSON.stringify(req.arg ?? null)})`;
      return { result: await page.evaluate(expression) };
    }
    case "close": {
      await pages.get(req.page)?.context().close();
      pages.delete(req.page);
      return {};
    }
    default:
      throw new Error(`unknown op ${req.op}`);
  }
}

answer({ ready: true, version: browser.version() });
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const req = JSON.parse(line);
  // Requests run concurrently (a test may wait in one page while acting in another).
  handle(req).then(
    (res) => answer({ id: req.id, ...res }),
    (err) => answer({ id: req.id, error: String(err && err.stack || err) }),
  );
}
await browser.close();
