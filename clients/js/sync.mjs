// Copies the browser files from the server's static folder (their one source: Clarion serves
// them under /static/ with no build step) into this package, and checks that the version here
// is the server's. npm runs it before `npm pack` and on `npm install <this folder>`.
import { copyFileSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const source = join(root, 'src', 'clarion', 'static');
// An installed copy of the package (from a tarball) has its files already: nothing to do.
if (!existsSync(source)) process.exit(0);
const shipped = readdirSync(source).filter((name) => /\.(js|d\.ts)$/.test(name));
for (const name of shipped) copyFileSync(join(source, name), join(here, name));

const version = /^version\s*=\s*"([^"]+)"/m.exec(readFileSync(join(root, 'pyproject.toml'), 'utf8'))?.[1];
const pkg = JSON.parse(readFileSync(join(here, 'package.json'), 'utf8'));
if (pkg.version !== version) {
  console.error(`clients/js/package.json has version ${pkg.version}, the server ${version}: make them equal`);
  process.exit(1);
}
console.log(`@clarion/client ${version}: ${shipped.join(', ')}`);
