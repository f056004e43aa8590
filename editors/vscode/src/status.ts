/** What the status bar says, derived from the server's `codecomplete/status` answer; pure, so unit-tested. */

export const STATUS_REQUEST = "codecomplete/status";

export type ServerState = "loading" | "ready" | "error" | "disabled";

/** The answer to `codecomplete/status`. */
export interface ServerStatus {
  model: string;
  backend: string;
  state: ServerState;
  latencies_ms: number[];
  last_latency_ms: number | null;
  error: string | null;
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

/** A model given as a path is shown by its file name; the full path stays in the tooltip. */
export function modelLabel(model: string): string {
  const parts = model.split(/[\\/]/);
  return parts[parts.length - 1] || model;
}

export function formatMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** A view for enabled completion; its tooltip ends with what a click does. */
function view(text: string, lines: string[], alarming = false): StatusView {
  return { text, tooltip: [...lines, "Click to disable inline completion."].join("\n"), alarming };
}

export function describe(reading: Reading, enabled: boolean): StatusView {
  if (!enabled || (reading.kind === "status" && reading.status.state === "disabled")) {
    return {
      text: `$(circle-slash) ${NAME}`,
      tooltip: `${NAME}: completion is off. Click to enable inline completion.`,
      alarming: false,
    };
  }
  if (reading.kind === "starting") {
    return view(`$(sync~spin) ${NAME}`, [`${NAME}: starting the server…`]);
  }
  if (reading.kind === "failed") {
    const hint = 'Check the codecomplete.serverPath setting, then run "codecomplete: Restart Server".';
    return view(`$(error) ${NAME}`, [`${NAME}: ${reading.message}`, hint], true);
  }
  const { status } = reading;
  const label = modelLabel(status.model);
  const about = `${NAME}: ${status.model} on ${status.backend}`;
  switch (status.state) {
    case "loading":
      return view(`$(sync~spin) ${label}`, [about, "Loading the model…"]);
    case "error":
      return view(`$(error) ${label}`, [about, `Error: ${status.error ?? "unknown error"}`], true);
    default: {
      const lines = [about, "Ready."];
      let text = `$(check) ${label}`;
      if (status.last_latency_ms !== null) {
        text += ` ${formatMs(status.last_latency_ms)}`;
        lines.push(`Last completion: ${formatMs(status.last_latency_ms)}`);
      }
      if (status.latencies_ms.length > 0) {
        lines.push(`Median of the last ${status.latencies_ms.length}: ${formatMs(median(status.latencies_ms))}`);
      }
      return view(text, lines);
    }
  }
}
