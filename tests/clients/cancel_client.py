"""Sends chat requests with real Python clients and cancels them, as an application would.

One JSON scenario per line on stdin, one JSON result per line on stdout:
  {"client": "openai" | "httpx" | "aiohttp", "base_url": "http://127.0.0.1:8888",
   "body": {...chat body...}, "cancel_ms": 50}
The request runs in an asyncio task that is cancelled `cancel_ms` after it started (what
`asyncio.wait_for`, a UI's Stop button or a closed tab do). The client object is made before
the clock starts, so the time measures the request alone.
Result: {"outcome": "cancelled" | "finished", "status": int | null, "error": str | null}.
"""

import asyncio
import json
import sys

import aiohttp
import httpx
import openai


async def with_openai(base_url, body):
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)

    async def run():
        extra = {k: v for k, v in body.items() if k not in ("model", "messages", "stream")}
        if body.get("stream"):
            stream = await client.chat.completions.create(
                model=body["model"], messages=body["messages"], stream=True, extra_body=extra
            )
            async for _ in stream:
                pass
        else:
            await client.chat.completions.create(
                model=body["model"], messages=body["messages"], extra_body=extra
            )
        return 200

    return run, client.close


async def with_httpx(base_url, body):
    client = httpx.AsyncClient(timeout=None)
    url = f"{base_url}/v1/chat/completions"

    async def run():
        if body.get("stream"):
            async with client.stream("POST", url, json=body) as response:
                async for _ in response.aiter_raw():
                    pass
                return response.status_code
        response = await client.post(url, json=body)
        return response.status_code

    return run, client.aclose


async def with_aiohttp(base_url, body):
    session = aiohttp.ClientSession()
    url = f"{base_url}/v1/chat/completions"

    async def run():
        async with session.post(url, json=body) as response:
            if body.get("stream"):
                async for _ in response.content.iter_any():
                    pass
            else:
                await response.read()
            return response.status

    return run, session.close


CLIENTS = {"openai": with_openai, "httpx": with_httpx, "aiohttp": with_aiohttp}


async def scenario(spec):
    run, close = await CLIENTS[spec["client"]](spec["base_url"], spec["body"])
    task = asyncio.create_task(run())
    done, _ = await asyncio.wait({task}, timeout=spec["cancel_ms"] / 1000)
    result = {"outcome": "finished", "status": None, "error": None}
    if done:
        try:
            result["status"] = task.result()
        except Exception as err:  # noqa: BLE001 - reported to the test as text
            result["error"] = f"{type(err).__name__}: {err}"
    else:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        result["outcome"] = "cancelled"
    await close()
    return result


async def main():
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        result = await scenario(json.loads(line))
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
