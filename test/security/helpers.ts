// Shared pieces of the security tests: a logger whose every line is kept (to show the token
// never reaches a log), the status a call ends with, a raw health check (Health stays open),
// and a throw-away certificate authority made with the openssl CLI.
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import type { Logger } from "pino";
import { GrpcError, Status } from "#core/grpc/errors.ts";

/** A pino logger at the most verbose level, writing into `lines`. */
export function capturingLogger(lines: string[]): Logger {
  return pino({ level: "trace" }, { write: (line: string) => lines.push(line) });
}

/** "OK" when `call` resolves, else the status code's name; the message lands in `messages`. */
export async function statusOf(call: Promise<unknown> | (() => Promise<unknown>), messages: string[] = []): Promise<string> {
  try {
    await (typeof call === "function" ? call() : call);
    return "OK";
  } catch (err) {
    if (!(err instanceof GrpcError)) throw err;
    messages.push(err.message);
    return Status[err.code];
  }
}

/** grpc.health.v1.Health/Check for the whole server, as a client without any credential sends it. */
export function healthCheck(address: string, credentials = grpc.credentials.createInsecure()): Promise<"SERVING" | string> {
  const client = new grpc.Client(address, credentials);
  return new Promise((resolve, reject) => {
    // An empty HealthCheckRequest; the answer's field 1 (varint) is the status, SERVING = 1.
    client.makeUnaryRequest("/grpc.health.v1.Health/Check", (b: Buffer) => b, (b: Buffer) => b, Buffer.alloc(0), (err, response) => {
      client.close();
      if (err) reject(err);
      else resolve(response![0] === 0x08 && response![1] === 1 ? "SERVING" : `status bytes ${response!.toString("hex")}`);
    });
  });
}

export interface Pem {
  cert: Buffer;
  key: Buffer;
  certFile: string;
  keyFile: string;
}

export interface TestCa extends Pem {
  /** A certificate this CA signs; `server` ones name 127.0.0.1 and localhost. */
  issue(name: string, use: "server" | "client"): Pem;
}

/** A fresh CA under `dir` (openssl CLI, EC P-256 keys: fast to make). */
export function makeCa(dir: string, name: string): TestCa {
  const openssl = (...args: string[]) => execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
  const files = (base: string) => ({ certFile: join(dir, `${base}.crt`), keyFile: join(dir, `${base}.key`) });
  const read = (f: { certFile: string; keyFile: string }): Pem => ({ ...f, cert: readFileSync(f.certFile), key: readFileSync(f.keyFile) });
  const newKey = (file: string) => openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", file);
  const ca = files(name);
  newKey(ca.keyFile);
  openssl("req", "-x509", "-new", "-key", ca.keyFile, "-out", ca.certFile, "-days", "1", "-subj", `/CN=${name}`, "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
  return {
    ...read(ca),
    issue(leaf, use) {
      const f = files(`${name}-${leaf}`);
      const csr = join(dir, `${name}-${leaf}.csr`);
      const ext = join(dir, `${name}-${leaf}.ext`);
      newKey(f.keyFile);
      openssl("req", "-new", "-key", f.keyFile, "-out", csr, "-subj", `/CN=${leaf}`);
      const extensions = use === "server" ? ["subjectAltName=IP:127.0.0.1,DNS:localhost", "extendedKeyUsage=serverAuth"] : ["extendedKeyUsage=clientAuth"];
      writeFileSync(ext, [...extensions, "basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature"].join("\n"));
      openssl("x509", "-req", "-in", csr, "-CA", ca.certFile, "-CAkey", ca.keyFile, "-CAcreateserial", "-out", f.certFile, "-days", "1", "-extfile", ext);
      return read(f);
    },
  };
}
