/**
 * Admin endpoints: always behind the admin key; list what runs, load and unload a model,
 * see the queue and cancel a waiting request.
 */
import assert from "node:assert/strict";
import { chatBody, getJson, post, queuedModels } from "./support/client.ts";
import { withHomelabProxy } from "./support/proxy.ts";
import { waitFor } from "./support/wait_for.ts";

const ADMIN = "admin-key-0123456789abcdef";
const auth = { authorization: `Bearer ${ADMIN}` };

Deno.test("admin endpoints: off without admin_key, 401 without the key", async () => {
  await withHomelabProxy([{ id: "a" }], "", async ({ proxy }) => {
    const off = await fetch(`${proxy.url}/admin/running`, { headers: auth });
    assert.equal(off.status, 403);
    assert.equal((await off.json()).error.code, "admin_disabled");
  });
  await withHomelabProxy([{ id: "a" }], `admin_key: ${ADMIN}`, async ({ proxy }) => {
    const missing = await fetch(`${proxy.url}/admin/unload`, { method: "POST" });
    assert.equal(missing.status, 401);
    assert.equal((await missing.json()).error.code, "invalid_admin_key");
    const wrong = await fetch(`${proxy.url}/admin/running`, {
      headers: { authorization: "Bearer admin-key-wrong-000000000" },
    });
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
  });
});

Deno.test("admin: list running, load a model now, unload it", async () => {
  await withHomelabProxy(
    [{ id: "a" }, { id: "b" }],
    `admin_key: ${ADMIN}`,
    async ({ lab, proxy }) => {
      const load = await fetch(`${proxy.url}/admin/load`, {
        method: "POST",
        headers: { ...auth, "content-type": "application/json" },
        body: JSON.stringify({ model: "b" }),
      });
      assert.equal(load.status, 200, await load.clone().text());
      assert.equal((await load.json()).swapped, true);
      assert.deepEqual(await lab.running(), [lab.containerOf("b")]);

      const running = await (await fetch(`${proxy.url}/admin/running`, { headers: auth })).json();
      assert.equal(running.current_model, "b");
      assert.deepEqual(
        running.containers.map((c: { model: string; running: boolean }) => [c.model, c.running]),
        [["a", false], ["b", true]],
      );

      const unload = await fetch(`${proxy.url}/admin/unload`, { method: "POST", headers: auth });
      assert.deepEqual(await unload.json(), { unloaded: "b", unloaded_models: ["b"] });
      assert.deepEqual(await lab.running(), []);
      assert.equal((await getJson(`${proxy.url}/health`)).body.current_model, null);
      assert.equal((await post(proxy.url, chatBody("a"))).status, 200); // and serving goes on
    },
  );
});

Deno.test("admin: cancel a waiting request; its client gets 503 and the backend never sees it", async () => {
  await withHomelabProxy(
    [{ id: "a" }],
    `num_workers: 1\nadmin_key: ${ADMIN}`,
    async ({ lab, proxy }) => {
      const held = post(proxy.url, chatBody("a", { fake_hold: true }));
      await waitFor("worker busy", async () => (await lab.state()).inflight === 1);
      const victim = post(proxy.url, chatBody("a", { marker: "to-be-cancelled" }));
      await waitFor("queued", async () => (await queuedModels(proxy.url)).length === 1);
      const view = await (await fetch(`${proxy.url}/admin/queue`, { headers: auth })).json();
      const id = view.jobs[0].id;
      const cancel = await fetch(`${proxy.url}/admin/queue/${id}`, {
        method: "DELETE",
        headers: auth,
      });
      assert.deepEqual(await cancel.json(), { cancelled: id });
      const res = await victim;
      assert.equal(res.status, 503);
      assert.equal((await res.json()).error.code, "cancelled_by_admin");
      const again = await fetch(`${proxy.url}/admin/queue/${id}`, {
        method: "DELETE",
        headers: auth,
      });
      assert.equal(again.status, 404);
      await again.body?.cancel();
      await lab.release();
      assert.equal((await held).status, 200);
      assert.ok(!(await lab.state()).received.some((r) => r.body.includes("to-be-cancelled")));
    },
  );
});
