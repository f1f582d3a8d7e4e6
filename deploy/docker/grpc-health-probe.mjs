#!/usr/bin/env node
// The containers' HEALTHCHECK: asks a server for its status through the standard gRPC health
// protocol (grpc.health.v1.Health/Check) and exits 0 only on SERVING, so a draining server
// (NOT_SERVING during SIGTERM) or a wedged one is reported unhealthy. Plain JavaScript on
// the service's own grpc-js and health definition: no compiler, no extra binary in the image.
//
// Usage: grpc-health-probe.mjs [--addr host:port] [--service name] [--timeout-ms n]
//          [--tls-ca file [--tls-cert file --tls-key file]]   (TLS; a client certificate for mTLS)
// Exit codes: 0 SERVING, 1 answered but not SERVING (or the service is unknown),
// 2 no answer (refused, timed out), 3 bad arguments.
import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";

function parseArgs(argv) {
  const options = { addr: "127.0.0.1:50051", service: "", timeoutMs: 3000 };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (value === undefined) return { error: `${flag} needs a value` };
    if (flag === "--addr") options.addr = value;
    else if (flag === "--service") options.service = value;
    else if (flag === "--timeout-ms") options.timeoutMs = Number(value);
    else if (flag === "--tls-ca") options.tlsCa = value;
    else if (flag === "--tls-cert") options.tlsCert = value;
    else if (flag === "--tls-key") options.tlsKey = value;
    else return { error: `unknown flag ${flag}` };
    i++;
  }
  if (!(Number.isInteger(options.timeoutMs) && options.timeoutMs > 0)) return { error: `--timeout-ms must be a positive integer, got ${options.timeoutMs}` };
  if ((options.tlsCert === undefined) !== (options.tlsKey === undefined)) return { error: "--tls-cert and --tls-key go together" };
  if (options.tlsCert !== undefined && options.tlsCa === undefined) return { error: "--tls-cert needs --tls-ca" };
  return { options };
}

/** Plain text, or TLS verified against --tls-ca (with a client certificate for mutual TLS). */
function credentials({ tlsCa, tlsCert, tlsKey }) {
  if (tlsCa === undefined) return { credentials: grpc.credentials.createInsecure() };
  try {
    const read = (file) => (file === undefined ? null : readFileSync(file));
    return { credentials: grpc.credentials.createSsl(read(tlsCa), read(tlsKey), read(tlsCert)) };
  } catch (err) {
    return { error: err.message };
  }
}

const parsed = parseArgs(process.argv.slice(2));
if (parsed.error) {
  console.error(`grpc-health-probe: ${parsed.error}`);
  process.exit(3);
}
const { addr, service, timeoutMs } = parsed.options;
const channel = credentials(parsed.options);
if (channel.error) {
  console.error(`grpc-health-probe: ${channel.error}`);
  process.exit(3);
}
const Health = grpc.makeClientConstructor(healthService, "grpc.health.v1.Health");
const client = new Health(addr, channel.credentials);
const what = `${addr} service ${JSON.stringify(service)}`;
client.check({ service }, { deadline: Date.now() + timeoutMs }, (err, response) => {
  client.close();
  if (err) {
    // NOT_FOUND: the server answers but does not know the service name.
    const answered = err.code === grpc.status.NOT_FOUND;
    console.error(`grpc-health-probe: ${what}: ${grpc.status[err.code] ?? err.code}: ${err.details || err.message}`);
    process.exit(answered ? 1 : 2);
  }
  const status = response.status;
  console.log(`grpc-health-probe: ${what}: ${status}`);
  process.exit(status === "SERVING" || status === 1 ? 0 : 1);
});
