import { SERVER_KEYS, type ServerSettings } from "../settings";

/** What the extension sends when the user set only `values`: every other server setting as null. */
export function userSet(values: Partial<ServerSettings>): ServerSettings {
  return { ...(Object.fromEntries(SERVER_KEYS.map((key) => [key, null])) as ServerSettings), ...values };
}
