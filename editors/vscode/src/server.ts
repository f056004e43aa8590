/** Owns the language client: spawns `<serverPath> lsp` over stdio and replaces the client on restart. */
import * as vscode from "vscode";
import { LanguageClient, type LanguageClientOptions, type ServerOptions, State } from "vscode-languageclient/node";
import { configurationChangeParams, serverPath, serverSettings } from "./settings";
import { type Reading, STATUS_REQUEST, type ServerStatus } from "./status";

export const CLIENT_ID = "codecomplete";
/** Every file on disk: the server decides per language (its `languages` setting) what to complete. */
export const DOCUMENT_SELECTOR = [{ scheme: "file" }];

export function serverOptions(command: string): ServerOptions {
  return { command, args: ["lsp"] };
}

export function clientOptions(outputChannel: vscode.LogOutputChannel): LanguageClientOptions {
  return { documentSelector: DOCUMENT_SELECTOR, initializationOptions: serverSettings(), outputChannel };
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export class Server implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private startError: string | undefined;
  /** One channel for every client this extension starts, so restarts do not pile up "codecomplete" outputs. */
  private readonly output = vscode.window.createOutputChannel("codecomplete", { log: true });

  /** Start a client with the current settings. A failure is kept for the status bar instead of thrown. */
  async start(): Promise<void> {
    const options = clientOptions(this.output);
    const client = new LanguageClient(CLIENT_ID, "codecomplete", serverOptions(serverPath()), options);
    this.client = client;
    this.startError = undefined;
    try {
      await client.start();
    } catch (error) {
      if (this.client === client) {
        this.startError = `the server did not start: ${messageOf(error)}`;
      }
    }
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

  /** Ask the server how it is doing; never throws, since a poll failure is shown rather than raised. */
  async read(): Promise<Reading> {
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
    try {
      return { kind: "status", status: await client.sendRequest<ServerStatus>(STATUS_REQUEST) };
    } catch (error) {
      return { kind: "failed", message: `status request failed: ${messageOf(error)}` };
    }
  }

  async dispose(): Promise<void> {
    await this.stop();
    this.output.dispose();
  }
}
