# syntax=docker/dockerfile:1.7
# The inference service's image (expert + amateur on ONNX Runtime), built from the repository
# root:
#   docker build -f deploy/docker/inference.Dockerfile -t lightreasoner-inference:cpu .
#   docker build -f deploy/docker/inference.Dockerfile --target gpu -t lightreasoner-inference:gpu .
# Stages: `deps` installs the production dependencies once (CPU ONNX Runtime, as shipped in the
# npm package), `deps-gpu` the same with ONNX Runtime's CUDA 12 provider libraries fetched by
# its install script, `gpu` and `cpu` (the default, last) are the runtime images: no compiler,
# no dev dependencies, no npm cache, a numeric non-root user, a gRPC health check.

ARG NODE_IMAGE=node:20-bookworm-slim
# ONNX Runtime 1.30's CUDA provider is built for CUDA 12 with cuDNN 9.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# .npmrc skips ONNX Runtime's CUDA download; optional dependencies (tfjs-node-gpu) are the
# trainer's, not ours.
RUN npm ci --omit=dev --omit=optional --no-audit --no-fund && npm cache clean --force

FROM ${NODE_IMAGE} AS deps-gpu
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# The environment variable wins over .npmrc: the install script fetches the CUDA provider.
ENV ONNXRUNTIME_NODE_INSTALL=cuda12
RUN npm ci --omit=dev --omit=optional --no-audit --no-fund && npm cache clean --force \
 && test -f node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so

# What both runtime images hold besides node_modules: the TypeScript sources tsx runs, the
# built-in expert/amateur pair and the health probe.
FROM scratch AS app
COPY package.json tsconfig.json /app/
COPY bin /app/bin
COPY cli /app/cli
COPY core /app/core
COPY services /app/services
COPY world /app/world
COPY models/expert /app/models/expert
COPY models/amateur /app/models/amateur
COPY deploy/docker/grpc-health-probe.mjs /app/deploy/docker/grpc-health-probe.mjs

FROM ${CUDA_IMAGE} AS gpu
ENV NODE_ENV=production
# Each step's large outputs (the [batch, vocabulary] log-probabilities) reuse heap memory
# instead of fresh pages, and V8 collects garbage on the main thread, between model steps
# (ENTRYPOINT): services/inference/src/model/process-settings.ts.
ENV GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=2147483648
COPY --from=deps-gpu /usr/local/bin/node /usr/local/bin/node
RUN groupadd --gid 10001 lightreasoner && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin lightreasoner
WORKDIR /app
COPY --from=deps-gpu /app/node_modules /app/node_modules
COPY --from=app /app /app
USER 10001:10001
EXPOSE 50051 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "/app/deploy/docker/grpc-health-probe.mjs", "--addr", "127.0.0.1:50051", "--service", "lightreasoner.v1.InferenceService"]
ENTRYPOINT ["node", "--single-threaded-gc", "/app/bin/lightreasoner.mjs"]
# --execution-provider cuda fails at start when CUDA cannot be used, rather than falling back
# to the CPU unseen.
CMD ["serve", "inference", "--host", "0.0.0.0", "--expert", "/app/models/expert", "--amateur", "/app/models/amateur", "--port", "50051", "--metrics-port", "9464", "--execution-provider", "cuda"]

FROM ${NODE_IMAGE} AS cpu
ENV NODE_ENV=production
# Each step's large outputs (the [batch, vocabulary] log-probabilities) reuse heap memory
# instead of fresh pages, and V8 collects garbage on the main thread, between model steps
# (ENTRYPOINT): services/inference/src/model/process-settings.ts.
ENV GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=2147483648
RUN groupadd --gid 10001 lightreasoner && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin lightreasoner
WORKDIR /app
COPY --from=deps /app/node_modules /app/node_modules
COPY --from=app /app /app
USER 10001:10001
EXPOSE 50051 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "/app/deploy/docker/grpc-health-probe.mjs", "--addr", "127.0.0.1:50051", "--service", "lightreasoner.v1.InferenceService"]
ENTRYPOINT ["node", "--single-threaded-gc", "/app/bin/lightreasoner.mjs"]
CMD ["serve", "inference", "--host", "0.0.0.0", "--expert", "/app/models/expert", "--amateur", "/app/models/amateur", "--port", "50051", "--metrics-port", "9464", "--execution-provider", "cpu"]
