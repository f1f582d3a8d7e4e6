// serializeMessage writes large nested bytes fields after the rest of the message, wrapped in
// their path's tags and lengths. Whatever reads the bytes must see the very message toBinary
// would have written: protobuf-es here, and Python's protobuf (another implementation of the
// wire format's merge rule) where Debian's python3-protobuf is installed. The caller's message
// must come out untouched.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, createFileRegistry, equals, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FieldDescriptorProto_Label, FieldDescriptorProto_Type, FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { DescMessage } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addService, createClient, GrpcError, Status } from "#core/grpc/adapter.ts";
import { LARGE_BYTES, serializeMessage } from "#core/grpc/message-encoding.ts";
import { UploadAdapterRequestSchema } from "#core/gen/lightreasoner/v1/adapter_pb.ts";
import { InferenceService, StreamTrajectoriesResponseSchema } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { encodeDistributions } from "#inference/server/distributions.ts";
import { listen } from "./loopback.ts";

const QWEN_VOCAB = 151_936;

/** A normalised log-probability row with a fixed seed: any values serve, these look like the service's. */
function logProbs(vocab: number, seed: number): Float32Array {
  const row = new Float32Array(vocab);
  let state = seed;
  for (let i = 0; i < vocab; i++) {
    state = (state * 1_103_515_245 + 12_345) % 2 ** 31;
    row[i] = -20 * (state / 2 ** 31);
  }
  const logSum = Math.log(row.reduce((n, v) => n + Math.exp(v), 0));
  return row.map((v) => v - logSum);
}

function fullStep(vocab: number, dtype: "float32" | "float16") {
  return create(StreamTrajectoriesResponseSchema, {
    requestId: "r-7",
    event: {
      case: "step",
      value: {
        step: 3,
        tokenText: " the",
        adapterVersion: "v2",
        scored: { position: 64, tokenId: 1234, distributions: encodeDistributions(logProbs(vocab, 1), logProbs(vocab, 2), { encoding: "full", dtype }) },
      },
    },
  });
}

function uploadChunk(bytes: number) {
  const chunk = new Uint8Array(bytes).map((_, i) => (i * 31) % 251);
  return create(UploadAdapterRequestSchema, { part: { case: "safetensorsChunk", value: chunk } });
}

/** The message as protobuf-es reads serializeMessage's bytes, and those bytes re-encoded canonically. */
function roundTrip(schema: DescMessage, message: object) {
  const bytes = serializeMessage(schema, message);
  const read = fromBinary(schema, bytes);
  return { bytes, read, canonical: toBinary(schema, read) };
}

describe("serializeMessage", () => {
  const cases = [
    { name: "a FULL float32 step at vocabulary 151,936 (two 600 KB vectors three messages deep)", schema: StreamTrajectoriesResponseSchema, make: () => fullStep(QWEN_VOCAB, "float32"), lifted: true },
    { name: "a FULL float16 step at vocabulary 151,936", schema: StreamTrajectoriesResponseSchema, make: () => fullStep(QWEN_VOCAB, "float16"), lifted: true },
    { name: "a FULL float32 step at vocabulary 2,000 (below the size worth lifting)", schema: StreamTrajectoriesResponseSchema, make: () => fullStep(2000, "float32"), lifted: false },
    { name: "a 1 MiB adapter chunk (a bytes member of a oneof, at the top)", schema: UploadAdapterRequestSchema, make: () => uploadChunk(1 << 20), lifted: true },
  ];

  for (const c of cases) {
    it(`writes the same message as toBinary: ${c.name}`, () => {
      const message = c.make();
      const expected = toBinary(c.schema, message as never);
      const { bytes, read, canonical } = roundTrip(c.schema, message);
      expect(equals(c.schema, read as never, message as never)).toBe(true);
      expect(Buffer.from(canonical).equals(Buffer.from(expected))).toBe(true);
      if (c.lifted) {
        // The lifted fields' path is written twice: a few tags and lengths more, no payload more.
        expect(bytes.byteLength).toBeGreaterThan(expected.byteLength);
        expect(bytes.byteLength - expected.byteLength).toBeLessThan(64);
      } else {
        expect(Buffer.from(bytes).equals(Buffer.from(expected))).toBe(true);
      }
    });
  }

  it("leaves the caller's message as it was, the same byte arrays in place", () => {
    const message = fullStep(QWEN_VOCAB, "float32");
    const step = message.event.case === "step" ? message.event.value : undefined;
    const full = step?.scored?.distributions.case === "full" ? step.scored.distributions.value : undefined;
    const [expert, amateur] = [full!.expertLogProbs, full!.amateurLogProbs];
    const before = toBinary(StreamTrajectoriesResponseSchema, message);
    serializeMessage(StreamTrajectoriesResponseSchema, message);
    expect(full!.expertLogProbs).toBe(expert);
    expect(full!.amateurLogProbs).toBe(amateur);
    expect(Buffer.from(toBinary(StreamTrajectoriesResponseSchema, message)).equals(Buffer.from(before))).toBe(true);
  });

  it("lifts from exactly LARGE_BYTES on", () => {
    for (const size of [LARGE_BYTES - 1, LARGE_BYTES]) {
      const message = uploadChunk(size);
      const bytes = serializeMessage(UploadAdapterRequestSchema, message);
      const plain = toBinary(UploadAdapterRequestSchema, message);
      // Lifted: the oneof member is written empty first (2 bytes), then with the payload.
      expect(bytes.byteLength - plain.byteLength).toBe(size === LARGE_BYTES ? 2 : 0);
      expect(equals(UploadAdapterRequestSchema, fromBinary(UploadAdapterRequestSchema, bytes), message)).toBe(true);
    }
  });
});

/**
 * A schema of this test's own for the shapes the contract does not have yet: a sub-message
 * reachable both on a lifted path and under a repeated field, proto3 `optional bytes`, a oneof
 * with a bytes member, and a type that holds itself.
 *   message Leaf { bytes data = 1; }
 *   message Holder { Leaf single = 1; repeated Leaf many = 2; optional bytes opt = 3;
 *                    oneof choice { Leaf inner = 4; bytes raw = 5; } Holder self = 6; }
 */
function testSchemas() {
  const { OPTIONAL: optional, REPEATED: repeated } = FieldDescriptorProto_Label;
  const { BYTES: bytes, MESSAGE: message } = FieldDescriptorProto_Type;
  const file = create(FileDescriptorProtoSchema, {
    name: "encoding_test.proto",
    package: "encoding_test",
    syntax: "proto3",
    messageType: [
      { name: "Leaf", field: [{ name: "data", number: 1, label: optional, type: bytes, jsonName: "data" }] },
      {
        name: "Holder",
        field: [
          { name: "single", number: 1, label: optional, type: message, typeName: ".encoding_test.Leaf", jsonName: "single" },
          { name: "many", number: 2, label: repeated, type: message, typeName: ".encoding_test.Leaf", jsonName: "many" },
          { name: "opt", number: 3, label: optional, type: bytes, jsonName: "opt", oneofIndex: 1, proto3Optional: true },
          { name: "inner", number: 4, label: optional, type: message, typeName: ".encoding_test.Leaf", jsonName: "inner", oneofIndex: 0 },
          { name: "raw", number: 5, label: optional, type: bytes, jsonName: "raw", oneofIndex: 0 },
          { name: "self", number: 6, label: optional, type: message, typeName: ".encoding_test.Holder", jsonName: "self" },
        ],
        oneofDecl: [{ name: "choice" }, { name: "_opt" }],
      },
    ],
  });
  const registry = createFileRegistry(file, () => undefined);
  return { Leaf: registry.getMessage("encoding_test.Leaf")!, Holder: registry.getMessage("encoding_test.Holder")! };
}

describe("serializeMessage on shapes beyond today's contract", () => {
  const { Leaf, Holder } = testSchemas();
  const big = (seed: number) => new Uint8Array(LARGE_BYTES + 1000).map((_, i) => (i * seed) % 251);
  const same = (message: object) => {
    const read = fromBinary(Holder, serializeMessage(Holder, message));
    expect(equals(Holder, read, message as never)).toBe(true);
  };

  it("a sub-message on a lifted path and under a repeated field keeps its bytes in both places", () => {
    const leaf = create(Leaf, { data: big(3) });
    same(create(Holder, { single: leaf, many: [leaf, create(Leaf, { data: big(5) })] }));
  });

  it("optional bytes, a oneof's bytes member and a oneof's message member", () => {
    same(create(Holder, { opt: big(7), choice: { case: "raw", value: big(11) } }));
    same(create(Holder, { opt: new Uint8Array(0), choice: { case: "inner", value: create(Leaf, { data: big(13) }) } }));
  });

  it("a type that holds itself: what lies below the first level stays with toBinary", () => {
    same(create(Holder, { single: create(Leaf, { data: big(17) }), self: create(Holder, { single: create(Leaf, { data: big(19) }), opt: big(23) }) }));
  });

  it("a frozen message serializes as it is: nothing is written to the caller's objects", () => {
    const leaf = Object.freeze(create(Leaf, { data: big(29) }));
    const holder = Object.freeze(create(Holder, { single: leaf, choice: Object.freeze({ case: "inner" as const, value: leaf }) }));
    same(holder);
  });
});

describe("a lifted FULL step over a real loopback socket", () => {
  it("reaches the project's client as the message the handler sent", async () => {
    const step = fullStep(QWEN_VOCAB, "float32");
    const unimplemented = () => {
      throw new GrpcError(Status.UNIMPLEMENTED, "only StreamTrajectories here");
    };
    const server = new grpc.Server({ "grpc.max_send_message_length": 8 << 20 });
    addService(server, InferenceService, {
      streamTrajectories: async (requests, send) => {
        for await (const _request of requests) {
          await send(step);
          return;
        }
      },
      generate: unimplemented,
      score: unimplemented,
      getModelInfo: unimplemented,
    });
    const loopback = await listen(server);
    const client = createClient(InferenceService, loopback.address, { channelOptions: { "grpc.max_receive_message_length": 8 << 20 } });
    try {
      const call = client.streamTrajectories();
      await call.write({ requestId: "r-7" });
      const received = [];
      for await (const message of call) received.push(message);
      expect(received).toHaveLength(1);
      expect(equals(StreamTrajectoriesResponseSchema, received[0], step)).toBe(true);
    } finally {
      client.close();
      loopback.stop();
    }
  });
});

/** Debian's python3 first: a pyenv or venv python on PATH usually lacks the Debian modules. */
const python = ["/usr/bin/python3", "python3"].find((p) => spawnSync(p, ["-c", "import google.protobuf"], { stdio: "ignore" }).status === 0);

describe.skipIf(python === undefined)("serializeMessage read by Python's protobuf (no python3 with google.protobuf: apt-get install python3-protobuf)", () => {
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "lr-encoding-"));
    const built = spawnSync(join("node_modules", ".bin", "buf"), ["build", "-o", join(dir, "lightreasoner.binpb")], { encoding: "utf8" });
    if (built.status !== 0) throw new Error(`buf build: ${built.stderr}`);
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("parses a lifted FULL step into the message whose encoding is toBinary's, byte for byte", () => {
    const message = fullStep(QWEN_VOCAB, "float32");
    writeFileSync(join(dir, "lifted.bin"), serializeMessage(StreamTrajectoriesResponseSchema, message));
    const script = [
      "import sys",
      "from google.protobuf import descriptor_pb2, descriptor_pool, message_factory",
      "files = descriptor_pb2.FileDescriptorSet.FromString(open(sys.argv[1], 'rb').read())",
      "pool = descriptor_pool.DescriptorPool()",
      "[pool.Add(f) for f in files.file]",
      "d = pool.FindMessageTypeByName('lightreasoner.v1.StreamTrajectoriesResponse')",
      "cls = message_factory.GetMessageClass(d) if hasattr(message_factory, 'GetMessageClass') else message_factory.MessageFactory(pool).GetPrototype(d)",
      "m = cls.FromString(open(sys.argv[2], 'rb').read())",
      "open(sys.argv[3], 'wb').write(m.SerializeToString(deterministic=True))",
    ].join("\n");
    const ran = spawnSync(python!, ["-c", script, join(dir, "lightreasoner.binpb"), join(dir, "lifted.bin"), join(dir, "python.bin")], { encoding: "utf8" });
    expect(ran.status, ran.stderr).toBe(0);
    expect(readFileSync(join(dir, "python.bin")).equals(Buffer.from(toBinary(StreamTrajectoriesResponseSchema, message)))).toBe(true);
  });
});
