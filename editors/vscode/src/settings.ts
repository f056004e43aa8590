/**
 * VS Code's `codecomplete.*` settings → the settings object the language server reads.
 *
 * Only settings the user actually set are sent; the rest go as `null`, which the server reads as "leave as is",
 * so values from codecomplete's own config file (shared with the CLI) are not masked by VS Code's defaults.
 */
import * as vscode from "vscode";

export const SECTION = "codecomplete";

/** Keys the server understands; `serverPath` is the extension's own and the server rejects unknown keys. */
export const SERVER_KEYS = [
  "model",
  "format",
  "maxTokens",
  "tokenBudget",
  "timeBudgetMs",
  "nGpuLayers",
  "languages",
  "enabled",
] as const;

export type ServerKey = (typeof SERVER_KEYS)[number];

export interface ServerSettings {
  model: string | null;
  format: "auto" | "psm" | "spm" | "prefix" | null;
  maxTokens: number | null;
  tokenBudget: number | null;
  timeBudgetMs: number | null;
  nGpuLayers: number | null;
  languages: Record<string, boolean> | null;
  enabled: boolean | null;
}

function configuration(): vscode.WorkspaceConfiguration {
  return vscode.workspace.getConfiguration(SECTION);
}

function isUserSet(config: vscode.WorkspaceConfiguration, key: string): boolean {
  const where = config.inspect(key);
  return [where?.globalValue, where?.workspaceValue, where?.workspaceFolderValue].some((v) => v !== undefined);
}

/** The server's settings: user-set values, `null` for everything left at its default. */
export function serverSettings(config: vscode.WorkspaceConfiguration = configuration()): ServerSettings {
  const out: Record<string, unknown> = {};
  for (const key of SERVER_KEYS) {
    out[key] = isUserSet(config, key) ? (config.get(key) ?? null) : null;
  }
  return out as unknown as ServerSettings;
}

/** The `workspace/didChangeConfiguration` payload in the shape the server expects. */
export function configurationChangeParams(settings: ServerSettings = serverSettings()): {
  settings: { codecomplete: ServerSettings };
} {
  return { settings: { codecomplete: settings } };
}

export function serverPath(config: vscode.WorkspaceConfiguration = configuration()): string {
  return config.get<string>("serverPath")?.trim() || "codecomplete";
}

export function isEnabled(config: vscode.WorkspaceConfiguration = configuration()): boolean {
  return config.get<boolean>("enabled", true);
}

/**
 * Flip `codecomplete.enabled` where it takes effect: in the workspace settings if the workspace overrides it
 * (a global write would be shadowed there), else in the user settings. Returns the new value.
 */
export async function toggleEnabled(): Promise<boolean> {
  const config = configuration();
  const next = !isEnabled(config);
  const target =
    config.inspect<boolean>("enabled")?.workspaceValue !== undefined
      ? vscode.ConfigurationTarget.Workspace
      : vscode.ConfigurationTarget.Global;
  await config.update("enabled", next, target);
  return next;
}
