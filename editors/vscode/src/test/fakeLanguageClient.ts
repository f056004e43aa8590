/**
 * Stands in for `vscode-languageclient/node` when the extension's own modules load it: the real client needs a
 * running VS Code and a server process. It records what the extension asked of it.
 */

export enum State {
  Stopped = 1,
  Running = 2,
  Starting = 3,
  StartFailed = 4,
}

export interface Sent {
  method: string;
  params: unknown;
}

export const fakes = {
  instances: [] as LanguageClient[],
  /** When set, `start()` rejects with it, as the real client does when the server cannot be spawned. */
  startFailure: undefined as Error | undefined,
  /** The answer to `codecomplete/status`; an Error makes the request fail. */
  statusAnswer: undefined as unknown,
  reset(): void {
    this.instances.length = 0;
    this.startFailure = undefined;
    this.statusAnswer = undefined;
  },
};

export class LanguageClient {
  state = State.Stopped;
  startCalls = 0;
  disposed = false;
  readonly notifications: Sent[] = [];
  readonly requests: Sent[] = [];

  constructor(
    readonly id: string,
    readonly name: string,
    readonly serverOptions: { command: string; args: string[] },
    readonly clientOptions: { documentSelector: unknown; initializationOptions: unknown; outputChannel: unknown },
  ) {
    fakes.instances.push(this);
  }

  async start(): Promise<void> {
    this.startCalls += 1;
    this.state = State.Starting;
    await Promise.resolve();
    if (fakes.startFailure !== undefined) {
      this.state = State.StartFailed;
      throw fakes.startFailure;
    }
    this.state = State.Running;
  }

  isRunning(): boolean {
    return this.state === State.Running;
  }

  async sendRequest(method: string, params?: unknown): Promise<unknown> {
    this.requests.push({ method, params });
    if (fakes.statusAnswer instanceof Error) {
      throw fakes.statusAnswer;
    }
    return fakes.statusAnswer;
  }

  async sendNotification(method: string, params?: unknown): Promise<void> {
    this.notifications.push({ method, params });
  }

  async dispose(): Promise<void> {
    this.disposed = true;
    this.state = State.Stopped;
  }
}
