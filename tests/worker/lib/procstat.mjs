// CPU time and memory of the workerd processes serving the Worker, read from
// /proc (Linux only). Used by the cost tests and scripts/bench-backend.sh.
//
// CPU: the sum over every thread of the first field of
// /proc/PID/task/TID/schedstat (nanoseconds on a CPU), so one request's cost
// is measurable, not rounded to the 10 ms clock tick of /proc/PID/stat.
// It is the whole workerd process: the Worker plus the local D1, R2 and
// Durable Object implementations, so it is an upper bound on the Worker's
// own CPU.
import { readFileSync, readdirSync } from "node:fs";

/** Pids of the workerd processes below `root` (default: this process). */
export function workerdPids(root = process.pid) {
  return pidsBelow(root, (comm) => comm.includes("workerd"));
}

/**
 * Pids of the Node.js processes below `root`: under `stateful-ci dev`, the
 * emulator, whose HTTP proxy passes every request and body between the
 * client and workerd (Cloudflare's edge does that on Cloudflare's machines).
 */
export function nodePids(root) {
  return pidsBelow(root, (comm) => comm === "node");
}

/** Pids of the processes below `root` whose command name passes `test`. */
export function pidsBelow(root, test) {
  const children = new Map();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      children.set(Number(d), { ppid, comm: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")) });
    } catch {}
  }
  const out = [];
  const walk = (pid) => {
    for (const [c, info] of children) {
      if (info.ppid === pid) {
        if (test(info.comm)) out.push(c);
        walk(c);
      }
    }
  };
  walk(root);
  return out;
}

/** Nanoseconds of CPU the processes' threads have used (see above). */
export function cpuNs(pids) {
  return Object.values(threadCpuNs(pids)).reduce((a, b) => a + b, 0);
}

/**
 * Nanoseconds of CPU of each thread of the processes, keyed "pid/tid": which
 * thread is busy (workerd runs its isolates, the Worker's and the local
 * simulators', on one thread, so that thread's CPU bounds what it serves).
 * A thread that ends while it is read is left out.
 */
export function threadCpuNs(pids) {
  const out = {};
  for (const pid of pids) {
    let tasks = [];
    try {
      tasks = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const t of tasks) {
      try {
        out[`${pid}/${t}`] = Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, "utf8").split(" ")[0]);
      } catch {}
    }
  }
  return out;
}

/** Resident memory of the processes, in bytes (VmRSS). */
export function rssBytes(pids) {
  let kib = 0;
  for (const pid of pids) {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
      if (m) kib += Number(m[1]);
    } catch {}
  }
  return kib * 1024;
}

/**
 * Samples rssBytes(pids) every `everyMs` until the returned stop() is called;
 * stop() answers { peak, samples }.
 */
export function sampleRss(pids, everyMs = 20) {
  let peak = rssBytes(pids);
  let samples = 1;
  const timer = setInterval(() => {
    peak = Math.max(peak, rssBytes(pids));
    samples++;
  }, everyMs);
  return () => {
    clearInterval(timer);
    peak = Math.max(peak, rssBytes(pids));
    return { peak, samples: samples + 1 };
  };
}

/** Median and max of a list of numbers. */
export function stats(values) {
  const v = [...values].sort((a, b) => a - b);
  return { n: v.length, median: v.length ? v[Math.floor((v.length - 1) / 2)] : NaN, max: v.length ? v[v.length - 1] : NaN };
}
