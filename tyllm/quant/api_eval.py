"""Greedy next-token accuracy of a model behind an OpenAI-compatible API (`tyllm serve`,
`vllm serve`), on the same held-out blocks and probe positions as the local models.

Each probe is a `/v1/completions` request whose prompt is the token ids of the prefix, with
max_tokens=1 and temperature 0; the returned text is compared with the true next token's text,
decoded after the prefix as a server's detokenizer does (a SentencePiece word's leading space,
a multi-byte character split over tokens).
"""

from dataclasses import dataclass

from tyllm.errors import TyllmError
from tyllm.quant.scores import Score, probe_positions


@dataclass(frozen=True)
class ApiTarget:
    base_url: str  # e.g. http://127.0.0.1:8000/v1
    model: str  # the served model name
    tokenizer: object  # the model's tokenizer: decodes the true next tokens
    api_key: str = "EMPTY"
    timeout_s: float = 300.0


def next_text(client, target: ApiTarget, prefix: list[int]) -> str:
    import openai

    try:
        out = client.completions.create(model=target.model, prompt=prefix, max_tokens=1,
                                        temperature=0.0)
    except openai.APITimeoutError as e:
        raise TyllmError(f"{target.base_url} did not answer within {target.timeout_s} s; the "
                         f"server is overloaded or stuck.") from e
    except openai.APIConnectionError as e:
        raise TyllmError(f"Cannot reach {target.base_url}: start the server first (`tyllm serve "
                         f"TREE` or `vllm serve MODEL`) and pass its /v1 URL.") from e
    except openai.APIStatusError as e:
        raise TyllmError(f"{target.base_url} refused the evaluation request ({e.status_code}: "
                         f"{e.message}); check --api-model and --api-key.") from e
    return out.choices[0].text


def next_token_text(tokenizer, block: list[int], i: int) -> str:
    """The text block[i + 1] adds after block[: i + 1]."""
    before = tokenizer.decode(block[: i + 1])
    return tokenizer.decode(block[: i + 2])[len(before):]


def served_accuracy(target: ApiTarget, blocks: list[list[int]], stride: int) -> Score:
    import openai

    client = openai.OpenAI(base_url=target.base_url, api_key=target.api_key, max_retries=0,
                           timeout=target.timeout_s)
    hits = probes = 0
    for block in blocks:
        for i in probe_positions(block, stride):
            expected = next_token_text(target.tokenizer, block, i)
            hits += next_text(client, target, block[: i + 1]) == expected
            probes += 1
    return Score(f"served {target.model} ({target.base_url})", perplexity=None, tokens=0,
                 accuracy=hits / probes if probes else None, probes=probes)
