// Drives the approver inbox in Debian's Chromium (playwright-core, no
// downloaded browser) while an agent's calls are held, and prints what it
// saw as one JSON object on stdout for tests/it/inbox.rs to assert on.
//
// Usage: node inbox_browser.mjs '<json>' with
//   {admin, proxy, agent_key, admin_token, approver_token, other_approver_token,
//    screenshots}: the directory the pending list's and a held call's
//   screenshots are saved to.
import { chromium } from "playwright-core";

const cfg = JSON.parse(process.argv[2]);
const WAIT = 20000;

// The agent's call, as a promise of what it finally got.
function refund(body, headers = {}) {
  return fetch(cfg.proxy + "/crm/refunds", {
    method: "POST",
    headers: { authorization: "Bearer " + cfg.agent_key, "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  }).then(async (r) => ({ status: r.status, body: await r.text() }));
}

async function signIn(browser, token) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.dialogs = [];
  page.logs = [];
  page.on("console", (m) => page.logs.push(m.type() + ": " + m.text()));
  page.on("response", (r) => { if (r.status() >= 400) page.logs.push(`${r.status()} ${r.url()}`); });
  page.on("requestfailed", (r) => page.logs.push(`failed ${r.url()}`));
  page.on("pageerror", (e) => page.logs.push("error: " + e.message));
  page.on("dialog", (d) => { page.dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  await page.goto(cfg.admin + "/");
  await page.fill("#token", token);
  await Promise.all([page.waitForURL(cfg.admin + "/"), page.click("#signin button")]);
  await page.waitForSelector("#pending");
  return { context, page };
}

// The held calls already handled, so that each scenario waits for its own.
const handled = [];

// Waits in the open list for a held row not seen before, while `agent`
// waits for its answer.
async function nextHeld(page, agent) {
  agent.then((got) => page.logs.push(`the agent got ${got.status} ${got.body}`),
    (e) => page.logs.push(`the agent's call failed: ${e.cause || e}`));
  const handle = await page.waitForFunction(
    (seen) => [...document.querySelectorAll("tr.held")].map((r) => r.dataset.id).find((id) => !seen.includes(id)),
    handled,
    { timeout: WAIT },
  ).catch(async (e) => {
    const probe = await page.evaluate(() => new Promise((done) => {
      const got = [];
      const es = new EventSource("/v1/events");
      es.onopen = () => got.push("open");
      es.onerror = () => got.push("error " + es.readyState);
      ["decision", "approval.hold"].forEach((n) => es.addEventListener(n, (m) => got.push(n + " " + m.data)));
      fetch("/pending").then((r) => r.text()).then((t) => got.push("pending: " + t));
      setTimeout(() => { es.close(); done(got); }, 3000);
    }));
    throw new Error(`no new held call appeared (${e.message}); console: ${page.logs.join(" | ")}; probe: ${JSON.stringify(probe)}`);
  });
  const id = await handle.jsonValue();
  handled.push(id);
  return id;
}

async function openHeld(page, id) {
  await Promise.all([page.waitForURL("**/approvals/" + id), page.click(`tr[data-id="${id}"] a`)]);
}

async function approveScenario(page, context) {
  await page.evaluate(() => { window.stayedOpen = true; });
  const agent = refund({ amount: 500, customer: "c-1" });
  const id = await nextHeld(page, agent);
  const stayedOpen = await page.evaluate(() => window.stayedOpen === true);
  const cookie = (await context.cookies()).find((c) => c.name === "airlock_session");
  const shownToken = (await page.content()).includes(cfg.approver_token);
  await openHeld(page, id);
  await page.fill("#approve-reason", "checked the order");
  await Promise.all([page.waitForURL(cfg.admin + "/"), page.click("#approve button")]);
  const got = await agent;
  return {
    id, stayedOpen, shownToken,
    httpOnly: cookie?.httpOnly, sameSite: cookie?.sameSite,
    agentStatus: got.status, agentBody: got.body,
  };
}

async function denyScenario(page) {
  const agent = refund({ amount: 600, customer: "c-2" });
  const id = await nextHeld(page, agent);
  await openHeld(page, id);
  // Keys typed into a field are text, not shortcuts.
  await page.type("#approve-reason", "ade");
  const typed = await page.inputValue("#approve-reason");
  const urlAfterTyping = page.url();
  await page.fill("#approve-reason", "");
  await page.click("#deny button");
  const emptyError = await page.textContent("#error");
  const statusAfterEmpty = await page.textContent("#status");
  await page.fill("#deny-reason", "this customer was refunded already");
  await Promise.all([page.waitForURL(cfg.admin + "/"), page.click("#deny button")]);
  const got = await agent;
  return {
    id, emptyError, statusAfterEmpty, typed, stayedOnPage: urlAfterTyping.endsWith("/approvals/" + id),
    agentStatus: got.status, agentBody: got.body,
  };
}

async function scriptScenario(page) {
  const agent = refund({
    amount: 700,
    note: "<script>alert(1)</script>",
    memo: '"><img src=x onerror=window.pwned=1>',
  });
  const id = await nextHeld(page, agent);
  await openHeld(page, id);
  const seen = await page.evaluate(() => ({
    images: document.querySelectorAll("img").length,
    scripts: document.querySelectorAll("script").length,
    pwned: window.pwned === 1,
    bodyText: document.getElementById("body").textContent,
    editText: document.getElementById("edited").value,
  }));
  await page.fill("#deny-reason", "cleaning up");
  await Promise.all([page.waitForURL(cfg.admin + "/"), page.click("#deny button")]);
  await agent;
  return { id, dialogs: page.dialogs, ...seen };
}

// Answers in the tool's place: invalid JSON is caught in the page, a
// status the server refuses comes back inline, then the agent gets the
// human's answer.
async function respondScenario(page) {
  const agent = refund({ amount: 300, customer: "c-5" });
  const id = await nextHeld(page, agent);
  await openHeld(page, id);
  await page.fill("#answer", "{\"refund_id\": ");
  await page.click("#respond button");
  const jsonError = await page.textContent("#answer-json-error");
  const jsonErrorShown = await page.isVisible("#answer-json-error");
  // The browser would stop a status out of range; the server must too.
  await page.$eval("#answer-status", (el) => el.removeAttribute("max"));
  await page.fill("#answer-status", "700");
  await page.fill("#answer", '{"refund_id": "manual-1"}');
  const answer = page.waitForResponse((r) => r.url().endsWith("/respond"));
  await page.click("#respond button");
  const refusedStatus = (await answer).status();
  await page.waitForSelector("#error");
  const refused = await page.textContent("#error");
  const keptAnswer = await page.inputValue("#answer");
  await page.fill("#answer-status", "201");
  await page.fill("#respond-reason", "issued by hand");
  await Promise.all([page.waitForURL(cfg.admin + "/"), page.click("#respond button")]);
  const got = await agent;
  return {
    id, jsonError, jsonErrorShown, refusedStatus, refused, keptAnswer,
    agentStatus: got.status, agentBody: got.body,
  };
}

// Leaves the held call pending for the other approver's attempt, and
// answers a function that denies it.
async function editScenario(page) {
  const agent = refund({ amount: 800, customer: "c-4" });
  const id = await nextHeld(page, agent);
  await openHeld(page, id);
  await page.fill("#edited", '{"amount": 5');
  await page.click("#edit button");
  const jsonError = await page.textContent("#json-error");
  const jsonErrorShown = await page.isVisible("#json-error");
  await page.fill("#edited", '{\n  "amount": 5000,\n  "customer": "c-4"\n}');
  const diff = await page.textContent("#diff");
  const diffShown = await page.isVisible("#diff");
  const answer = page.waitForResponse((r) => r.url().endsWith("/edit"));
  await page.click("#edit button");
  const editStatus = (await answer).status();
  await page.waitForSelector("#error");
  const refused = await page.textContent("#error");
  const statusAfterRefusal = await page.textContent("#status");
  const finish = async () => {
    await page.goto(cfg.admin + "/approvals/" + id);
    await page.fill("#deny-reason", "cleaning up");
    await Promise.all([page.waitForURL(cfg.admin + "/"), page.click("#deny button")]);
    return agent;
  };
  const recent = await page.$$eval("tr.recent .verdict", (cells) => cells.map((c) => c.textContent));
  return {
    result: { id, jsonError, jsonErrorShown, diff, diffShown, editStatus, refused, statusAfterRefusal, recent },
    finish,
  };
}

async function outsiderScenario(browser, id) {
  const { context, page } = await signIn(browser, cfg.other_approver_token);
  const listed = await page.$$eval("tr.held", (rows) => rows.map((r) => r.dataset.id));
  const byUrl = await page.goto(cfg.admin + "/approvals/" + id);
  const byUrlStatus = byUrl.status();
  const byUrlError = await page.textContent("#error");
  // A same-origin form post with the outsider's own CSRF token.
  await page.goto(cfg.admin + "/");
  const post = await page.evaluate(async (id) => {
    const csrf = document.querySelector("input[name=csrf]").value;
    const r = await fetch("/approvals/" + id + "/approve", {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ csrf, reason: "not mine" }),
    });
    return r.status;
  }, id);
  await context.close();
  return { listed, byUrlStatus, byUrlError, postStatus: post };
}

// Whether the page scrolls sideways at its current width.
function sideways(page) {
  return page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
}

// Screenshots of the pending list and the held call, at a laptop's width;
// then at 375 px wide no page scrolls sideways, and j then a approves the
// selected call from the list.
async function keyboardScenario(page) {
  await page.setViewportSize({ width: 1000, height: 700 });
  const agent = refund(
    { amount: 450, customer: "c-8", order: "o-1138" },
    { "airlock-confidence": "0.62", "airlock-reason": "the customer was charged twice for order o-1138" },
  );
  const id = await nextHeld(page, agent);
  await page.screenshot({ path: cfg.screenshots + "/inbox-pending.png" });
  await openHeld(page, id);
  await page.fill("#edited", '{\n  "amount": 400,\n  "customer": "c-8",\n  "order": "o-1138"\n}');
  await page.screenshot({ path: cfg.screenshots + "/inbox-held.png", fullPage: true });

  await page.setViewportSize({ width: 375, height: 700 });
  const wide = {};
  wide.held = await sideways(page);
  await page.goto(cfg.admin + "/history");
  wide.history = await sideways(page);
  await page.goto(cfg.admin + "/");
  await page.waitForSelector(`tr[data-id="${id}"]`);
  wide.pending = await sideways(page);
  const scrollWidth = await page.evaluate(() => document.documentElement.scrollWidth);

  await page.keyboard.press("?");
  const helpShown = await page.isVisible("#help");
  await page.keyboard.press("Escape");
  const helpHidden = await page.isHidden("#help");
  await page.keyboard.press("j");
  const selected = await page.$eval("tr.selected", (r) => r.dataset.id);
  await Promise.all([page.waitForURL(cfg.admin + "/"), page.keyboard.press("a")]);
  const got = await agent;
  await page.setViewportSize({ width: 1000, height: 700 });
  return {
    id, selected, helpShown, helpHidden, wide, scrollWidth,
    agentStatus: got.status, agentBody: got.body,
  };
}

// Pauses the agent from the Agents tab, signed in with the admin token;
// its next call is refused. Resumes it after.
async function pauseScenario(browser) {
  const { context, page } = await signIn(browser, cfg.admin_token);
  await Promise.all([page.waitForURL(cfg.admin + "/agents"), page.click("nav a[href='/agents']")]);
  await page.selectOption("#pause-mode-bot", "deny");
  await page.fill("#pause-reason-bot", "runaway refunds");
  await Promise.all([page.waitForURL(cfg.admin + "/agents"), page.click("#agent-bot form.pause button")]);
  const shown = await page.textContent("#agent-bot .paused");
  const got = await refund({ amount: 10, customer: "c-7" });
  await page.fill("#resume-reason-bot", "looked into it");
  await Promise.all([page.waitForURL(cfg.admin + "/agents"), page.click("#agent-bot form.resume button")]);
  const afterResume = await page.textContent("#agent-bot");
  await context.close();
  return { shown, agentStatus: got.status, agentBody: got.body, afterResume };
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run"],
});
const out = {};
try {
  const { context, page } = await signIn(browser, cfg.approver_token);
  out.approve = await approveScenario(page, context);
  out.deny = await denyScenario(page);
  out.script = await scriptScenario(page);
  out.respond = await respondScenario(page);
  const edit = await editScenario(page);
  out.edit = edit.result;
  out.outsider = await outsiderScenario(browser, edit.result.id);
  const ended = await edit.finish();
  out.edit.agentStatus = ended.status;
  out.keyboard = await keyboardScenario(page);
  await context.close();
  out.pause = await pauseScenario(browser);
} catch (e) {
  out.error = String(e && e.stack || e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
