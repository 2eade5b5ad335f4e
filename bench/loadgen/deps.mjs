// Resolves the bench's Node dependencies from bench/.work/node (installed by bench/run.py with
// `npm ci --prefix bench/.work/node`), so nothing is installed inside the source tree.
// ESM ignores NODE_PATH, hence createRequire anchored in that folder.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = process.env.BENCH_NODE_DIR || path.resolve(here, '..', '.work', 'node');
export const requireDep = createRequire(path.join(root, 'package.json'));
