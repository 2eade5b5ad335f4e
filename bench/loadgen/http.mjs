// HTTP side of the load generator (Node.js built-ins only), driven by bench/run.py.
//
//   node http.mjs post --url URL --key clk_... --concurrency C --seconds S --batch B
//     C keep-alive loops, each POSTing {"users":[B users],"title":"x"} as soon as the last answer
//     arrived, for S seconds; prints one JSON line: requests, 201s, statuses, latency percentiles.
//     With --many M: POST /v1/notifications/batch with M notifications of one user each; the
//     notifications counted are the items answered 201.
//   node http.mjs personal --url URL --key clk_... --rate R --seconds S --users N --burst B
//       [--concurrency C]
//     open loop: R POSTs a second on a fixed schedule, each {"users":["bench-<random i < N>"],
//     "data":{"t": <send time, ms>, "b": B}}, at most C in flight (keep-alive); prints one JSON line
//     with the 201s, statuses, the 201 latency, how late requests left against the schedule and
//     the publisher's own CPU: `saturated` says the publisher, not the server, fell behind.
//   node http.mjs hold --url BASE --kind sse|poll --tokens FILE --n N
//     opens N SSE streams (GET /v1/sse) or N pending long-polls (GET /v1/poll?since=..&timeout=30,
//     re-issued when answered), prints {"ev":"connected",...}, holds them until stdin closes or
//     a line arrives, then exits.
import fs from "node:fs";
import http from "node:http";
import { monitorEventLoopDelay } from "node:perf_hooks";
import readline from "node:readline";
import { calibrate, nowMs } from "./clock.mjs";

const args = Object.fromEntries(
  process.argv
    .slice(3)
    .reduce((acc, v, i, a) => (v.startsWith("--") ? [...acc, [v.slice(2), a[i + 1]]] : acc), []),
);
const mode = process.argv[2];
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");

function pct(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function post() {
  const url = new URL(args.url);
  const conc = Number(args.concurrency || 16);
  const seconds = Number(args.seconds || 5);
  const batch = Number(args.batch || 1);
  const many = Number(args.many || 0);
  const agent = new http.Agent({ keepAlive: true, maxSockets: conc });
  const statuses = {};
  const lat = [];
  let next = 0;
  let ok = 0;
  let created = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  function one() {
    let body;
    if (many) {
      const items = [];
      for (let i = 0; i < many; i++) items.push({ users: [`u${next++ % 1000000}`], title: "x" });
      body = JSON.stringify({ notifications: items });
    } else {
      const users = [];
      for (let i = 0; i < batch; i++) users.push(`u${next++ % 1000000}`);
      body = JSON.stringify({ users, title: "x" });
    }
    return new Promise((resolve) => {
      const s = performance.now();
      const req = http.request(
        {
          host: url.hostname,
          port: url.port,
          path: many ? "/v1/notifications/batch" : "/v1/notifications",
          method: "POST",
          agent,
          headers: {
            "content-type": "application/json",
            "content-length": Buffer.byteLength(body),
            authorization: `Bearer ${args.key}`,
          },
        },
        (res) => {
          const chunks = [];
          res.on("data", (c) => many && chunks.push(c));
          res.on("end", () => {
            statuses[res.statusCode] = (statuses[res.statusCode] || 0) + 1;
            if (res.statusCode === 201 || (many && res.statusCode === 200)) {
              ok++;
              lat.push(performance.now() - s);
              if (many) {
                const results = JSON.parse(Buffer.concat(chunks).toString()).results;
                created += results.filter((r) => r.status === 201).length;
              } else {
                created++;
              }
            }
            resolve();
          });
        },
      );
      req.on("error", (e) => {
        statuses[e.code || "error"] = (statuses[e.code || "error"] || 0) + 1;
        resolve();
      });
      req.end(body);
    });
  }
  async function loop() {
    while (performance.now() < end) await one();
  }
  await Promise.all(Array.from({ length: conc }, loop));
  const wall = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  out({
    ev: "done",
    seconds: wall,
    ok,
    batch,
    concurrency: conc,
    statuses,
    many,
    perSecond: created / wall,
    recipientsPerSecond: many ? created / wall : (ok * batch) / wall,
    latencyMs: { p50: pct(lat, 50), p99: pct(lat, 99), p999: pct(lat, 99.9), max: lat.at(-1) ?? null },
  });
  agent.destroy();
}

async function personal() {
  const url = new URL(args.url);
  const rate = Number(args.rate || 1000);
  const seconds = Number(args.seconds || 10);
  const users = Number(args.users);
  const burst = Number(args.burst || 1);
  const conc = Number(args.concurrency || 64);
  const agent = new http.Agent({ keepAlive: true, maxSockets: conc });
  const statuses = {};
  const lat = [];
  const lags = [];
  let inflight = 0;
  let maxInflight = 0;
  let ok = 0;
  const loop = monitorEventLoopDelay({ resolution: 5 });
  loop.enable();
  calibrate();
  const cpu0 = process.cpuUsage();
  const total = Math.round(rate * seconds);
  const t0 = nowMs() + 20;
  const pending = [];
  function one(i) {
    const user = `bench-${Math.floor(Math.random() * users)}`;
    const sent = nowMs();
    lags.push(sent - (t0 + (i * 1000) / rate));
    const body = JSON.stringify({ users: [user], title: "x", data: { t: sent, b: burst, i } });
    inflight++;
    maxInflight = Math.max(maxInflight, inflight);
    return new Promise((resolve) => {
      const req = http.request(
        {
          host: url.hostname,
          port: url.port,
          path: "/v1/notifications",
          method: "POST",
          agent,
          headers: {
            "content-type": "application/json",
            "content-length": Buffer.byteLength(body),
            authorization: `Bearer ${args.key}`,
          },
        },
        (res) => {
          res.resume();
          res.on("end", () => {
            inflight--;
            statuses[res.statusCode] = (statuses[res.statusCode] || 0) + 1;
            if (res.statusCode === 201) {
              ok++;
              lat.push(nowMs() - sent);
            }
            resolve();
          });
        },
      );
      req.on("error", (e) => {
        inflight--;
        statuses[e.code || "error"] = (statuses[e.code || "error"] || 0) + 1;
        resolve();
      });
      req.end(body);
    });
  }
  // One timer per scheduled request would be late by the timer's own granularity; instead wake up
  // every millisecond and send everything that is due.
  let i = 0;
  await new Promise((done) => {
    const tick = () => {
      const now = nowMs();
      while (i < total && t0 + (i * 1000) / rate <= now) pending.push(one(i++));
      if (i < total) setTimeout(tick, 1);
      else done();
    };
    setTimeout(tick, 1);
  });
  await Promise.all(pending);
  const wall = (nowMs() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const cpuCores = (cpu.user + cpu.system) / 1e6 / wall;
  lat.sort((a, b) => a - b);
  lags.sort((a, b) => a - b);
  const lagP99 = pct(lags, 99);
  out({
    ev: "done",
    sent: total,
    ok,
    statuses,
    seconds: wall,
    rate,
    perSecond: ok / wall,
    maxInflight,
    latencyMs: { p50: pct(lat, 50), p99: pct(lat, 99), p999: pct(lat, 99.9), max: lat.at(-1) ?? null },
    lagMs: { p50: pct(lags, 50), p99: lagP99, max: lags.at(-1) ?? null },
    cpu: cpuCores,
    loopDelayMs: { p99: loop.percentile(99) / 1e6, max: loop.max / 1e6 },
    // Behind its own schedule while not waiting on the server (few requests in flight), or busy
    // a whole core: the publisher, not the server, limited this run.
    saturated: cpuCores > 0.85 || (lagP99 > 10 && maxInflight < conc),
  });
  agent.destroy();
}

async function hold() {
  const base = new URL(args.url);
  const kind = args.kind;
  const n = Number(args.n);
  const tokens = fs.readFileSync(args.tokens, "utf8").split("\n");
  const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
  const reqs = [];
  let ok = 0;
  let failed = 0;
  let closing = false;
  const errors = {};
  function get(path, token) {
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          host: base.hostname,
          port: base.port,
          path,
          agent,
          headers: { authorization: `Bearer ${token}`, accept: "*/*" },
        },
        (res) => resolve({ req, res }),
      );
      req.on("error", reject);
      req.end();
      reqs.push(req);
    });
  }
  async function openOne(i) {
    const token = tokens[i];
    if (kind === "sse") {
      const { res } = await get("/v1/sse", token);
      if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
      res.on("data", () => {});
      return;
    }
    const first = await get("/v1/poll", token);
    let body = "";
    for await (const chunk of first.res) body += chunk;
    if (first.res.statusCode !== 200) throw new Error(`status ${first.res.statusCode}`);
    let cursor = JSON.parse(body).cursor;
    const again = async () => {
      while (!closing) {
        try {
          const { res } = await get(`/v1/poll?since=${encodeURIComponent(cursor)}&timeout=30`, token);
          let b = "";
          for await (const chunk of res) b += chunk;
          if (res.statusCode === 200) cursor = JSON.parse(b).cursor;
        } catch {
          if (!closing) await new Promise((r) => setTimeout(r, 1000));
        }
      }
    };
    again();
  }
  let idx = 0;
  const conc = Number(args.concurrency || 100);
  async function worker() {
    while (idx < n) {
      const i = idx++;
      try {
        await openOne(i);
        ok++;
      } catch (e) {
        failed++;
        errors[e.message] = (errors[e.message] || 0) + 1;
      }
    }
  }
  const t0 = performance.now();
  await Promise.all(Array.from({ length: conc }, worker));
  out({ ev: "connected", ok, failed, errors, seconds: (performance.now() - t0) / 1000 });
  const rl = readline.createInterface({ input: process.stdin });
  const stop = () => {
    closing = true;
    for (const r of reqs) r.destroy();
    agent.destroy();
    out({ ev: "closed" });
    process.exit(0);
  };
  rl.on("line", stop);
  rl.on("close", stop);
}

if (mode === "post") await post();
else if (mode === "personal") await personal();
else if (mode === "hold") await hold();
else {
  console.error("usage: http.mjs post|personal|hold ...");
  process.exit(2);
}
