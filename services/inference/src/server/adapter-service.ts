// AdapterService's handlers: uploads and directory loads go to the adapter registry, which
// validates, versions and opens them; these handlers check the upload's framing and
// translate the registry's view into the contract's messages.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceHandlers } from "#core/grpc/adapter.ts";
import type { AdapterInfoSchema, AdapterService, UploadAdapterHeader } from "#core/gen/lightreasoner/v1/adapter_pb.ts";
import type { AdapterInfo } from "#inference/engine/adapter-registry.ts";
import { CapacityError, InvalidRequestError } from "#inference/engine/errors.ts";
import type { ServingContext } from "./context.ts";

type Methods = (typeof AdapterService)["method"];

function adapterInfo(info: AdapterInfo): MessageInitShape<typeof AdapterInfoSchema> {
  return {
    version: info.version,
    rank: info.rank,
    loraAlpha: info.loraAlpha,
    targetModules: info.targetModules,
    baseModelNameOrPath: info.baseModelNameOrPath,
    sizeBytes: info.sizeBytes,
    source: info.source,
    loadedAt: timestampFromMs(info.loadedAtMs),
    active: info.active,
    requestsInFlight: info.requestsInFlight,
  };
}

export function adapterHandlers(ctx: ServingContext): ServiceHandlers<Methods> {
  const { adapters, limits, logger } = ctx;
  const loaded = (info: AdapterInfo, alreadyLoaded: boolean, source: string) => {
    logger.info({ version: info.version, source, alreadyLoaded, active: info.active }, "adapter loaded");
    return { loaded: { adapter: adapterInfo(info), alreadyLoaded } };
  };
  return {
    async uploadAdapter(requests) {
      let header: UploadAdapterHeader | null = null;
      const chunks: Uint8Array[] = [];
      let received = 0;
      for await (const request of requests) {
        const part = request.part;
        if (part.case === "header") {
          if (header) throw new InvalidRequestError("header", "must be sent exactly once, as the first message");
          header = part.value;
          if (header.adapterConfigJson === "") throw new InvalidRequestError("header.adapter_config_json", "must hold the text of adapter_config.json");
          if (header.safetensorsSize > limits.maxAdapterBytes) {
            throw new CapacityError(`header.safetensors_size: ${header.safetensorsSize} bytes is above the limit of ${limits.maxAdapterBytes}`, "header.safetensors_size");
          }
        } else if (part.case === "safetensorsChunk") {
          if (!header) throw new InvalidRequestError("header", "must come first, before any safetensors_chunk");
          received += part.value.byteLength;
          // Stop reading as soon as the upload overruns what it declared: nothing unbounded is kept.
          if (received > header.safetensorsSize) {
            throw new InvalidRequestError("header.safetensors_size", `declared ${header.safetensorsSize} bytes, but more arrived`);
          }
          chunks.push(part.value);
        } else {
          throw new InvalidRequestError("part", "each message must carry the header or a safetensors_chunk");
        }
      }
      if (!header) throw new InvalidRequestError("header", "the upload carried no header");
      if (received !== header.safetensorsSize) {
        throw new InvalidRequestError("header.safetensors_size", `declared ${header.safetensorsSize} bytes, received ${received}`);
      }
      const bytes = new Uint8Array(received);
      let offset = 0;
      for (const chunk of chunks) {
        bytes.set(chunk, offset);
        offset += chunk.byteLength;
      }
      const { info, alreadyLoaded } = await adapters.load(header.adapterConfigJson, bytes, {
        source: "upload",
        activate: header.activate,
        fields: { config: "header.adapter_config_json", weights: "safetensors_chunk" },
      });
      return loaded(info, alreadyLoaded, "upload");
    },

    async loadAdapter(request) {
      const { info, alreadyLoaded } = await adapters.loadFromDirectory(request.directory, request.activate);
      return loaded(info, alreadyLoaded, request.directory);
    },

    listAdapters() {
      return { adapters: adapters.list().map(adapterInfo), activeVersion: adapters.activeVersion };
    },

    async activateAdapter(request) {
      if (request.version === "") throw new InvalidRequestError("version", "must name a loaded adapter (use RollbackToBase for the base expert)");
      const previousVersion = await adapters.activate(request.version);
      return { previousVersion, activeVersion: adapters.activeVersion };
    },

    async rollbackToBase() {
      return { previousVersion: await adapters.rollback() };
    },

    unloadAdapter(request) {
      if (request.version === "") throw new InvalidRequestError("version", "must name a loaded adapter");
      adapters.unload(request.version);
      logger.info({ version: request.version }, "adapter unloaded");
      return {};
    },
  };
}
