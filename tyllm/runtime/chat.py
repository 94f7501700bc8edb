"""`tyllm run --chat`: a conversation on a text tree. Each turn's prompt is the whole
conversation through the chat template; the conversation so far is kept as a prefix
(`Session.keep_prefix`), so a turn computes only its own new tokens."""

from collections.abc import Callable

from tyllm.errors import TyllmError
from tyllm.text import load_tokenizer


def turn_ids(tokenizer, messages: list[dict]) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                              tokenize=True, return_dict=True)["input_ids"])


def chat(session, read_line: Callable[[], str | None], write: Callable[[str], None],
         max_new_tokens: int, system: str | None = None) -> int:
    """Answers each line `read_line` gives until it gives None; returns the turns answered."""
    if hasattr(session, "generate_multimodal"):
        raise TyllmError(f"{session.tree.root} is a VLM tree: --chat takes text trees; use "
                         f"--prompt with --image for a VLM.")
    tokenizer = load_tokenizer(session.tree.root)
    if not tokenizer.chat_template:
        raise TyllmError(f"{session.tree.root}'s tokenizer has no chat template, which --chat "
                         f"needs: use --prompt for single prompts.")
    messages = [{"role": "system", "content": system}] if system else []
    kept, turns = None, 0
    while (line := read_line()) is not None:
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line.strip()})
        ids = turn_ids(tokenizer, messages)
        reuse = kept if kept is not None and tuple(ids[:len(kept.ids)]) == kept.ids else None
        out = session.generate(ids, max_new_tokens, prefix=reuse)
        answer = tokenizer.decode(out, skip_special_tokens=True)
        write(answer)
        messages.append({"role": "assistant", "content": answer})
        if kept is not None:
            session.drop_prefix(kept)
        kept = session.keep_prefix(ids + out[:-1], from_slot=0)  # what slot 0 holds now
        turns += 1
    return turns
