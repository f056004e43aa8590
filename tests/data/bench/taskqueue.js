'use strict';

/**
 * A small in-process task queue with priorities, retries and concurrency limits.
 *
 * Tasks are plain async functions. The queue runs at most `concurrency` of them at a time,
 * retries failures with exponential backoff, and emits events so callers can observe progress.
 */

const { EventEmitter } = require('events');

const DEFAULT_OPTIONS = {
  concurrency: 2,
  retries: 3,
  backoffMs: 100,
  maxBackoffMs: 5000,
  timeoutMs: 30000,
};

class TimeoutError extends Error {
  constructor(name, ms) {
    super(`task ${name} timed out after ${ms} ms`);
    this.name = 'TimeoutError';
    this.taskName = name;
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function withTimeout(promise, ms, name) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(name, ms)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function backoffDelay(attempt, base, max) {
  const exp = base * 2 ** (attempt - 1);
  const jitter = Math.floor(Math.random() * base);
  return Math.min(max, exp + jitter);
}

class PriorityList {
  constructor() {
    this.items = [];
  }

  get size() {
    return this.items.length;
  }

  push(item) {
    let lo = 0;
    let hi = this.items.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.items[mid].priority >= item.priority) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    this.items.splice(lo, 0, item);
  }

  shift() {
    return this.items.shift();
  }

  remove(id) {
    const index = this.items.findIndex((item) => item.id === id);
    if (index === -1) {
      return false;
    }
    this.items.splice(index, 1);
    return true;
  }
}

class TaskQueue extends EventEmitter {
  constructor(options = {}) {
    super();
    this.options = { ...DEFAULT_OPTIONS, ...options };
    if (!Number.isInteger(this.options.concurrency) || this.options.concurrency < 1) {
      throw new RangeError('concurrency must be a positive integer');
    }
    this.pending = new PriorityList();
    this.running = new Map();
    this.nextId = 1;
    this.paused = false;
    this.stats = { started: 0, succeeded: 0, failed: 0, retried: 0 };
  }

  add(name, fn, { priority = 0, retries = this.options.retries } = {}) {
    if (typeof fn !== 'function') {
      throw new TypeError(`task ${name} must be a function`);
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.push({ id, name, fn, priority, retries, attempt: 0, resolve, reject });
      this.emit('added', { id, name, priority });
      this._drain();
    });
  }

  cancel(id) {
    const removed = this.pending.remove(id);
    if (removed) {
      this.emit('cancelled', { id });
    }
    return removed;
  }

  pause() {
    this.paused = true;
    this.emit('paused');
  }

  resume() {
    this.paused = false;
    this.emit('resumed');
    this._drain();
  }

  get idle() {
    return this.pending.size === 0 && this.running.size === 0;
  }

  onIdle() {
    if (this.idle) {
      return Promise.resolve();
    }
    return new Promise((resolve) => this.once('idle', resolve));
  }

  _drain() {
    while (!this.paused && this.running.size < this.options.concurrency && this.pending.size > 0) {
      const task = this.pending.shift();
      this._run(task);
    }
    if (this.idle) {
      this.emit('idle');
    }
  }

  async _run(task) {
    task.attempt += 1;
    this.running.set(task.id, task);
    this.stats.started += 1;
    this.emit('started', { id: task.id, name: task.name, attempt: task.attempt });
    try {
      const result = await withTimeout(Promise.resolve().then(task.fn), this.options.timeoutMs, task.name);
      this.stats.succeeded += 1;
      this.emit('succeeded', { id: task.id, name: task.name, result });
      task.resolve(result);
    } catch (error) {
      if (task.attempt <= task.retries) {
        this.stats.retried += 1;
        const delay = backoffDelay(task.attempt, this.options.backoffMs, this.options.maxBackoffMs);
        this.emit('retrying', { id: task.id, name: task.name, attempt: task.attempt, delay, error });
        this.running.delete(task.id);
        await sleep(delay);
        this.pending.push(task);
        this._drain();
        return;
      }
      this.stats.failed += 1;
      this.emit('failed', { id: task.id, name: task.name, error });
      task.reject(error);
    }
    this.running.delete(task.id);
    this._drain();
  }
}

function summarize(queue) {
  const { started, succeeded, failed, retried } = queue.stats;
  const total = succeeded + failed;
  const rate = total === 0 ? 0 : succeeded / total;
  return {
    started,
    succeeded,
    failed,
    retried,
    successRate: Math.round(rate * 1000) / 10,
    pending: queue.pending.size,
    running: queue.running.size,
  };
}

function formatSummary(summary) {
  const lines = [
    `tasks started:   ${summary.started}`,
    `succeeded:       ${summary.succeeded}`,
    `failed:          ${summary.failed}`,
    `retried:         ${summary.retried}`,
    `success rate:    ${summary.successRate}%`,
  ];
  if (summary.pending > 0 || summary.running > 0) {
    lines.push(`still queued:    ${summary.pending} pending, ${summary.running} running`);
  }
  return lines.join('\n');
}

async function fetchAll(urls, { fetchImpl = globalThis.fetch, concurrency = 4 } = {}) {
  const queue = new TaskQueue({ concurrency, retries: 2, backoffMs: 50 });
  const results = new Map();
  queue.on('retrying', ({ name, attempt, delay }) => {
    console.warn(`retrying ${name} (attempt ${attempt}) in ${delay} ms`);
  });
  const jobs = urls.map((url, index) =>
    queue
      .add(url, async () => {
        const response = await fetchImpl(url);
        if (!response.ok) {
          throw new Error(`${url}: HTTP ${response.status}`);
        }
        return response.text();
      }, { priority: urls.length - index })
      .then((body) => results.set(url, { ok: true, length: body.length }))
      .catch((error) => results.set(url, { ok: false, error: error.message })),
  );
  await Promise.all(jobs);
  await queue.onIdle();
  return { results, summary: summarize(queue) };
}

function parseArgs(argv) {
  const args = { concurrency: 4, urls: [] };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === '--concurrency' || arg === '-c') {
      args.concurrency = Number.parseInt(argv[i + 1], 10);
      i += 1;
    } else if (arg.startsWith('--')) {
      throw new Error(`unknown option ${arg}`);
    } else {
      args.urls.push(arg);
    }
  }
  if (Number.isNaN(args.concurrency) || args.concurrency < 1) {
    throw new Error('--concurrency needs a positive number');
  }
  return args;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.urls.length === 0) {
    console.error('usage: taskqueue.js [--concurrency N] URL...');
    process.exitCode = 2;
    return;
  }
  const { results, summary } = await fetchAll(args.urls, { concurrency: args.concurrency });
  for (const [url, outcome] of results) {
    const detail = outcome.ok ? `${outcome.length} bytes` : outcome.error;
    console.log(`${outcome.ok ? 'ok  ' : 'FAIL'} ${url} ${detail}`);
  }
  console.log(formatSummary(summary));
}

module.exports = { TaskQueue, PriorityList, TimeoutError, backoffDelay, summarize, formatSummary, fetchAll };

if (require.main === module) {
  main().catch((error) => {
    console.error(error.message);
    process.exitCode = 1;
  });
}
