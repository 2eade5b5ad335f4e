// clarion.js reads an SSE `id:` as the connection's cursor (docs/protocol.md "Server-Sent
// Events"): its split form, unsorted and with spaces, is a cursor like any other.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { decodeCursor, encodeCursor } from '../../src/clarion/static/clarion.js';

test('an SSE id of a head and a tail decodes to the position', () => {
  const position = decodeCursor('eyJ1c2VyOmFsaWNlIjoxMiwgImFsbCI6NTd9');
  assert.deepEqual(position, new Map([['user:alice', 12], ['all', 57]]));
});

test('a one-stream SSE id (an empty head) decodes too', () => {
  assert.deepEqual(decodeCursor('eyAgImFsbCI6M30'), new Map([['all', 3]]));
});

test('the sorted form of earlier servers still decodes', () => {
  const sorted = encodeCursor({ all: 57, 'user:alice': 12 });
  assert.deepEqual(decodeCursor(sorted), new Map([['all', 57], ['user:alice', 12]]));
});
