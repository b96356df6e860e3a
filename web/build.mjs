// Bundles the client library and the demo page with esbuild (pinned in package.json), after a
// type check. Outputs are committed: control builds the demo page into its binary
// (include_str!), so `cargo build` needs no Node; `scripts/test-web` rebuilds and fails when a
// committed output differs from what the sources give.
import { execFileSync } from 'node:child_process';
import * as esbuild from 'esbuild';

execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '--noEmit', '-p', '.'], { stdio: 'inherit' });
const common = { bundle: true, format: 'esm', target: 'es2022', legalComments: 'none', logLevel: 'warning' };
await esbuild.build({ ...common, entryPoints: ['client/src/index.ts'], outfile: 'client/dist/danmu-client.js' });
await esbuild.build({ ...common, entryPoints: ['demo/src/demo.ts'], outfile: 'demo/demo.js' });
