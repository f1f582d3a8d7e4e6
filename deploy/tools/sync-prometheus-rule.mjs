#!/usr/bin/env node
// Writes deploy/k8s/base/prometheusrule.yaml from deploy/prometheus/lightreasoner.rules.yml, so
// the Prometheus Operator gets exactly the alert rules that Compose's Prometheus loads (one
// source). `--check` writes nothing and exits 1 when the committed file is out of date.
// Run from anywhere: node deploy/tools/sync-prometheus-rule.mjs [--check]
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { parse, stringify } from "yaml";

const deployDir = join(dirname(fileURLToPath(import.meta.url)), "..");
const root = join(deployDir, "..");
const source = join(deployDir, "prometheus", "lightreasoner.rules.yml");
const target = join(deployDir, "k8s", "base", "prometheusrule.yaml");

export function renderPrometheusRule(rulesText) {
  const rules = parse(rulesText);
  if (!rules || !Array.isArray(rules.groups)) throw new Error(`${relative(root, source)}: no "groups" list`);
  const resource = {
    apiVersion: "monitoring.coreos.com/v1",
    kind: "PrometheusRule",
    metadata: { name: "lightreasoner", labels: { "app.kubernetes.io/part-of": "lightreasoner" } },
    spec: { groups: rules.groups },
  };
  const header = [
    `# Generated from deploy/prometheus/lightreasoner.rules.yml by deploy/tools/sync-prometheus-rule.mjs;`,
    `# edit that file and rerun the script. Your Prometheus's ruleSelector may need a label here`,
    `# (e.g. release: <your Prometheus release>): add it with a kustomize patch.`,
  ];
  return `${header.join("\n")}\n${stringify(resource, { lineWidth: 0 })}`;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const wanted = renderPrometheusRule(readFileSync(source, "utf8"));
  let current = "";
  try {
    current = readFileSync(target, "utf8");
  } catch {
    // absent: out of date
  }
  if (process.argv.includes("--check")) {
    if (current !== wanted) {
      console.error(`${relative(root, target)} is out of date: run node deploy/tools/sync-prometheus-rule.mjs`);
      process.exit(1);
    }
    console.log(`${relative(root, target)} matches ${relative(root, source)}`);
  } else {
    writeFileSync(target, wanted);
    console.log(`wrote ${relative(root, target)}`);
  }
}
