// Inference endpoint addresses as users write them: "host:port" (one server) or
// "dns:///name:port" (every address the name resolves to, e.g. a Kubernetes headless
// service; the endpoint pool gives each address a lane of its own).
import { isIPv6 } from "node:net";
import { SamplerConfigError } from "./errors.ts";

export interface EndpointTarget {
  /** As given, for messages. */
  text: string;
  kind: "direct" | "dns";
  host: string;
  port: number;
}

const DNS_SCHEME = "dns:///";

export function parseEndpointTarget(text: string, field = "inference_endpoints"): EndpointTarget {
  const fail = (problem: string): never => {
    throw new SamplerConfigError(field, `${JSON.stringify(text)} ${problem}`);
  };
  const trimmed = text.trim();
  const kind = trimmed.startsWith(DNS_SCHEME) ? "dns" : "direct";
  const rest = kind === "dns" ? trimmed.slice(DNS_SCHEME.length) : trimmed;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(rest) || rest.startsWith("dns:")) fail(`is not "host:port" or "dns:///host:port"`);
  const match = /^(\[[0-9a-fA-F:.]+\]|[^:[\]/\s]+):(\d+)$/.exec(rest);
  if (!match) return fail(`must be "host:port" or "dns:///host:port" (the port is required)`);
  const port = Number(match[2]);
  if (!(port >= 1 && port <= 65535)) fail(`has port ${match[2]}, outside 1-65535`);
  const host = match[1].startsWith("[") ? match[1].slice(1, -1) : match[1];
  if (match[1].startsWith("[") && !isIPv6(host)) fail(`has "${host}" in brackets, which is not an IPv6 address`);
  return { text: trimmed, kind, host, port };
}

export function parseEndpointTargets(texts: readonly string[], field = "inference_endpoints"): EndpointTarget[] {
  if (texts.length === 0) throw new SamplerConfigError(field, "must name at least one inference endpoint");
  const targets = texts.map((t, i) => parseEndpointTarget(t, `${field}[${i}]`));
  const seen = new Set<string>();
  targets.forEach((t, i) => {
    const key = `${t.kind}:${t.host}:${t.port}`;
    if (seen.has(key)) throw new SamplerConfigError(`${field}[${i}]`, `${JSON.stringify(t.text)} is listed twice`);
    seen.add(key);
  });
  return targets;
}

/** "host:port" for a direct grpc-js channel to one address (IPv6 in brackets). */
export function hostPort(host: string, port: number): string {
  return `${isIPv6(host) ? `[${host}]` : host}:${port}`;
}
