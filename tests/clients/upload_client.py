"""Sends one chat request with a prompt of `size` bytes through a real Python client, which writes
the whole body before it reads the answer, and prints what the client got.

Usage: upload_client.py CLIENT BASE_URL MODEL SIZE, CLIENT one of openai, httpx, urllib.
Prints {"status": int | null, "code": str | null, "error": str | null}: the answer's status and
its OpenAI error code, or the client's own error (a reset, a broken pipe) when it got no answer.
"""

import json
import sys
import urllib.error
import urllib.request

import httpx
import openai


def answer(status, text):
    try:
        code = json.loads(text)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    return {"status": status, "code": code, "error": None}


def main():
    client, base_url, model, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    messages = [{"role": "user", "content": "x" * size}]
    body = json.dumps({"model": model, "messages": messages}).encode()
    url = f"{base_url}/v1/chat/completions"
    headers = {"content-type": "application/json"}
    try:
        if client == "openai":
            api = openai.OpenAI(
                base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=60
            )
            try:
                api.chat.completions.create(model=model, messages=messages)
                result = {"status": 200, "code": None, "error": None}
            except openai.APIStatusError as err:
                result = answer(err.status_code, err.response.text)
        elif client == "httpx":
            res = httpx.post(url, content=body, headers=headers, timeout=60)
            result = answer(res.status_code, res.text)
        elif client == "urllib":
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=60) as res:
                    result = answer(res.status, res.read().decode())
            except urllib.error.HTTPError as err:
                result = answer(err.code, err.read().decode())
        else:
            raise ValueError(f"unknown client {client}")
    except Exception as err:  # the client's own failure is the result
        result = {"status": None, "code": None, "error": f"{type(err).__name__}: {err}"}
    print(json.dumps(result))


main()
