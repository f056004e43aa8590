/**
 * VS Code's `codecomplete.*` settings → the settings object the language server reads.
 *
 * Only settings the user actually set are sent; the rest go as `null`, which the server reads as "leave as is",
 * so values from codecomplete's own config file (shared with the CLI) are not masked by VS Code's defaults.
 */
import { homedir } from "node:os";
import { join } from "node:path";
import * as vscode from "vscode";

export const SECTION = "codecomplete";

/**
 * Keys the server understands (its `Settings` fields, camelCase; tests/test_settings_sources.py keeps this list,
 * package.json and the server in step); `serverPath` is the extension's own and the server rejects unknown keys.
 */
export const SERVER_KEYS = [
  "model",
  "format",
  "maxTokens",
  "maxTokensSingleLine",
  "tokenBudget",
  "timeBudgetMs",
  "nCtx",
  "nThreads",
  "nGpuLayers",
  "mainGpu",
  "flashAttn",
  "kvSlots",
  "postprocess",
  "postprocessSkip",
  "reuse",
  "kvShift",
  "prefetch",
  "enabled",
  "backend",
  "remoteUrl",
  "fim",
  "languages",
  "repoContext",
  "repoContextBudget",
  "repoInclude",
  "repoExclude",
] as const;

export type ServerKey = (typeof SERVER_KEYS)[number];

/** What is sent for each key: the user's value, or `null` where the user left the default. */
export type ServerSettings = Record<ServerKey, unknown>;

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

/** The executable to start; a leading `~/` is the user's home directory (spawn() would not expand it). */
export function serverPath(config: vscode.WorkspaceConfiguration = configuration()): string {
  const path = config.get<string>("serverPath")?.trim() || "codecomplete";
  return /^~[\\/]/.test(path) ? join(homedir(), path.slice(2)) : path;
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
