/** Owns the language client: spawns `<serverPath> lsp` over stdio and replaces the client on restart. */
import { constants } from "node:fs";
import { access, stat } from "node:fs/promises";
import { delimiter, join } from "node:path";
import * as vscode from "vscode";
import {
  LanguageClient,
  type LanguageClientOptions,
  type Middleware,
  type ServerOptions,
  State,
} from "vscode-languageclient/node";
import { configurationChangeParams, SECTION, serverPath, serverSettings } from "./settings";
import { type Reading, STATUS_CHANGED, STATUS_REQUEST, type ServerStatus } from "./status";

export const CLIENT_ID = "codecomplete";
/** Every file on disk: the server decides per language (its `languages` setting) what to complete. */
export const DOCUMENT_SELECTOR = [{ scheme: "file" }];
/** What the error message's button opens. */
export const OPEN_SETTINGS = "Open Settings";

export function serverOptions(command: string): ServerOptions {
  return { command, args: ["lsp"] };
}

export function clientOptions(outputChannel: vscode.LogOutputChannel, middleware?: Middleware): LanguageClientOptions {
  return { documentSelector: DOCUMENT_SELECTOR, initializationOptions: serverSettings(), outputChannel, middleware };
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

async function isExecutableFile(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/**
 * Why `command` cannot be spawned, or undefined when it can: looked up the way spawn() does (a name without a
 * separator on PATH, anything else as a path). Checked before starting a client, whose own report of a failed
 * spawn ("couldn't create connection to server") does not say what to fix.
 */
export async function whyNotExecutable(
  command: string,
  env: NodeJS.ProcessEnv = process.env,
  platform: NodeJS.Platform = process.platform,
): Promise<string | undefined> {
  const bare = !/[\\/]/.test(command);
  const extensions = platform === "win32" ? ["", ...(env.PATHEXT ?? ".EXE;.CMD;.BAT;.COM").split(";")] : [""];
  const bases = bare ? (env.PATH ?? "").split(platform === "win32" ? ";" : delimiter).filter(Boolean) : [""];
  for (const base of bases) {
    for (const extension of extensions) {
      if (await isExecutableFile(base ? join(base, command + extension) : command + extension)) {
        return undefined;
      }
    }
  }
  if (bare) {
    return `"${command}" was not found on PATH`;
  }
  try {
    return (await stat(command)).isFile() ? `"${command}" is not executable` : `"${command}" is not a file`;
  } catch {
    return `"${command}" does not exist`;
  }
}

/**
 * The settings editor at codecomplete.serverPath, on the tab where it takes effect: a machine setting is read
 * from the Remote settings in a remote window (the User tab there does not even list it).
 */
export function openServerPathSetting(): Thenable<unknown> {
  const query = `${SECTION}.serverPath`;
  return vscode.env.remoteName !== undefined
    ? vscode.commands.executeCommand("workbench.action.openRemoteSettings", { query })
    : vscode.commands.executeCommand("workbench.action.openSettings", query);
}

/** Seams for the unit tests, which run without a codecomplete executable. */
export const checks = { whyNotExecutable };

export class Server implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private startError: string | undefined;
  /** One channel for every client this extension starts, so restarts do not pile up "codecomplete" outputs. */
  private readonly output = vscode.window.createOutputChannel("codecomplete", { log: true });
  private readonly pushed = new vscode.EventEmitter<ServerStatus | undefined>();
  private readonly answered = new vscode.EventEmitter<void>();
  private readonly stateChanged = new vscode.EventEmitter<void>();
  /** The server pushed its status: the object, or undefined when the notification only says to ask for it. */
  readonly onDidPushStatus = this.pushed.event;
  /** An inline completion request was answered (its latency is now in the server's status). */
  readonly onDidAnswerCompletion = this.answered.event;
  /** The client started, stopped or failed to start. */
  readonly onDidChangeState = this.stateChanged.event;

  /** Whether the last start failed: a settings change then retries it. */
  get failed(): boolean {
    return this.startError !== undefined;
  }

  /**
   * Start a client with the current settings. A failure is kept for the status bar and shown to the user
   * once, with a button to the settings, instead of thrown.
   */
  async start(): Promise<void> {
    this.startError = undefined;
    const command = serverPath();
    const unusable = await checks.whyNotExecutable(command);
    if (unusable !== undefined) {
      const where = vscode.env.remoteName !== undefined ? " in the Remote settings" : "";
      this.fail(`the server cannot start: ${unusable}. Set codecomplete.serverPath${where} to the codecomplete executable.`);
      return;
    }
    const middleware: Middleware = {
      provideInlineCompletionItems: async (document, position, context, token, next) => {
        try {
          return await next(document, position, context, token);
        } finally {
          this.answered.fire();
        }
      },
    };
    const client = new LanguageClient(CLIENT_ID, "codecomplete", serverOptions(command), clientOptions(this.output, middleware));
    this.client = client;
    client.onNotification(STATUS_CHANGED, (params?: ServerStatus | null) => {
      if (this.client === client) {
        this.pushed.fire(params && typeof params === "object" && "state" in params ? params : undefined);
      }
    });
    client.onDidChangeState(() => {
      if (this.client === client) {
        this.stateChanged.fire();
      }
    });
    try {
      await client.start();
    } catch (error) {
      if (this.client === client) {
        this.fail(`the server did not start: ${messageOf(error)}. See the "codecomplete" output for its log.`);
      }
    }
  }

  private fail(message: string): void {
    this.startError = message;
    this.stateChanged.fire();
    void vscode.window.showErrorMessage(`codecomplete: ${message}`, OPEN_SETTINGS).then((choice) => {
      if (choice === OPEN_SETTINGS) {
        void openServerPathSetting();
      }
    });
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client === undefined) {
      return;
    }
    if (client.state === State.Starting) {
      // A client cannot be stopped halfway through its start.
      await client.start().catch(() => undefined);
    }
    if (client.isRunning()) {
      await client.dispose();
    }
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  /** Tell a running server about changed settings; a server started later reads them at initialize. */
  async sendSettings(): Promise<void> {
    if (this.client?.isRunning()) {
      await this.client.sendNotification("workspace/didChangeConfiguration", configurationChangeParams());
    }
  }

  /** Where the server stands without asking it (a failed start, still starting, stopped); undefined: running. */
  localReading(): Reading | undefined {
    const client = this.client;
    if (this.startError !== undefined) {
      return { kind: "failed", message: this.startError };
    }
    if (client === undefined || client.state === State.Starting) {
      return { kind: "starting" };
    }
    if (client.state !== State.Running) {
      return { kind: "failed", message: "the server stopped" };
    }
    return undefined;
  }

  /** Ask the server how it is doing; never throws, since a failure is shown rather than raised. */
  async read(): Promise<Reading> {
    const known = this.localReading();
    if (known !== undefined || this.client === undefined) {
      return known ?? { kind: "starting" };
    }
    try {
      // The request has no arguments, but LSP requests carry params: a strict server rejects one without.
      const status = await this.client.sendRequest<ServerStatus>(STATUS_REQUEST, {});
      return { kind: "status", status };
    } catch (error) {
      return this.localReading() ?? { kind: "failed", message: `status request failed: ${messageOf(error)}` };
    }
  }

  async dispose(): Promise<void> {
    await this.stop();
    this.pushed.dispose();
    this.answered.dispose();
    this.stateChanged.dispose();
    this.output.dispose();
  }
}
