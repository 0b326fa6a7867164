// Opens the page an MCP client was sent by URL elicitation, in Debian's
// Chromium (playwright-core), as the person at that client would: signs in
// to the inbox, opens the link, and approves. Prints one JSON object on
// stdout for tests/it/mcp_elicit.rs.
//
// Usage: node elicit_browser.mjs '<json>' with {admin, link, approver_token}
import { chromium } from "playwright-core";

const cfg = JSON.parse(process.argv[2]);

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run"],
});
const out = {};
try {
  const page = await (await browser.newContext()).newPage();
  await page.goto(cfg.admin + "/");
  await page.fill("#token", cfg.approver_token);
  await Promise.all([page.waitForURL(cfg.admin + "/"), page.click("#signin button")]);
  await page.goto(cfg.link);
  out.status = (await page.textContent("#status"))?.trim();
  await page.fill("#approve-reason", "approved from the link the agent's client showed");
  await Promise.all([page.waitForURL(cfg.admin + "/"), page.click("#approve button")]);
  out.approved = true;
} catch (e) {
  out.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
