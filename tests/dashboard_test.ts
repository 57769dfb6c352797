/**
 * The dashboard in a real headless Chromium: it connects over SSE, shows a swap while it
 * happens, the queue with ETAs, finished requests, and its admin buttons load, unload and
 * cancel. Screenshots go to test-output/ for a person to look at.
 */
import assert from "node:assert/strict";
import { chatBody, getJson, post, SseReader } from "./support/client.ts";
import { launchBrowser, saveScreenshot } from "./support/browser.ts";
import { withHomelabProxy } from "./support/proxy.ts";
import { waitFor, within } from "./support/wait_for.ts";

const ADMIN_KEY = "dashboard-admin-key-0123456789";
const UI_TIMEOUT = { timeout: 20_000 };

Deno.test("dashboard: a swap shows live in Chromium, then its admin buttons cancel, load and unload", async () => {
  const specs = [{ id: "alpha", loadMs: 1500 }, { id: "beta", loadMs: 1500 }];
  const extra = `admin_key: ${ADMIN_KEY}\nnum_workers: 1`;
  await withHomelabProxy(specs, extra, async ({ lab, proxy }) => {
    await using chrome = await launchBrowser();
    const page = await chrome.browser.newPage({ viewport: { width: 1400, height: 900 } });
    const text = (selector: string) => page.locator(selector).first().textContent();
    await page.goto(`${proxy.url}/dashboard`);
    await page.waitForSelector("#live.ok", UI_TIMEOUT);
    assert.equal(await text("#current-model"), "none");
    assert.equal(await text("#health-docker"), "Docker ok");

    // A request for alpha: the page shows the load while it happens, then the swap.
    const first = post(proxy.url, chatBody("alpha"));
    await page.waitForSelector('#phase[data-phase="starting"]', UI_TIMEOUT);
    assert.match((await text("#phase")) ?? "", /^loading alpha · /);
    assert.equal(await text('#models-body tr[data-model="alpha"] .state'), "loading");
    console.log(`screenshot: ${await saveScreenshot(page, "dashboard-loading.png")}`);
    const answered = await first;
    assert.equal(answered.status, 200);
    await answered.text();
    const id = answered.headers.get("x-request-id")!;
    await page.waitForSelector('#swaps li[data-swap="none → alpha"]', UI_TIMEOUT);
    await page.waitForSelector(`#requests-body tr[data-request="${id}"]`, UI_TIMEOUT);
    assert.match((await text(`tr[data-request="${id}"] .status`)) ?? "", /^200/);
    assert.equal(await text("#current-model"), "alpha");
    assert.equal(await text('#models-body tr[data-model="alpha"] .state'), "loaded");

    // Alpha busy, beta waiting: the queue shows it with its ETA.
    const held = post(proxy.url, chatBody("alpha", { fake_hold: true }));
    await waitFor("alpha busy", async () => (await lab.state("alpha")).inflight === 1);
    const waiting = post(proxy.url, chatBody("beta"));
    const row = page.locator("#queue-body tr[data-job]", { hasText: "beta" });
    await row.waitFor(UI_TIMEOUT);
    assert.match((await row.textContent()) ?? "", /beta.*interactive.*~/);
    assert.equal(await text("#workers"), "1 / 1");
    assert.match((await text("#queue-count")) ?? "", /^1 waiting · policy affinity$/);
    console.log(`screenshot: ${await saveScreenshot(page, "dashboard-queue.png")}`);

    // Admin buttons need the key; cancel the waiting request.
    assert.equal(await row.locator('button[data-action="cancel"]').isDisabled(), true);
    await page.fill("#admin-key", ADMIN_KEY);
    await page.click('#admin-form button[type="submit"]');
    await row.locator('button[data-action="cancel"]').click();
    const cancelled = await waiting;
    assert.equal(cancelled.status, 503);
    assert.equal((await cancelled.json()).error.code, "cancelled_by_admin");
    await page.locator("#queue-body tr[data-job]").waitFor({ state: "detached", ...UI_TIMEOUT });
    assert.equal(await lab.release(), 1);
    assert.equal((await held).status, 200);

    // Load beta from the page, then unload it: both land on the swap timeline.
    await page.click('#models-body tr[data-model="beta"] button[data-action="load"]');
    await page.waitForSelector('#swaps li[data-swap="alpha → beta"]', UI_TIMEOUT);
    assert.match((await text('#swaps li[data-swap="alpha → beta"] .what')) ?? "", /admin/);
    assert.equal(await text("#current-model"), "beta");
    await page.click('#models-body tr[data-model="beta"] button[data-action="unload"]');
    await page.waitForSelector('#swaps li[data-swap="beta → none"]', UI_TIMEOUT);
    await page.locator("#current-model", { hasText: /^none$/ }).waitFor(UI_TIMEOUT);
    assert.deepEqual(await lab.running(), []);
    const state = (await getJson(`${proxy.url}/dashboard/state`)).body;
    assert.deepEqual(
      (state.swaps as { from: string | null; to: string | null }[]).map((s) => [s.from, s.to]),
      [["beta", null], ["alpha", "beta"], [null, "alpha"]],
    );
    console.log(`screenshot: ${await saveScreenshot(page, "dashboard.png")}`);
  });
});

Deno.test("dashboard: without admin_key there are no admin buttons, and the page still updates", async () => {
  await withHomelabProxy([{ id: "solo" }], "", async ({ proxy }) => {
    await using chrome = await launchBrowser();
    const page = await chrome.browser.newPage();
    await page.goto(`${proxy.url}/dashboard`);
    await page.waitForSelector("#live.ok", UI_TIMEOUT);
    assert.equal(await page.locator("#admin").isVisible(), false);
    assert.equal((await post(proxy.url, chatBody("solo"))).status, 200);
    await page.waitForSelector('#swaps li[data-swap="none → solo"]', UI_TIMEOUT);
    assert.equal(await page.locator("button[data-action]").count(), 0);
  });
});

Deno.test("dashboard feed: a swap and a request reach an open feed without a reload, and an open feed does not hold up shutdown", async () => {
  await withHomelabProxy([{ id: "solo" }], "", async ({ proxy }) => {
    const feed = new SseReader(await fetch(`${proxy.url}/dashboard/events`));
    const first = await feed.next();
    assert.equal(first?.event, "state");
    assert.match(first?.data ?? "", /^\{"uptime_s":/);
    assert.equal((await post(proxy.url, chatBody("solo"))).status, 200);
    // The swap and the request both reach the feed without a page reload.
    const state = await waitFor("the swap in the feed", async () => {
      const state = JSON.parse((await feed.next())?.data ?? "{}");
      return state.swaps?.length === 1 && state.requests?.length === 1 && state;
    });
    assert.deepEqual(
      [state.requests[0].path, state.requests[0].status, state.requests[0].key],
      ["/v1/chat/completions", 200, null],
    );
    // Closing the proxy ends the stream instead of waiting for the client to leave.
    await within("the proxy to close with a feed open", proxy.close(2000));
    await within("the feed to end", feed.rest());
  });
});
