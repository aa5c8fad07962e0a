// Drives the bootgate dashboard in a real headless Chromium: refused without
// an operator certificate; with one, the fleet counts show, an incident opens
// with its failed rule and event-log diff, a change made elsewhere appears
// without a reload, a remediation without a post-mortem is refused, a note is
// recorded, and an admitted host is quarantined from its panel.
//
// Environment: BOOTGATE_URL, BOOTGATE_CERT, BOOTGATE_KEY (the operator's),
// NODE_EXTRA_CA_CERTS (the appliance's server CA), BOOTGATE_INCIDENT,
// BOOTGATE_RULE, BOOTGATE_DIFF, BOOTGATE_QUARANTINED, BOOTGATE_ADMITTED_HOST,
// CHROMIUM; optionally
// BOOTGATE_SCREENSHOT, a PNG file to write at the end.
// Protocol on stdio: prints "CHANGE" and waits for a line on stdin before
// expecting the live update; prints "RESULT {json}" at the end.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const url = env("BOOTGATE_URL");
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const timeout = 20000;

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-extensions", "--no-first-run", "--disable-sync", "--metrics-recording-only", "--mute-audio"],
});
try {
  const result = {};

  // No operator certificate: refused.
  const anon = await browser.newContext({ ignoreHTTPSErrors: true });
  const resp = await (await anon.newPage()).goto(url, { timeout });
  check(resp.status() === 401, `without a certificate the dashboard answered ${resp.status()}`);
  await anon.close();

  const ctx = await browser.newContext({
    clientCertificates: [{ origin: url, certPath: env("BOOTGATE_CERT"), keyPath: env("BOOTGATE_KEY") }],
  });
  const page = await ctx.newPage();
  page.setDefaultTimeout(timeout);
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));

  let t0 = Date.now();
  await page.goto(url);
  await page.locator("#live", { hasText: "live" }).waitFor();
  await page.locator(`#incidents tr[data-incident="${env("BOOTGATE_INCIDENT")}"]`).waitFor();
  result.listMs = Date.now() - t0;
  const quarantined = await page.locator("#count-quarantined").textContent();
  check(quarantined === env("BOOTGATE_QUARANTINED"), `quarantined count ${quarantined}, want ${env("BOOTGATE_QUARANTINED")}`);
  check((await page.locator("#whoami").textContent()).includes("alice"), "the page does not name the operator");

  t0 = Date.now();
  await page.locator(`#incidents tr[data-incident="${env("BOOTGATE_INCIDENT")}"]`).click();
  await page.locator("#detail-reasons td.rule", { hasText: env("BOOTGATE_RULE") }).first().waitFor();
  await page.locator("#diff", { hasText: env("BOOTGATE_DIFF") }).waitFor();
  result.openIncidentMs = Date.now() - t0;

  // A change made elsewhere shows up without a reload.
  await page.evaluate(() => { window.__sameDocument = true; });
  const openBefore = Number(await page.locator("#count-open").textContent());
  console.log("CHANGE");
  await lines.next();
  t0 = Date.now();
  await page.waitForFunction((n) => Number(document.getElementById("count-open").textContent) === n, openBefore + 1);
  result.liveUpdateMs = Date.now() - t0;
  check(await page.evaluate(() => window.__sameDocument === true), "the page was reloaded");

  // The incident workflow refuses a remediation without a post-mortem.
  await page.locator("#act-kind").selectOption("remediate");
  await page.locator("#act-text").fill("");
  await page.locator("#act button[type=submit]").click();
  await page.locator("#act-result.error", { hasText: "post-mortem" }).waitFor();

  // A note goes into the history under the certificate's name.
  await page.locator("#act-kind").selectOption("note");
  await page.locator("#act-text").fill("looked at the diff in the dashboard");
  await page.locator("#act button[type=submit]").click();
  await page.locator("#history li", { hasText: "alice note: looked at the diff in the dashboard" }).waitFor();

  // Find an admitted host by its ID and quarantine it from its panel; the
  // count follows.
  page.on("dialog", (d) => d.accept());
  const host = env("BOOTGATE_ADMITTED_HOST");
  const quarantinedBefore = Number(await page.locator("#count-quarantined").textContent());
  await page.locator("button.tab[data-tab=hosts]").click();
  await page.locator("#host-state").selectOption("admitted");
  await page.locator("#host-prefix").fill(host);
  await page.waitForFunction((h) => {
    const rows = document.querySelectorAll("#hosts tbody tr");
    return rows.length === 1 && rows[0].dataset.host === h;
  }, host);
  await page.locator(`#hosts tr[data-host="${host}"]`).click();
  await page.locator("#host-title", { hasText: "admitted" }).waitFor();
  await page.locator("#host-attestations td.verdict-pass").first().waitFor();
  await page.locator("#host-quarantine").click();
  await page.locator("#host-title", { hasText: "quarantined" }).waitFor();
  await page.waitForFunction((n) => Number(document.getElementById("count-quarantined").textContent) === n, quarantinedBefore + 1);

  check(errors.length === 0, `page errors: ${errors.join("; ")}`);
  if (process.env.BOOTGATE_SCREENSHOT) await page.screenshot({ path: process.env.BOOTGATE_SCREENSHOT, fullPage: true });
  console.log("RESULT " + JSON.stringify(result));
} finally {
  await browser.close();
}
process.exit(0);
