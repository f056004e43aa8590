/**
 * What the status bar says, derived from the server's status object (the answer to `codecomplete/status`, and
 * the params of the `codecomplete/statusChanged` notification); pure, so unit-tested.
 */

export const STATUS_REQUEST = "codecomplete/status";
/** Server → client: the status changed. Its params are the status object; none means "ask for it". */
export const STATUS_CHANGED = "codecomplete/statusChanged";

/** `idle`: the server has not begun loading the model yet. Unknown states are shown as they come. */
export type ServerState = "idle" | "loading" | "ready" | "error" | "disabled";

/**
 * The status object. Only `state` is always there; the server fills in the model once it is known, and
 * `notice` is a sentence about why a request produced nothing (the time budget, a model still loading),
 * naming the setting to change.
 */
export interface ServerStatus {
  state: ServerState | string;
  error?: string | null;
  /** The model's path (or catalog name before it is resolved). */
  model?: string | null;
  /** The model's own name, from its metadata. */
  model_name?: string | null;
  family?: string | null;
  backend?: string | null;
  latencies_ms?: number[] | null;
  last_latency_ms?: number | null;
  notice?: string | null;
}

export interface StatusView {
  text: string;
  tooltip: string;
  /** Drawn on the error background: the user has to act (fix the model path, the server path, …). */
  alarming: boolean;
}

/** Where the server stands as seen from the extension. */
export type Reading =
  | { kind: "starting" }
  | { kind: "failed"; message: string }
  | { kind: "status"; status: ServerStatus };

const NAME = "codecomplete";
/** Longest model name shown on the item; the tooltip has it in full. */
export const MAX_LABEL = 32;

/** A model given as a path is shown by its file name; the full path stays in the tooltip. */
export function modelLabel(model: string): string {
  const parts = model.split(/[\\/]/);
  return parts[parts.length - 1] || model;
}

function shorten(text: string, max = MAX_LABEL): string {
  return text.length > max ? `${text.slice(0, max - 1).trimEnd()}…` : text;
}

/** The model as the item names it: its own name, else its file name, else the extension's name. */
export function displayName(status: ServerStatus): string {
  const name = status.model_name?.trim() || (status.model ? modelLabel(status.model) : "");
  return name ? shorten(name) : NAME;
}

export function formatMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** The state in words, as the item shows it. */
export function stateWord(state: string): string {
  return state === "idle" ? "starting" : state;
}

/** Whether the model is on its way (the first completions are answered empty until it is ready). */
export function isLoading(reading: Reading): boolean {
  return reading.kind === "starting" || (reading.kind === "status" && ["idle", "loading"].includes(reading.status.state));
}

export function isReady(reading: Reading): boolean {
  return reading.kind === "status" && reading.status.state === "ready";
}

const CLICK_TO_DISABLE = "Click to disable inline completion.";
const CLICK_TO_ENABLE = "Click to enable inline completion.";

/** Tooltip lines about the model and the last completions. */
function details(status: ServerStatus): string[] {
  const lines: string[] = [];
  if (status.model_name || status.model) {
    const where = status.model && status.model !== status.model_name ? ` (${status.model})` : "";
    lines.push(`Model: ${status.model_name || status.model}${where}`);
  }
  if (status.family && status.family !== "none") {
    lines.push(`Family: ${status.family}`);
  }
  if (status.backend) {
    lines.push(`Backend: ${status.backend}`);
  }
  if (typeof status.last_latency_ms === "number") {
    let line = `Last completion: ${formatMs(status.last_latency_ms)}`;
    const recent = status.latencies_ms ?? [];
    if (recent.length > 1) {
      line += `; median of the last ${recent.length}: ${formatMs(median(recent))}`;
    }
    lines.push(line);
  }
  if (status.notice) {
    lines.push(status.notice);
  }
  if (status.error) {
    lines.push(`Error: ${status.error}`);
  }
  return lines;
}

export function describe(reading: Reading, enabled: boolean): StatusView {
  if (reading.kind === "failed") {
    const hint = 'Check the codecomplete.serverPath setting, then run "codecomplete: Restart Server".';
    return {
      text: `$(error) ${NAME} · error`,
      tooltip: [`${NAME}: ${reading.message}`, hint, enabled ? CLICK_TO_DISABLE : CLICK_TO_ENABLE].join("\n"),
      alarming: true,
    };
  }
  const status: ServerStatus = reading.kind === "status" ? reading.status : { state: "idle" };
  const name = displayName(status);
  if (!enabled || status.state === "disabled") {
    return {
      text: `$(circle-slash) ${name} · disabled`,
      tooltip: [`${NAME}: completion is off.`, ...details(status), CLICK_TO_ENABLE].join("\n"),
      alarming: false,
    };
  }
  const word = stateWord(status.state);
  const headline = `${NAME}: ${word}${status.state === "loading" ? " the model…" : ""}`;
  const tooltip = [headline, ...details(status), CLICK_TO_DISABLE].join("\n");
  switch (status.state) {
    case "idle":
    case "loading":
      return { text: `$(sync~spin) ${name} · ${word}`, tooltip, alarming: false };
    case "error":
      return { text: `$(error) ${name} · error`, tooltip, alarming: true };
    case "ready": {
      const latency = typeof status.last_latency_ms === "number" ? ` · ${formatMs(status.last_latency_ms)}` : "";
      return { text: `$(check) ${name} · ready${latency}`, tooltip, alarming: false };
    }
    default:
      return { text: `$(question) ${name} · ${word}`, tooltip, alarming: false };
  }
}
