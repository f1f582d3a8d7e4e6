# syntax=docker/dockerfile:1.7
# The trainer service's image (TensorFlow.js LoRA training on KL-selected steps), built from
# the repository root:
#   docker build -f deploy/docker/trainer.Dockerfile -t lightreasoner-trainer:cpu .
#   docker build -f deploy/docker/trainer.Dockerfile --target gpu -t lightreasoner-trainer:gpu .
# `cpu` (the default, last) trains on tfjs's WebAssembly backend and needs nothing native.
# `gpu` adds @tensorflow/tfjs-node-gpu (an optional dependency whose install script fetches
# libtensorflow; a compiler is at hand in `deps-gpu` in case its binding must be built) on a
# CUDA 11 / cuDNN 8 base, which is what that libtensorflow (2.9) was built for. Samples,
# checkpoints and adapters live under /var/lib/lightreasoner: mount a volume there.

ARG NODE_IMAGE=node:20-bookworm-slim
ARG CUDA_IMAGE=nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev --omit=optional --no-audit --no-fund && npm cache clean --force

FROM ${NODE_IMAGE} AS deps-gpu
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# npm skips an optional dependency that fails to install; here its absence must fail the build.
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force \
 && node -e "require.resolve('@tensorflow/tfjs-node-gpu')"

FROM scratch AS app
COPY package.json tsconfig.json /app/
COPY bin /app/bin
COPY cli /app/cli
COPY core /app/core
COPY services /app/services
COPY world /app/world
COPY models/expert /app/models/expert
COPY deploy/docker/grpc-health-probe.mjs /app/deploy/docker/grpc-health-probe.mjs

FROM ${CUDA_IMAGE} AS gpu
ENV NODE_ENV=production
# Fail at start if the GPU backend cannot load, instead of training on the CPU unseen.
ENV LR_TFJS_BACKEND=node-gpu
COPY --from=deps-gpu /usr/local/bin/node /usr/local/bin/node
RUN groupadd --gid 10001 lightreasoner && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin lightreasoner \
 && mkdir -p /var/lib/lightreasoner && chown 10001:10001 /var/lib/lightreasoner
WORKDIR /app
COPY --from=deps-gpu /app/node_modules /app/node_modules
COPY --from=app /app /app
USER 10001:10001
VOLUME ["/var/lib/lightreasoner"]
EXPOSE 50052 9465
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "/app/deploy/docker/grpc-health-probe.mjs", "--addr", "127.0.0.1:50052", "--service", "lightreasoner.v1.TrainerService"]
ENTRYPOINT ["node", "/app/bin/lightreasoner.mjs"]
CMD ["serve", "trainer", "--host", "0.0.0.0", "--inference", "dns:///inference:50051", "--expert", "/app/models/expert", "--port", "50052", "--metrics-port", "9465", "--runs-dir", "/var/lib/lightreasoner/runs"]

FROM ${NODE_IMAGE} AS cpu
ENV NODE_ENV=production
ENV LR_TFJS_BACKEND=wasm
RUN groupadd --gid 10001 lightreasoner && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin lightreasoner \
 && mkdir -p /var/lib/lightreasoner && chown 10001:10001 /var/lib/lightreasoner
WORKDIR /app
COPY --from=deps /app/node_modules /app/node_modules
COPY --from=app /app /app
USER 10001:10001
VOLUME ["/var/lib/lightreasoner"]
EXPOSE 50052 9465
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "/app/deploy/docker/grpc-health-probe.mjs", "--addr", "127.0.0.1:50052", "--service", "lightreasoner.v1.TrainerService"]
ENTRYPOINT ["node", "/app/bin/lightreasoner.mjs"]
CMD ["serve", "trainer", "--host", "0.0.0.0", "--inference", "dns:///inference:50051", "--expert", "/app/models/expert", "--port", "50052", "--metrics-port", "9465", "--runs-dir", "/var/lib/lightreasoner/runs"]
