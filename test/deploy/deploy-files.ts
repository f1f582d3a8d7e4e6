// Readers of the shipped deploy files, shared by the deploy tests so each test reads the
// same files the same way: the Compose file, the Prometheus configuration and the Grafana
// dashboard's queries.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";

export const root = process.cwd();
export const deployDir = join(root, "deploy");

export const readYaml = (path: string): any => parse(readFileSync(join(deployDir, path), "utf8"));

/** The inference service's command in deploy/compose.yaml. */
export function composeInferenceArgs(): string[] {
  return readYaml("compose.yaml").services.inference.command as string[];
}

/** Every PromQL expression of the Grafana dashboard, Grafana's $__rate_interval made concrete. */
export function dashboardQueries(): { panel: string; expr: string }[] {
  const dashboard = JSON.parse(readFileSync(join(deployDir, "grafana", "dashboards", "lightreasoner.json"), "utf8"));
  return dashboard.panels.flatMap((p: any) => p.targets.map((t: any) => ({ panel: p.title as string, expr: (t.expr as string).replaceAll("$__rate_interval", "1m") })));
}

/** The value after a flag in an argument list (undefined when absent). */
export const flagValue = (args: readonly string[], name: string): string | undefined => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
