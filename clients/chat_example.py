"""Talk to `openr serve` with the unmodified OpenAI Python SDK.

    openr serve &                     # in another shell
    python clients/chat_example.py --question "Compute (12 + 7) * 3."
"""

from __future__ import annotations

import argparse
import os

from openai import OpenAI


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="the server's /v1 URL")
    parser.add_argument("--api-key", default=os.environ.get("OPENR_API_KEY", "none"),
                        help="the server's --api-key (default: $OPENR_API_KEY)")
    parser.add_argument("--model", default=None, help="model name (default: the first one the server lists)")
    parser.add_argument("--question", default="Compute ((12 + 7) * 3) - 5.")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    client = OpenAI(base_url=args.base_url, api_key=args.api_key)
    model = args.model or client.models.list().data[0].id
    messages = [{"role": "user", "content": args.question}]

    reply = client.chat.completions.create(model=model, messages=messages, max_tokens=args.max_tokens, temperature=0)
    print(f"[{model}] {reply.choices[0].message.content}")
    print(f"usage: {reply.usage.prompt_tokens} prompt + {reply.usage.completion_tokens} completion tokens")

    print("streamed: ", end="", flush=True)
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=args.max_tokens,
                                            temperature=0, stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
    print()


if __name__ == "__main__":
    main()
