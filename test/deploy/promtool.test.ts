// promtool (Debian's prometheus package) on the shipped Prometheus files: the configuration
// and the alert rules check, the rules' unit tests pass, every Grafana panel query parses as
// PromQL, and broken variants of each are refused, so none of these checks passes vacuously.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { dashboardQueries, deployDir } from "./deploy-files.ts";

const hasPromtool = spawnSync("promtool", ["--version"], { stdio: "ignore" }).status === 0;
const prometheusDir = join(deployDir, "prometheus");

function promtool(...args: string[]): { status: number | null; output: string } {
  const r = spawnSync("promtool", args, { encoding: "utf8", cwd: prometheusDir });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

describe.skipIf(!hasPromtool)("promtool on deploy/prometheus (no promtool: apt-get install prometheus)", () => {
  const scratch = mkdtempSync(join(tmpdir(), "lr-promtool-"));
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));
  const write = (name: string, content: unknown) => {
    const path = join(scratch, name);
    writeFileSync(path, typeof content === "string" ? content : stringify(content));
    return path;
  };
  const rules = () => parse(readFileSync(join(prometheusDir, "lightreasoner.rules.yml"), "utf8"));

  it("checks the configuration and the rule files it names", () => {
    const r = promtool("check", "config", "prometheus.yml");
    expect(r.status, r.output).toBe(0);
    expect(r.output).toContain("SUCCESS: 1 rule files found");
  });

  it("checks the alert rules", () => {
    const r = promtool("check", "rules", "lightreasoner.rules.yml");
    expect(r.status, r.output).toBe(0);
    expect(r.output).toContain("SUCCESS: 7 rules found");
  });

  it("passes the rules' unit tests: each alert fires on its series, and only after its `for`", () => {
    const r = promtool("test", "rules", "lightreasoner.rules.test.yml");
    expect(r.status, r.output).toBe(0);
    expect(r.output).toContain("SUCCESS");
  });

  it("refuses a rule with broken PromQL, a bad duration, and a unit test expecting the wrong alert", () => {
    const badExpr = rules();
    badExpr.groups[0].rules[0].expr = 'up{job="lightreasoner-inference"} == ';
    const r1 = promtool("check", "rules", write("bad-expr.yml", badExpr));
    expect(r1.status).not.toBe(0);
    expect(r1.output).toMatch(/InferenceReplicaDown|parse error/);

    const badFor = rules();
    badFor.groups[1].rules[0].for = "2 minutes";
    expect(promtool("check", "rules", write("bad-for.yml", badFor)).status).not.toBe(0);

    const tests = parse(readFileSync(join(prometheusDir, "lightreasoner.rules.test.yml"), "utf8"));
    tests.rule_files = [join(prometheusDir, "lightreasoner.rules.yml")];
    tests.tests[0].alert_rule_test[1].exp_alerts[0].exp_labels.instance = "10.0.0.2:9464";
    const r3 = promtool("test", "rules", write("wrong-expectation.test.yml", tests));
    expect(r3.status).not.toBe(0);
    expect(r3.output).toContain("FAILED");
  });

  it("refuses a broken configuration", () => {
    const config = parse(readFileSync(join(prometheusDir, "prometheus.yml"), "utf8"));
    config.global.scrape_interval = "often";
    config.rule_files = [];
    expect(promtool("check", "config", write("bad-config.yml", config)).status).not.toBe(0);
  });

  it("parses every Grafana panel query as PromQL (and refuses a mangled one)", () => {
    const queries = dashboardQueries();
    const asRules = (exprs: string[]) => ({ groups: [{ name: "dashboard", rules: exprs.map((expr, i) => ({ record: `dashboard:query_${i}`, expr })) }] });
    const r = promtool("check", "rules", write("dashboard.yml", asRules(queries.map((q) => q.expr))));
    expect(r.status, r.output).toBe(0);
    expect(r.output).toContain(`SUCCESS: ${queries.length} rules found`);
    const mangled = promtool("check", "rules", write("dashboard-bad.yml", asRules([queries[0].expr.replace("sum by (instance)", "sum by instance")])));
    expect(mangled.status).not.toBe(0);
  });
});
