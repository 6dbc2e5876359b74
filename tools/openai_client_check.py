#!/usr/bin/env python3
"""Talks to a running `scotd serve` through the official `openai` Python client: the
model list, a chat completion, a streamed chat completion (its deltas must concatenate
to the whole greedy reply), a completion with a stop string, n > 1 with a seed, and an
unknown model's error. Prints "openai client: all checks passed" when every check holds.

    python tools/openai_client_check.py --base-url http://127.0.0.1:8000/v1 --model NAME
"""

import argparse

import openai


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", required=True)
    args = parser.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key="unused", max_retries=0, timeout=300)

    models = [m.id for m in client.models.list().data]
    assert models == [args.model], models

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    whole = client.chat.completions.create(model=args.model, messages=messages, max_tokens=24, temperature=0)
    reply = whole.choices[0].message.content
    assert reply, whole
    assert whole.choices[0].finish_reason in ("stop", "length"), whole
    assert whole.usage.completion_tokens > 0 and whole.usage.prompt_tokens > 0, whole.usage
    print(f"chat: {reply!r}")

    stream = client.chat.completions.create(
        model=args.model, messages=messages, max_tokens=24, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == reply, (pieces, reply)
    assert finish == whole.choices[0].finish_reason, finish
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens, usage
    print(f"streamed in {len(pieces)} chunks")

    completion = client.completions.create(
        model=args.model, prompt="One, two, three, four,", max_tokens=16, temperature=0, stop=[","],
    )
    text = completion.choices[0].text
    assert "," not in text and completion.choices[0].finish_reason == "stop", completion
    print(f"completion: {text!r}")

    sampled = [
        [c.message.content for c in client.chat.completions.create(
            model=args.model, messages=messages, max_tokens=12, temperature=1.0, n=2, seed=3,
        ).choices]
        for _ in range(2)
    ]
    assert sampled[0] == sampled[1] and len(sampled[0]) == 2, sampled
    print(f"n=2 seeded: {sampled[0]!r}")

    try:
        client.chat.completions.create(model="no-such-model", messages=messages, max_tokens=4)
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError as e:
        assert "does not exist" in str(e), e
    print("openai client: all checks passed")


if __name__ == "__main__":
    main()
