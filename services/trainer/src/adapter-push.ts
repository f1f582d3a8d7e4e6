// Hands a trained adapter to an inference endpoint: the PEFT files streamed through
// AdapterService.UploadAdapter (client-streaming, so adapters above gRPC's message limit
// fit), and activated for new requests only when asked: a run's own requests name its
// adapter, so uploading one must not change what the replica's other clients get. Returns the
// content-hash version the server assigned.
import type { LoraAdapter } from "#core/model/lora.ts";
import { encodePeftAdapter } from "#core/formats/peft.ts";
import { createClient } from "#core/grpc/adapter.ts";
import type { ClientSecurity } from "#core/grpc/adapter.ts";
import { AdapterService } from "#core/gen/lightreasoner/v1/adapter_pb.ts";

/** Bytes per upload message, well under grpc-js's 4 MiB default. */
const CHUNK_BYTES = 1 << 20;

export async function pushAdapter(target: string, adapter: LoraAdapter, options: { activate: boolean; baseModel?: string; security?: ClientSecurity }): Promise<string> {
  const { configJson, safetensors } = encodePeftAdapter(adapter, { baseModel: options.baseModel });
  const client = createClient(AdapterService, target, { security: options.security });
  try {
    const upload = client.uploadAdapter({ timeoutMs: 60_000 });
    await upload.write({ part: { case: "header", value: { adapterConfigJson: configJson, safetensorsSize: safetensors.length, activate: options.activate } } });
    for (let offset = 0; offset < safetensors.length; offset += CHUNK_BYTES) {
      await upload.write({ part: { case: "safetensorsChunk", value: safetensors.subarray(offset, offset + CHUNK_BYTES) } });
    }
    const response = await upload.end();
    return response.loaded?.adapter?.version ?? "";
  } finally {
    client.close();
  }
}
