// Hot LoRA adapters for the expert. Each adapter gets a version derived from its content and
// is kept as small resident tensors (its A and B factors) that the expert's one session
// applies as a low-rank side branch, per sequence: no merged copy of the weights, no second
// session. A request leases the version it names, the base expert, or (naming none) the
// active one, when it is admitted; activating, unloading or evicting changes nothing for a
// request already holding its lease (an unloaded adapter's tensors live on until its last
// request ends). The base expert (version "") is always there for rollback.
//
// Residency: the factors of every adapter held (loaded ones, and unloaded ones still leased)
// stay within maxResidentBytes. A load that would pass it evicts the least recently used
// adapters (last loaded, leased or activated) that are neither active nor leased, oldest
// first, and only as many as needed; when even evicting all of those would not make room,
// the load is refused (CapacityError: RESOURCE_EXHAUSTED) and nothing is evicted.
import { createHash } from "node:crypto";
import { existsSync, readFileSync, realpathSync, statSync } from "node:fs";
import { isAbsolute, join, relative, resolve } from "node:path";
import type { ModelConfig } from "#core/model/config.ts";
import type { LoraAdapter, LoraSettings } from "#core/model/lora.ts";
import { LINEAR_MODULES } from "#core/model/weights.ts";
import type { Float32Tensor } from "#core/model/weights.ts";
import { ModelFormatError, UnsupportedModelError } from "#core/model/errors.ts";
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, assemblePeftAdapter, parsePeftConfig } from "#core/formats/peft.ts";
import { parseSafetensors } from "#core/formats/safetensors.ts";
import type { CausalLmSession } from "#inference/model/session.ts";
import type { AdapterInputs } from "#inference/model/lora-inputs.ts";
import { AdapterFitError } from "#inference/model/lora-inputs.ts";
import { CapacityError, InvalidRequestError, NotFoundError, PermissionDeniedError, PreconditionError } from "./errors.ts";
import type { ServedModel } from "./served-model.ts";

/** The version of the unadapted expert, as the contract spells it. */
export const BASE_VERSION = "";

/** Which weights a request asks for: the active adapter, the base expert, or one loaded version. */
export type AdapterChoice = { kind: "active" } | { kind: "base" } | { kind: "version"; version: string };

export const ACTIVE_ADAPTER: AdapterChoice = Object.freeze({ kind: "active" });

/** What the registry tells metrics and logs about; every hook is optional and must not throw. */
export interface AdapterRegistryObserver {
  /** After every change of the active version. */
  activeChanged?(version: string, previous: string): void;
  /** A request took a lease on `version` ("" for the base expert). */
  leased?(version: string): void;
  /** An adapter was unloaded to make room for another. */
  evicted?(version: string, bytes: number): void;
  /** An unloaded adapter's last request ended: nothing will run it again. */
  retired?(version: string): void;
  /** The adapters held and their factors' bytes changed. */
  residency?(count: number, bytes: number): void;
}

export interface AdapterInfo {
  version: string;
  rank: number;
  loraAlpha: number;
  targetModules: string[];
  baseModelNameOrPath: string;
  sizeBytes: number;
  /** Bytes its factors hold in memory (what the residency bound counts). */
  residentBytes: number;
  /** The directory it was read from, or "upload". */
  source: string;
  loadedAtMs: number;
  active: boolean;
  /** Requests currently running on this version. */
  requestsInFlight: number;
}

interface Entry {
  version: string;
  /** The adapter as the expert's LoRA inputs; null for the base expert. */
  adapter: AdapterInputs | null;
  info: Omit<AdapterInfo, "active" | "requestsInFlight">;
  inUse: number;
  /** When it was last loaded, leased or activated (a counter: the eviction order). */
  lastUsed: number;
  /** Unloaded or evicted: no new lease; its factors stay held while inUse > 0. */
  unloaded: boolean;
}

/** A lease on one version of the expert; release() when the request ends (extra calls are ignored). */
export interface ExpertLease {
  version: string;
  session: CausalLmSession;
  /** What to pass as the step requests' adapter (null: the base expert). */
  adapter: AdapterInputs | null;
  release(): void;
}

/** Request fields an adapter's two files came in, so errors name what the client sent. */
export interface AdapterFields {
  config: string;
  weights: string;
}

export interface LoadResult {
  info: AdapterInfo;
  alreadyLoaded: boolean;
}

export interface AdapterRegistryOptions {
  /** Directories from which load-by-path is allowed; none means load-by-path is off. */
  allowedDirs?: string[];
  /** Largest adapter_model.safetensors accepted, in bytes. */
  maxAdapterBytes?: number;
  /** Most bytes of adapter factors held at once (see the residency rule above). */
  maxResidentBytes?: number;
  observer?: AdapterRegistryObserver;
}

export class AdapterRegistry {
  private readonly base: Entry;
  /** Loaded adapters, by version. */
  private readonly entries = new Map<string, Entry>();
  /** Unloaded or evicted adapters that running requests still hold. */
  private readonly retiring = new Set<Entry>();
  private current: Entry;
  private clock = 0;
  private readonly allowedDirs: string[];
  readonly maxAdapterBytes: number;
  readonly maxResidentBytes: number;
  private readonly observer: AdapterRegistryObserver;

  constructor(
    private readonly expert: ServedModel,
    options: AdapterRegistryOptions = {},
  ) {
    this.allowedDirs = options.allowedDirs ?? [];
    this.maxAdapterBytes = options.maxAdapterBytes ?? Number.MAX_SAFE_INTEGER;
    this.maxResidentBytes = options.maxResidentBytes ?? Number.MAX_SAFE_INTEGER;
    this.observer = options.observer ?? {};
    const info = { version: BASE_VERSION, rank: 0, loraAlpha: 0, targetModules: [], baseModelNameOrPath: "", sizeBytes: 0, residentBytes: 0, source: expert.dir, loadedAtMs: Date.now() };
    this.base = { version: BASE_VERSION, adapter: null, info, inUse: 0, lastUsed: 0, unloaded: false };
    this.current = this.base;
  }

  /** The version new requests use ("" for the base expert). */
  get activeVersion(): string {
    return this.current.version;
  }

  /** Bytes of adapter factors held now: loaded adapters and unloaded ones still leased. */
  get residentBytes(): number {
    let bytes = 0;
    for (const entry of [...this.entries.values(), ...this.retiring]) bytes += entry.info.residentBytes;
    return bytes;
  }

  /** Validates and registers an adapter given as its two PEFT files. */
  async load(configJson: string, safetensors: Uint8Array, options: { source: string; activate: boolean; fields: AdapterFields }): Promise<LoadResult> {
    const config = this.expert.config;
    if (!config || !this.expert.session.takesAdapters) {
      throw new PreconditionError(`the expert (${this.expert.dir}) is served from an ONNX file without Hugging Face weights and LoRA inputs, so LoRA adapters cannot be applied to it`);
    }
    if (safetensors.byteLength > this.maxAdapterBytes) {
      throw new CapacityError(`${options.fields.weights}: ${safetensors.byteLength} bytes is above the limit of ${this.maxAdapterBytes}`, options.fields.weights);
    }
    const adapter = parseAdapter(configJson, safetensors, config, options.source, options.fields);
    const version = adapterVersion(adapter);
    let entry = this.entries.get(version);
    const alreadyLoaded = entry !== undefined;
    if (!entry) {
      let inputs: AdapterInputs;
      try {
        inputs = this.expert.session.prepareAdapter(adapter);
      } catch (err) {
        if (err instanceof AdapterFitError) throw new PreconditionError(`${options.fields.weights}: the adapter does not fit the expert: ${err.problem}`, options.fields.weights);
        throw err;
      }
      this.makeRoom(inputs.byteLength, version, options.fields.weights);
      const info = {
        version,
        rank: adapter.settings.rank,
        loraAlpha: adapter.settings.alpha,
        targetModules: [...adapter.settings.targetModules],
        baseModelNameOrPath: baseModelOf(configJson),
        sizeBytes: safetensors.byteLength,
        residentBytes: inputs.byteLength,
        source: options.source,
        loadedAtMs: Date.now(),
      };
      entry = { version, adapter: inputs, info, inUse: 0, lastUsed: 0, unloaded: false };
      this.entries.set(version, entry);
      this.reportResidency();
    }
    entry.lastUsed = ++this.clock;
    if (options.activate) await this.activate(version);
    return { info: this.describe(entry), alreadyLoaded };
  }

  /** Loads `<dir>/adapter_config.json` + `adapter_model.safetensors` from inside an allowed directory. */
  async loadFromDirectory(dir: string, activate: boolean): Promise<LoadResult> {
    const field = "directory";
    if (dir === "") throw new InvalidRequestError(field, "must name an adapter directory");
    if (!isAbsolute(dir)) throw new InvalidRequestError(field, `${JSON.stringify(dir)} must be an absolute path`);
    if (this.allowedDirs.length === 0) throw new PermissionDeniedError(`${field}: loading adapters by path is disabled (start the server with --adapter-dir)`, field);
    // An allowed directory counts as written and with its links resolved.
    const allowed = [...new Set(this.allowedDirs.flatMap((d) => [resolve(d), realpathOrSelf(resolve(d))]))];
    const inside = (path: string) => allowed.some((root) => {
      const rel = relative(root, path);
      return rel === "" || (!rel.startsWith("..") && !isAbsolute(rel));
    });
    const wanted = resolve(dir);
    const refuse = () => new PermissionDeniedError(`${field}: ${dir} is outside the allowed adapter directories (${this.allowedDirs.join(", ")})`, field);
    // The path as written is checked before anything is looked up, so nothing is said about what exists elsewhere;
    // after resolving links it is checked again, so a link cannot lead out.
    if (!inside(wanted)) throw refuse();
    if (!existsSync(wanted)) throw new NotFoundError(`${field}: ${dir} does not exist`, field);
    const real = realpathSync(wanted);
    if (!inside(real)) throw refuse();
    if (!statSync(real).isDirectory()) throw new InvalidRequestError(field, `${dir} is not a directory`);
    const configPath = join(real, ADAPTER_CONFIG_FILE);
    const weightsPath = join(real, ADAPTER_WEIGHTS_FILE);
    for (const path of [configPath, weightsPath]) if (!existsSync(path)) throw new NotFoundError(`${field}: ${path} does not exist`, field);
    const size = statSync(weightsPath).size;
    if (size > this.maxAdapterBytes) throw new CapacityError(`${field}: ${weightsPath} has ${size} bytes, above the limit of ${this.maxAdapterBytes}`, field);
    return this.load(readFileSync(configPath, "utf8"), new Uint8Array(readFileSync(weightsPath)), { source: dir, activate, fields: { config: field, weights: field } });
  }

  /** New requests use `version` from now on; returns the version they used before. */
  async activate(version: string): Promise<string> {
    const entry = version === BASE_VERSION ? this.base : this.entries.get(version);
    if (!entry) throw new NotFoundError(`version: adapter ${version} is not loaded (loaded: ${this.knownVersions()})`, "version");
    const previous = this.current;
    this.current = entry;
    entry.lastUsed = ++this.clock;
    if (previous !== entry) this.observer.activeChanged?.(entry.version, previous.version);
    return previous.version;
  }

  rollback(): Promise<string> {
    return this.activate(BASE_VERSION);
  }

  /** Forgets a loaded, inactive adapter; requests still running on it keep its tensors until they end. */
  unload(version: string): void {
    const entry = this.entries.get(version);
    if (!entry) throw new NotFoundError(`version: adapter ${version} is not loaded (loaded: ${this.knownVersions()})`, "version");
    if (entry === this.current) throw new PreconditionError(`version: adapter ${version} is active; activate another version or roll back to the base expert first`, "version");
    this.drop(entry);
  }

  /** Loaded adapters, oldest first (the base expert is not listed). */
  list(): AdapterInfo[] {
    return [...this.entries.values()].map((entry) => this.describe(entry));
  }

  /**
   * The version `choice` names, held until the lease is released. NotFoundError (naming
   * `field`) when it names a version that is not loaded.
   */
  lease(choice: AdapterChoice = ACTIVE_ADAPTER, field = "adapter.version"): ExpertLease {
    let entry: Entry;
    if (choice.kind === "active") entry = this.current;
    else if (choice.kind === "base") entry = this.base;
    else {
      const found = this.entries.get(choice.version);
      if (!found) throw new NotFoundError(`${field}: adapter ${JSON.stringify(choice.version)} is not loaded (loaded: ${this.knownVersions()})`, field);
      entry = found;
    }
    entry.inUse++;
    entry.lastUsed = ++this.clock;
    this.observer.leased?.(entry.version);
    let released = false;
    return {
      version: entry.version,
      session: this.expert.session,
      adapter: entry.adapter,
      release: () => {
        if (released) return;
        released = true;
        entry.inUse--;
        if (entry.unloaded && entry.inUse === 0) this.retire(entry);
      },
    };
  }

  /** Forgets every adapter (the expert's session belongs to the caller). */
  async close(): Promise<void> {
    this.entries.clear();
    this.retiring.clear();
    this.current = this.base;
  }

  /**
   * Evicts least recently used adapters until `bytes` more fit under the bound, or refuses
   * (before evicting anything) when the active and leased ones alone leave no room.
   */
  private makeRoom(bytes: number, version: string, field: string): void {
    const bound = this.maxResidentBytes;
    const held = this.residentBytes;
    if (held + bytes <= bound) return;
    const evictable = [...this.entries.values()].filter((e) => e !== this.current && e.inUse === 0).sort((x, y) => x.lastUsed - y.lastUsed);
    const pinned = held - evictable.reduce((sum, e) => sum + e.info.residentBytes, 0);
    if (pinned + bytes > bound) {
      const holders = [...this.entries.values(), ...this.retiring].filter((e) => !evictable.includes(e)).map((e) => `${e.version} (${e.info.residentBytes} bytes, ${this.holdsBecause(e)})`);
      throw new CapacityError(
        `${field}: adapter ${version} needs ${bytes} bytes of factors; the resident adapter bound is ${bound} bytes and ${pinned} are held by adapters that cannot be evicted: ${holders.join(", ") || "none"}`,
        field,
      );
    }
    let free = bound - held;
    for (const entry of evictable) {
      if (free >= bytes) break;
      free += entry.info.residentBytes;
      this.observer.evicted?.(entry.version, entry.info.residentBytes);
      this.drop(entry);
    }
  }

  private holdsBecause(entry: Entry): string {
    if (entry === this.current) return "active";
    if (entry.unloaded) return `unloaded, still used by ${entry.inUse} request(s)`;
    return `leased by ${entry.inUse} running request(s)`;
  }

  /** Unloads an entry: no new leases; its factors go once its last lease ends. */
  private drop(entry: Entry): void {
    this.entries.delete(entry.version);
    entry.unloaded = true;
    if (entry.inUse > 0) this.retiring.add(entry);
    else this.retire(entry);
  }

  private retire(entry: Entry): void {
    this.retiring.delete(entry);
    entry.adapter?.retire();
    // The same content may have been loaded again meanwhile: then its version lives on.
    if (!this.entries.has(entry.version)) this.observer.retired?.(entry.version);
    this.reportResidency();
  }

  private reportResidency(): void {
    this.observer.residency?.(this.entries.size + this.retiring.size, this.residentBytes);
  }

  private describe(entry: Entry): AdapterInfo {
    return { ...entry.info, active: entry === this.current, requestsInFlight: entry.inUse };
  }

  private knownVersions(): string {
    return this.entries.size === 0 ? "none" : [...this.entries.keys()].join(", ");
  }

}

function realpathOrSelf(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}

function baseModelOf(configJson: string): string {
  const value = (JSON.parse(configJson) as Record<string, unknown>).base_model_name_or_path;
  return typeof value === "string" ? value : "";
}

/**
 * Reads a PEFT adapter, telling apart a malformed one (INVALID_ARGUMENT: bad JSON, bad r or
 * alpha, a target_modules regex outside the accepted syntax, an unreadable safetensors file,
 * stray tensors, NaN or infinite weights) from a well-formed one that does not fit the expert
 * (FAILED_PRECONDITION: modules, layers or shapes the expert does not have).
 */
function parseAdapter(configJson: string, safetensors: Uint8Array, config: ModelConfig, source: string, fields: AdapterFields): LoraAdapter {
  const invalid = (field: string, err: unknown) => new InvalidRequestError(field, (err as Error).message);
  const unfit = (field: string, err: unknown) => new PreconditionError(`${field}: the adapter does not fit the expert: ${(err as Error).message}`, field);
  let json: unknown;
  try {
    json = JSON.parse(configJson);
  } catch (err) {
    throw new InvalidRequestError(fields.config, `adapter_config.json is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new InvalidRequestError(fields.config, "adapter_config.json must be a JSON object");
  // Each file is parsed once (a target_modules regex and a large safetensors file are the costly parts).
  let settings: LoraSettings;
  try {
    settings = parsePeftConfig(configJson, config, join(source, ADAPTER_CONFIG_FILE)).settings;
  } catch (err) {
    if (err instanceof UnsupportedModelError) throw unfit(fields.config, err);
    if (err instanceof ModelFormatError && /is not a linear module|matches no linear module/.test(err.problem)) throw unfit(fields.config, err);
    throw invalid(fields.config, err);
  }
  let tensors: Map<string, Float32Tensor>;
  try {
    tensors = parseSafetensors(safetensors, join(source, ADAPTER_WEIGHTS_FILE)).tensors;
  } catch (err) {
    throw invalid(fields.weights, err);
  }
  try {
    return assemblePeftAdapter(settings, tensors, config, source);
  } catch (err) {
    if (err instanceof ModelFormatError && /unexpected tensor|must be 2-D|non-finite/.test(err.problem)) throw invalid(fields.weights, err);
    throw unfit(fields.weights, err);
  }
}

/**
 * sha256 over what the adapter does to the expert: rank, alpha, target modules and every
 * lora_A / lora_B as float32, in a fixed order. The same adapter gets the same version
 * whether uploaded or read from a directory, whatever the JSON's spacing or the tensors'
 * storage dtype and order. Sixteen hex digits keep logs and metric labels readable.
 */
export function adapterVersion(adapter: LoraAdapter): string {
  const { rank, alpha, targetModules } = adapter.settings;
  const modules = LINEAR_MODULES.filter((m) => targetModules.includes(m));
  const hash = createHash("sha256").update(`lightreasoner-lora-v1\n${JSON.stringify({ rank, alpha, modules })}\n`);
  for (const name of [...adapter.pairs.keys()].sort()) {
    const { a, b } = adapter.pairs.get(name)!;
    hash.update(`${name}\n${a.shape.join("x")}\n`).update(new Uint8Array(a.data.buffer, a.data.byteOffset, a.data.byteLength));
    hash.update(`${b.shape.join("x")}\n`).update(new Uint8Array(b.data.buffer, b.data.byteOffset, b.data.byteLength));
  }
  return hash.digest("hex").slice(0, 16);
}
