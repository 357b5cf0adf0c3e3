/**
 * Bearer-token authentication per client. Tokens are kept only as SHA-256 digests, looked up by digest
 * (no early-exit comparison on the secret). Tokens are never logged nor echoed.
 *
 * @module
 */

import { HttpError, IngestConfigError } from "./errors.ts";

/** A client: its name and, optionally, the resource types it may write (default: all allowed types). */
export interface ClientConfig {
  name: string;
  /** Resource types this client may write; absent = every type the server accepts. */
  types?: readonly string[];
}

/** An authenticated client. */
export interface Client {
  name: string;
  /** Types it may write, or undefined for all. */
  types: ReadonlySet<string> | undefined;
}

const enc = new TextEncoder();

async function digest(token: string): Promise<string> {
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", enc.encode(token)));
  return Array.from(h, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Authenticates requests against a token → client table. */
export class Authenticator {
  readonly #byDigest: Map<string, Client>;

  private constructor(byDigest: Map<string, Client>) {
    this.#byDigest = byDigest;
  }

  /** Builds the table; tokens must be at least 16 characters without whitespace. */
  static async create(clients: Record<string, string | ClientConfig>): Promise<Authenticator> {
    const m = new Map<string, Client>();
    for (const [token, cfg] of Object.entries(clients)) {
      if (token.length < 16 || /\s/.test(token)) {
        throw new IngestConfigError("every client token must have at least 16 characters and no whitespace");
      }
      const c = typeof cfg === "string" ? { name: cfg } : cfg;
      if (!c.name) throw new IngestConfigError("every client needs a name");
      m.set(await digest(token), { name: c.name, types: c.types ? new Set(c.types) : undefined });
    }
    return new Authenticator(m);
  }

  /** The client of the request's `Authorization: Bearer` token; HttpError 401 otherwise. */
  async authenticate(req: Request): Promise<Client> {
    const h = req.headers.get("authorization");
    const m = h ? /^Bearer[ ]+([^\s]+)\s*$/i.exec(h) : null;
    if (!m) {
      throw HttpError.of(
        401,
        "login",
        "Authentication required: send Authorization: Bearer <token>",
        undefined,
        {
          "www-authenticate": 'Bearer realm="fhir"',
        },
      );
    }
    const client = this.#byDigest.get(await digest(m[1]));
    if (!client) {
      throw HttpError.of(401, "login", "The bearer token is not valid", undefined, {
        "www-authenticate": 'Bearer realm="fhir", error="invalid_token"',
      });
    }
    return client;
  }
}

/** True when the client may write resources of this type. */
export function mayWrite(client: Client, type: string): boolean {
  return client.types === undefined || client.types.has(type);
}
