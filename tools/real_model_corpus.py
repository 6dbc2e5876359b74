"""The text corpus and chat conversations for the real-model fixtures (shared by
tools/make_real_model_goldens.py and tools/verify_gguf_conversion.py).

GSM8K questions are read from the GSM8K test split (MIT licence); everything else is
written here. Each case is chosen to exercise one tokenizer behaviour, noted beside it.
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_GSM8K = os.path.join(HERE, "..", "..", "shared", "data", "gsm8k", "test.jsonl")


def gsm8k_questions(path, n=10):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line)["question"])
            if len(out) == n:
                break
    if len(out) < n:
        raise ValueError(f"{path}: only {len(out)} questions")
    return out


HANDWRITTEN = [
    # unicode
    "Café naïve résumé façade Ångström",  # accents (NFC; Qwen normalises NFC)
    "e\u0301 vs \u00e9",  # combining accent vs precomposed: Qwen's NFC makes them equal
    "你好，世界！这是一个测试。",  # CJK + full-width punctuation
    "日本語のテキストとカタカナ",  # Japanese
    "Emoji: 😀👍🏽🇺🇸 and ❤️",  # 4-byte UTF-8, skin tone modifier, flag, variation selector
    "Ελληνικά и русский текст",  # Greek, Cyrillic
    # numbers
    "70,000",
    "14{,}916",  # LaTeX thousands separator
    "3.14",
    "-5",
    "He paid $1,234.56 for 12 items, i.e. 102.88 each.",
    "x² + ½ = 2^10 - 1024",  # superscript and vulgar fraction (\p{N}), powers
    "costs  5 dollars",  # two spaces before a digit (SmolLM2: Digits split changes this)
    "\n\n1. first\n2. second",  # newlines before list numbers
    "Step 1: 48 / 2 = 24\nStep 2: 48 + 24 = 72",  # GSM8K-style arithmetic
    # whitespace
    "a  b   c    d",
    "\tindented\twith\ttabs",
    "line1\nline2\n\nline4\n",
    "  leading and trailing  ",
    "windows\r\nline endings\r\n",
    " ",
    "def f(x):\n    return x ** 2  # square\n",
    # contractions and case
    "I'm sure they'll say it's fine, don't you think? WE'VE SEEN IT.",
    # reasoning format
    "<think>\nLet me compute 12 * 7 = 84.\n</think>\n\nThe answer is \\boxed{84}.",
    "\\boxed{42}",
    # special tokens in text
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "end of one<|endoftext|>start of next",
    # empty
    "",
]


def corpus(gsm8k_path=DEFAULT_GSM8K):
    return gsm8k_questions(gsm8k_path, 10) + HANDWRITTEN


# Conversations for chat_templates.json. "think" cases matter for Qwen3's template, which
# moves <think>…</think> of earlier assistant turns out of the rendered text.
CONVERSATIONS = [
    {
        "name": "system_user",
        "messages": [
            {"role": "system", "content": "You are a careful math tutor."},
            {"role": "user", "content": "What is 12 * 7?"},
        ],
    },
    {"name": "user_only", "messages": [{"role": "user", "content": "Hello!"}]},
    {
        "name": "multi_turn",
        "messages": [
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "The capital of France is Paris."},
            {"role": "user", "content": "And of Italy?"},
        ],
    },
    {
        "name": "multi_turn_think",
        "messages": [
            {"role": "system", "content": "Think step by step inside <think></think>, then give \\boxed{N}."},
            {"role": "user", "content": "Tom has 3 apples and buys 5 more. How many?"},
            {"role": "assistant", "content": "<think>\n3 + 5 = 8\n</think>\n\nTom has \\boxed{8} apples."},
            {"role": "user", "content": "And if he eats 2?"},
        ],
    },
    {
        "name": "assistant_last_think",
        "messages": [
            {"role": "user", "content": "What is 6 * 7?"},
            {"role": "assistant", "content": "<think>\n6 * 7 = 42\n</think>\n\n\\boxed{42}"},
        ],
    },
]

# Prompts for smollm2_generation.json: 3 math, 3 non-math, one user turn each.
GENERATION_PROMPTS = [
    {"kind": "math", "messages": [{"role": "user", "content": "What is 12 * 7?"}]},
    {
        "kind": "math",
        "messages": [
            {
                "role": "user",
                "content": "A baker makes 24 muffins. She sells 15 and then bakes 10 more. "
                "How many muffins does she have now?",
            }
        ],
    },
    {"kind": "math", "messages": [{"role": "user", "content": "If a train travels 60 miles per hour for 3 hours, how far does it go?"}]},
    {"kind": "chat", "messages": [{"role": "user", "content": "Hello!"}]},
    {"kind": "chat", "messages": [{"role": "user", "content": "What is the capital of France?"}]},
    {"kind": "chat", "messages": [{"role": "user", "content": "Tell me a joke."}]},
]
