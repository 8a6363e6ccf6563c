// The page against a NATS server murmur up did not start, over TLS WebSocket (wss://):
// tests/console.rs starts that server with a self-signed certificate and `murmur up
// --websocket-url wss://…`; Chromium is told to accept the certificate. Prints one JSON line:
// the status the page shows and the last sequence it followed.
import { chromium } from "playwright-core";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--ignore-certificate-errors"],
});
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(process.env.CONSOLE_URL);
  await page.waitForSelector("[data-testid=status] >> text=live: wss://", { timeout: 60_000 });
  await page.waitForFunction(() => window.murmurConsole?.store.lastSeq > 0, null, { timeout: 60_000 });
  console.log(
    JSON.stringify({
      status: await page.textContent("[data-testid=status]"),
      last_seq: await page.evaluate(() => window.murmurConsole.store.lastSeq),
    })
  );
} catch (e) {
  console.error(e.stack || String(e));
  process.exitCode = 1;
} finally {
  await browser.close();
}
