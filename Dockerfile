# The proxy in a container. compose.yaml runs it with host networking and the Docker socket
# mounted, so backend_url: http://localhost:8080 reaches the model containers as in the seed.
FROM denoland/deno:2.9.6
WORKDIR /app
COPY deno.json deno.lock ./
COPY main.ts ./
COPY lib ./lib
COPY routes ./routes
RUN deno cache --frozen main.ts
COPY config.yml ./
# The default job store (Deno KV) lives here: keep it across container rebuilds.
VOLUME /app/data
CMD ["deno", "task", "start"]
