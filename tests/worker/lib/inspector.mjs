// The memory of one Worker's isolate, read through workerd's V8 inspector
// (miniflare's `inspectorPort`), not the whole process: what the Worker
// itself holds, which is what the 128 MB isolate limit applies to.
//
//   wasm:    bytes of every WebAssembly.Memory in the isolate (found with
//            Runtime.queryObjects on WebAssembly.Memory.prototype). A Rust
//            Worker that copies a body into wasm grows it, and wasm memory
//            never shrinks, so a buffered upload shows for good.
//   heap:    V8 heap in use (Runtime.getHeapUsage usedSize).
//   backing: ArrayBuffer backing stores outside the heap (getHeapUsage
//            backingStorageSize): a body read into an ArrayBuffer in JS.
//
// `isolate = wasm + heap + backing`. Only for tests on 127.0.0.1.
import { createServer } from "node:net";

/** A free TCP port on 127.0.0.1 (for miniflare's inspectorPort). */
export function freePort() {
  return new Promise((ok, ko) => {
    const s = createServer();
    s.once("error", ko);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

/**
 * Connects to the inspector of `target` (the Worker is `core:user:<name>`,
 * `core:user:` when unnamed). `poke()` is called if the isolate has no
 * execution context yet (e.g. fetch /v1/health).
 */
export async function attach(port, target = "core:user:", poke = async () => {}) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/${target}`);
  await new Promise((ok, ko) => {
    ws.onopen = ok;
    ws.onerror = () => ko(new Error(`cannot attach to the inspector of ${target} on port ${port}`));
  });
  let next = 0;
  const pending = new Map();
  const contexts = [];
  ws.onmessage = (m) => {
    const d = JSON.parse(m.data);
    if (d.method === "Runtime.executionContextCreated") contexts.push(d.params.context.id);
    if (d.id && pending.has(d.id)) {
      const { ok, ko, method } = pending.get(d.id);
      pending.delete(d.id);
      if (d.error) ko(new Error(`${method}: ${d.error.message}`));
      else ok(d.result);
    }
  };
  const cdp = (method, params = {}) =>
    new Promise((ok, ko) => {
      const id = ++next;
      pending.set(id, { ok, ko, method });
      ws.send(JSON.stringify({ id, method, params }));
    });
  await cdp("Runtime.enable");
  for (let i = 0; i < 50 && contexts.length === 0; i++) {
    if (i === 0) await poke();
    await new Promise((r) => setTimeout(r, 20));
  }
  if (contexts.length === 0) throw new Error(`the isolate ${target} has no execution context`);
  const proto = await cdp("Runtime.evaluate", { expression: "WebAssembly.Memory.prototype", contextId: contexts[contexts.length - 1] });

  /** { wasm, heap, backing, isolate } in bytes, now. */
  async function memory() {
    const mems = await cdp("Runtime.queryObjects", { prototypeObjectId: proto.result.objectId });
    const sizes = await cdp("Runtime.callFunctionOn", {
      objectId: mems.objects.objectId,
      functionDeclaration: "function() { return this.map((m) => m.buffer.byteLength); }",
      returnByValue: true,
    });
    await cdp("Runtime.releaseObject", { objectId: mems.objects.objectId });
    const wasm = sizes.result.value.reduce((a, b) => a + b, 0);
    const h = await cdp("Runtime.getHeapUsage");
    const backing = h.backingStorageSize ?? 0;
    return { wasm, heap: h.usedSize, backing, isolate: wasm + h.usedSize + backing };
  }

  /**
   * Samples memory() until the returned stop() is called; stop() answers
   * the peak of each figure and the number of samples.
   */
  function sample(everyMs = 25) {
    const peak = { wasm: 0, heap: 0, backing: 0, isolate: 0 };
    let samples = 0;
    let running = true;
    const take = async () => {
      const m = await memory();
      for (const k of Object.keys(peak)) peak[k] = Math.max(peak[k], m[k]);
      samples++;
    };
    const loop = (async () => {
      while (running) {
        await take();
        await new Promise((r) => setTimeout(r, everyMs));
      }
    })();
    return async () => {
      running = false;
      await loop;
      await take();
      return { ...peak, samples };
    };
  }

  return { memory, sample, close: () => ws.close() };
}

export const mib = (b) => (b / (1024 * 1024)).toFixed(1);
