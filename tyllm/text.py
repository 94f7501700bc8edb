"""Text in and out of a tree, with the tokenizer files copied into it at compile time."""

from pathlib import Path

from transformers import PreTrainedTokenizerFast


def load_tokenizer(root: Path) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(str(root))


def encode_prompt(root: Path, prompt: str, chat: bool = True) -> list[int]:
    tokenizer = load_tokenizer(root)
    if chat and tokenizer.chat_template:
        messages = [{"role": "user", "content": prompt}]
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                  tokenize=True, return_dict=True)["input_ids"])
    return tokenizer.encode(prompt)


def decode(root: Path, ids: list[int]) -> str:
    return load_tokenizer(root).decode(ids, skip_special_tokens=True)
