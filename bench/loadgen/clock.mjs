// Wall-clock milliseconds with sub-millisecond resolution, comparable across processes on one
// machine: the offset between Date.now() and the monotonic clock is taken at the instant
// Date.now() ticks, so it is exact to a few microseconds rather than to one millisecond.
import { performance } from 'node:perf_hooks';

let offset = 0;

export function calibrate() {
  const start = Date.now();
  let tick = start;
  while (tick === start) tick = Date.now();
  offset = tick - performance.now();
  return offset;
}

export function nowMs() {
  return offset + performance.now();
}

calibrate();
