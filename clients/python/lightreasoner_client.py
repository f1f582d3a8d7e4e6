#!/usr/bin/env python3
"""A second, independent client of the LightReasoner inference service, in Python.

It shares no code with the TypeScript services: the message classes are built at run time
from a FileDescriptorSet compiled straight from proto/ (`npx buf build -o
lightreasoner.binpb`, or `protoc --include_imports --descriptor_set_out=...`), and the calls
go through grpcio's generic stubs. Debian packages are enough: python3-grpcio and
python3-protobuf.

Run: python3 lightreasoner_client.py --target HOST:PORT --descriptors lightreasoner.binpb \
         --prompt "What is 2 + 3?" [--encoding full|sparse] [--max-new-tokens N] [--seed S]

It asks GetModelInfo, streams one trajectory over StreamTrajectories and prints one JSON
object per line: "info", "started", one "step" per token, "finished". For FULL steps it also
checks the contract on its own: both rows are normalised log-probabilities over vocab_size
tokens, and it reports KL(expert || amateur) and the expert's alpha-plausible set computed
here, in float64, the way the method defines them.
"""

import argparse
import json
import math
import struct
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

SERVICE = "lightreasoner.v1.InferenceService"
# The method's smoothing of both probabilities inside the KL (proto: DistributionRequest).
PROBABILITY_SMOOTHING = 1e-12


def load_messages(descriptor_set_path):
    """Message classes for every message in the FileDescriptorSet, by full name."""
    with open(descriptor_set_path, "rb") as f:
        file_set = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for file_proto in file_set.file:
        pool.Add(file_proto)
    classes = {}

    def message_class(descriptor):
        # protobuf >= 4.22 has GetMessageClass; Debian bookworm's 4.21 has the factory.
        if hasattr(message_factory, "GetMessageClass"):
            return message_factory.GetMessageClass(descriptor)
        return message_factory.MessageFactory(pool).GetPrototype(descriptor)

    def visit(descriptor):
        classes[descriptor.full_name] = message_class(descriptor)
        for nested in descriptor.nested_types:
            visit(nested)

    for file_proto in file_set.file:
        file_descriptor = pool.FindFileByName(file_proto.name)
        for descriptor in file_descriptor.message_types_by_name.values():
            visit(descriptor)
    return classes, pool


def enum_value(pool, enum_name, value_name):
    return pool.FindEnumTypeByName(enum_name).values_by_name[value_name].number


def enum_name(pool, enum_name_, number):
    return pool.FindEnumTypeByName(enum_name_).values_by_number[number].name


def decode_full(data, dtype_name):
    """FULL bytes to floats: little-endian float32 or float16."""
    if dtype_name == "FLOAT_DTYPE_FLOAT16":
        return list(struct.unpack("<%de" % (len(data) // 2), data))
    return list(struct.unpack("<%df" % (len(data) // 4), data))


def log_sum_exp(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def kl_divergence(expert_logp, amateur_logp):
    total = 0.0
    for le, la in zip(expert_logp, amateur_logp):
        pe = math.exp(le)
        if pe == 0.0:
            continue
        total += pe * (math.log(pe + PROBABILITY_SMOOTHING) - math.log(math.exp(la) + PROBABILITY_SMOOTHING))
    return total


def plausible_set(expert_logp, alpha):
    threshold = math.log(alpha) + max(expert_logp)
    return [token for token, lp in enumerate(expert_logp) if lp >= threshold]


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", required=True, help="host:port of an inference server")
    parser.add_argument("--descriptors", required=True, help="FileDescriptorSet compiled from proto/")
    parser.add_argument("--prompt", required=True, help="raw text prompt (no chat template)")
    parser.add_argument("--encoding", choices=["full", "sparse"], default="full")
    parser.add_argument("--alpha", type=float, default=0.2, help="plausibility threshold")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for the whole call")
    args = parser.parse_args(argv)

    messages, pool = load_messages(args.descriptors)
    Msg = lambda name: messages["lightreasoner.v1." + name]  # noqa: E731

    with grpc.insecure_channel(args.target) as channel:
        get_model_info = channel.unary_unary(
            "/%s/GetModelInfo" % SERVICE,
            request_serializer=Msg("GetModelInfoRequest").SerializeToString,
            response_deserializer=Msg("GetModelInfoResponse").FromString,
        )
        info = get_model_info(Msg("GetModelInfoRequest")(), timeout=args.timeout)
        emit({"event": "info", "vocab_size": info.vocab_size, "expert": info.expert.name, "amateur": info.amateur.name, "adapter_version": info.adapter_version})

        distributions = Msg("DistributionRequest")(encoding=enum_value(pool, "lightreasoner.v1.DistributionEncoding", "DISTRIBUTION_ENCODING_" + args.encoding.upper()))
        if args.encoding == "full":
            distributions.dtype = enum_value(pool, "lightreasoner.v1.FloatDtype", "FLOAT_DTYPE_FLOAT32")
        else:
            distributions.alpha = args.alpha
        request = Msg("StreamTrajectoriesRequest")(
            request_id="python-1",
            start=Msg("TrajectoryRequest")(
                prompt=Msg("Prompt")(text=args.prompt),
                sampling=Msg("SamplingParams")(temperature=args.temperature, seed=args.seed, max_new_tokens=args.max_new_tokens),
                distributions=distributions,
            ),
        )
        stream_trajectories = channel.stream_stream(
            "/%s/StreamTrajectories" % SERVICE,
            request_serializer=Msg("StreamTrajectoriesRequest").SerializeToString,
            response_deserializer=Msg("StreamTrajectoriesResponse").FromString,
        )
        # One request, then half-close: the server finishes the trajectory and ends the call.
        for response in stream_trajectories(iter([request]), timeout=args.timeout):
            kind = response.WhichOneof("event")
            if kind == "started":
                s = response.started
                emit({"event": "started", "request_id": response.request_id, "prompt_token_ids": list(s.prompt_token_ids), "seed": s.seed, "adapter_version": s.adapter_version})
            elif kind == "step":
                emit(describe_step(response.step, info.vocab_size, args.alpha, pool))
            elif kind == "finished":
                f = response.finished
                emit({
                    "event": "finished",
                    "finish_reason": enum_name(pool, "lightreasoner.v1.FinishReason", f.end.finish_reason),
                    "completion_tokens": f.end.usage.completion_tokens,
                    "prompt_tokens": f.end.usage.prompt_tokens,
                    "completion_text": f.completion_text,
                })
    return 0


def describe_step(step, vocab_size, alpha, pool):
    # The chosen token, its position and both distributions sit in the step's ScoredPosition.
    scored = step.scored
    out = {"event": "step", "step": step.step, "position": scored.position, "token_id": scored.token_id, "token_text": step.token_text}
    kind = scored.WhichOneof("distributions")
    out["encoding"] = kind
    if kind == "full":
        dtype = enum_name(pool, "lightreasoner.v1.FloatDtype", scored.full.dtype)
        expert = decode_full(scored.full.expert_log_probs, dtype)
        amateur = decode_full(scored.full.amateur_log_probs, dtype)
        out["expert"] = {"size": len(expert), "log_sum_exp": log_sum_exp(expert), "chosen_log_prob": expert[scored.token_id]}
        out["amateur"] = {"size": len(amateur), "log_sum_exp": log_sum_exp(amateur)}
        out["kl"] = kl_divergence(expert, amateur)
        out["plausible_token_ids"] = plausible_set(expert, alpha)
        out["vocab_size"] = vocab_size
    elif kind == "sparse":
        sp = scored.sparse
        out["kl"] = sp.kl_divergence
        out["plausible_token_ids"] = list(sp.plausible_token_ids)
        out["expert"] = {"plausible_log_probs": list(sp.plausible_expert_log_probs)}
        out["amateur"] = {"plausible_log_probs": list(sp.plausible_amateur_log_probs)}
    return out


if __name__ == "__main__":
    try:
        sys.exit(main())
    except grpc.RpcError as err:
        sys.stderr.write("lightreasoner_client: %s: %s\n" % (err.code().name, err.details()))
        sys.exit(1)
