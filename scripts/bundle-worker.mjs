// Turns wasm-bindgen's `--target module` output in DIR into the two-file
// Worker bundle the CLI uploads: index.js (entry module) and index_bg.wasm.
// - inlines wasm-bindgen's JS snippets (so there is one JS module);
// - imports the wasm as a compiled module (`import m from "./index_bg.wasm"`,
//   which workerd and the upload API support) instead of a source-phase import;
// - adds the default export workerd calls (fetch and scheduled handlers);
//   the Durable Object class stays a named export.
// Deterministic: the same input gives the same bytes.
import { readFileSync, writeFileSync, rmSync, existsSync } from "node:fs";
import { join } from "node:path";

const dir = process.argv[2];
if (!dir) {
  console.error("usage: node scripts/bundle-worker.mjs DIR");
  process.exit(2);
}
const entry = join(dir, "index.js");
let js = readFileSync(entry, "utf8");

js = js.replace(/^import \{([^}]*)\} from '(\.\/snippets\/[^']+)';\n/gm, (_, names, path) => {
  const snippet = readFileSync(join(dir, path), "utf8").replace(/^export /gm, "");
  for (const n of names.split(",").map((s) => s.trim()).filter(Boolean)) {
    if (!new RegExp(`\\b(const|let|var|function|class) ${n}\\b`).test(snippet)) {
      throw new Error(`snippet ${path} does not define ${n}`);
    }
  }
  return `// inlined from ${path.replace(/worker-[0-9a-f]+/, "worker")}\n${snippet.trimEnd()}\n`;
});

const before = js;
js = js.replace(
  /^import source wasmModule from "\.\/index_bg\.wasm";$/m,
  'import wasmModule from "./index_bg.wasm";',
);
if (js === before) throw new Error("wasm-bindgen output changed: no source-phase import of index_bg.wasm found");
if (/from '\.\/snippets\//.test(js)) throw new Error("a snippet import was left");
for (const name of ["fetch", "scheduled"]) {
  if (!new RegExp(`^export function ${name}\\(`, "m").test(js)) throw new Error(`no ${name} export`);
}
js += "\nexport default { fetch, scheduled };\n";
writeFileSync(entry, js);
if (existsSync(join(dir, "snippets"))) rmSync(join(dir, "snippets"), { recursive: true });
