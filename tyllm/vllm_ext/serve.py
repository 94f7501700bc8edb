"""`tyllm serve MODEL_OR_TREE [tyllm flags] [vLLM serve flags]`: vLLM's OpenAI server on the dies.

MODEL_OR_TREE is a HF checkpoint folder, LLM or VLM (compiled on engine start unless the tree
exists; a VLM at `--image-sizes`) or a compiled `<N>die` tree (served as compiled: die count,
max_model_len and seq lens come from it). `--speculative-config` may name a compiled tree as
its draft model.
Everything after it that is not a tyllm flag goes to vLLM's own `serve` parser, so `--port`,
`--api-key`, `--max-num-seqs`, `--served-model-name`... mean what they mean for `vllm serve`.
The platform plugin routes the engine to the EdgeX executor; this module only builds the args.
"""

import argparse
import json
from pathlib import Path

from tyllm.errors import TyllmError
from tyllm.runtime.worker_kinds import DISTRIBUTED, RUN_WORKER_NAMES
from tyllm.tools.arg_types import int_list
from tyllm.vllm_ext.artifacts import CONFIG_KEY

USAGE = "tyllm serve MODEL_OR_TREE [--artifacts-path P] [--seq-len-list 1,8] " \
        "[--batch-sizes 1,4] [--image-sizes 448x448] " \
        "[--workers threads|processes|distributed] " \
        "[vLLM serve flags]"


def tyllm_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tyllm serve", usage=USAGE, add_help=False)
    p.add_argument("--artifacts-path", help="tree to load, or to compile into if absent")
    p.add_argument("--seq-len-list", type=int_list, help="graph lengths when compiling, e.g. 1,8")
    p.add_argument("--batch-sizes", type=int_list,
                   help="decode batch sizes when compiling (default: cover --max-num-seqs)")
    p.add_argument("--image-sizes",
                   help="a VLM checkpoint's compiled image sizes, e.g. 540x960,720x1280")
    p.add_argument("--workers", choices=RUN_WORKER_NAMES, default="threads",
                   help="run dies as threads of the engine, as one process each, or as ranks "
                        "of the torchrun job this command runs in (distributed: start it on "
                        "every host; rank 0 serves, the other ranks run their die)")
    return p


def options_from_flags(known: argparse.Namespace) -> dict:
    options = {"workers": known.workers}
    if known.artifacts_path:
        options["artifacts_path"] = known.artifacts_path
    if known.seq_len_list:
        options["seq_len_list"] = known.seq_len_list
    if known.batch_sizes:
        options["batch_sizes"] = known.batch_sizes
    if known.image_sizes:
        options["image_sizes"] = known.image_sizes
    return options


def engine_argv(model: Path, options: dict, rest: list[str]) -> tuple[list[str], dict]:
    """vLLM serve arguments for `model`: a tree brings its own shape, where no flag names it
    (refuse_flags_against_tree has refused flags that contradict it)."""
    from tyllm.vllm_ext.tree_model import engine_kwargs, is_tree

    argv = ["--model", str(model)]
    if is_tree(model):
        kwargs, typed = engine_kwargs(model, options["workers"]), tree_flags(rest)
        argv = ["--model", kwargs["model"]]
        if typed.dies is None:
            argv += ["--tensor-parallel-size", str(kwargs["tensor_parallel_size"])]
        if typed.max_kv is None:
            argv += ["--max-model-len", str(kwargs["max_model_len"])]
        options = {**kwargs["additional_config"][CONFIG_KEY], **options}
    if not any(a.split("=")[0] in ("--served-model-name", "--served_model_name") for a in rest):
        argv += ["--served-model-name", str(model)]
    return argv + rest, options


SPECULATIVE_FLAGS = ("--speculative-config", "--speculative_config", "-sc")


def served_draft(rest: list[str]) -> list[str]:
    """A compiled tree named as the draft model in `--speculative-config` becomes its served
    folder (tree_model.draft_config), which vLLM can read; anything else passes unchanged."""
    from tyllm.vllm_ext.tree_model import is_tree, model_folder

    out = list(rest)
    for i, arg in enumerate(out):
        flag, eq, value = arg.partition("=")
        if flag not in SPECULATIVE_FLAGS or not (eq or i + 1 < len(out)):
            continue
        at, text = (i, value) if eq else (i + 1, out[i + 1])
        try:
            config = json.loads(text)
        except ValueError:
            continue  # vLLM's own parser reports a malformed value
        draft = config.get("model") if isinstance(config, dict) else None
        if isinstance(draft, str) and is_tree(Path(draft)):
            text = json.dumps(config | {"model": str(model_folder(Path(draft)))})
            out[at] = f"{flag}={text}" if eq else text
    return out


def additional_tyllm_options(rest: list[str]) -> dict:
    """The tyllm options inside a `--additional-config JSON` among vLLM's flags."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--additional-config", "--additional_config", default=None)
    text = p.parse_known_args(rest)[0].additional_config
    try:
        return dict((json.loads(text) if text else {}).get(CONFIG_KEY) or {})
    except (ValueError, AttributeError, TypeError):
        return {}  # vLLM's own parser reports a malformed value


def refuse_unsized_vlm(model: Path, options: dict) -> None:
    """A VLM checkpoint is served at the image sizes the user names (a server cannot guess)."""
    from tyllm.vllm_ext.vlm_engine import is_vlm_checkpoint

    if is_vlm_checkpoint(model) and "image_sizes" not in options:
        raise TyllmError(f"{model} is a vision-language checkpoint: name the image sizes to "
                         f"compile with --image-sizes (e.g. 448x448,540x960), or serve a tree "
                         f"compiled by scripts/compile_vlm.py.")


def serve(argv: list[str]) -> int:
    from tyllm.runtime.distributed import follow_rank_0
    from tyllm.vllm_ext.tree_check import EngineConfigError
    from tyllm.vllm_ext.tree_model import is_tree

    if not argv or argv[0].startswith("-"):
        tyllm_parser().print_help()
        print("\nvLLM serve flags: see `vllm serve --help`; all of them are accepted.")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    model = Path(argv[0])
    if not model.is_dir():
        raise TyllmError(f"{argv[0]!r} is not a folder: pass a HF checkpoint folder or a "
                         f"compiled <N>die tree.")
    known, rest = tyllm_parser().parse_known_args(argv[1:])
    if is_tree(model):
        refuse_flags_against_tree(model, known, rest)  # before vLLM is even imported
    if known.workers == DISTRIBUTED:
        follow_rank_0(distributed_tree(model, known))  # ranks other than 0 end in there
    if known.workers == DISTRIBUTED:
        rest = with_shutdown_grace(rest)
    vllm_argv, options = engine_argv(model, options_from_flags(known), served_draft(rest))
    refuse_unsized_vlm(model, {**additional_tyllm_options(rest), **options})
    try:
        run_vllm_server(vllm_argv, options)
    except EngineConfigError as error:  # found by the platform while vLLM builds its config
        raise TyllmError(str(error)) from None
    return 0


def distributed_tree(model: Path, known: argparse.Namespace) -> Path:
    """The compiled tree distributed dies serve: every host holds a copy; none is compiled on
    start (the other hosts' ranks could not load it)."""
    from tyllm.vllm_ext.tree_model import is_tree

    tree = Path(known.artifacts_path) if known.artifacts_path else model
    if not is_tree(tree):
        raise TyllmError(f"--workers distributed serves a compiled tree, and {tree} is none: "
                         f"compile it first (tyllm compile {model} OUT/Ndie --dies N ...), copy "
                         f"it to every host, and serve the tree.")
    return tree


DISTRIBUTED_SHUTDOWN_S = 10  # the engine's grace after SIGTERM, to tell the other ranks to stop


def with_shutdown_grace(rest: list[str]) -> list[str]:
    """vLLM's default `--shutdown-timeout 0` kills the engine at once on SIGINT/SIGTERM, before
    rank 0 can tell the other ranks to stop (they would report it lost): distributed dies get
    DISTRIBUTED_SHUTDOWN_S seconds (in-flight requests drain meanwhile) unless the user says."""
    if any(a.split("=")[0] in ("--shutdown-timeout", "--shutdown_timeout") for a in rest):
        return rest
    return [*rest, "--shutdown-timeout", str(DISTRIBUTED_SHUTDOWN_S)]


def refuse_flags_against_tree(tree: Path, known: argparse.Namespace, rest: list[str]) -> None:
    """Flags that ask a tree for other values than it was compiled for: an omitted flag takes
    the tree's value, a typed one must equal it."""
    from tyllm.vllm_ext.tree_check import asked, differences, serve_refusal
    from tyllm.vllm_ext.tree_model import tree_config

    if known.artifacts_path and Path(known.artifacts_path).resolve() != tree.resolve():
        raise TyllmError(f"--artifacts-path {known.artifacts_path} names another folder than "
                         f"the tree {tree} to serve: drop --artifacts-path (a tree is served "
                         f"from where it is).")
    config, typed = tree_config(tree), tree_flags(rest)
    values = asked(config["dies"] if typed.dies is None else number(typed.dies),
                   config["max_kv_cache_size"] if typed.max_kv is None else number(typed.max_kv),
                   known.seq_len_list or config["seq_len_list"], known.batch_sizes)
    if bad := differences(values, config):
        raise TyllmError(serve_refusal(tree, bad))


def tree_flags(rest: list[str]) -> argparse.Namespace:
    """The vLLM flags a tree fixes, as typed among `rest` (None where absent)."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--tensor-parallel-size", "--tensor_parallel_size", "-tp", dest="dies")
    p.add_argument("--max-model-len", "--max_model_len", dest="max_kv")
    return p.parse_known_args(rest)[0]


def number(text: str) -> int | str:
    """A typed value as vLLM would compare it; vLLM's own forms ("1k", "auto") stay text."""
    try:
        return int(text)
    except ValueError:
        return text


def run_vllm_server(vllm_argv: list[str], options: dict) -> None:
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = make_arg_parser(FlexibleArgumentParser(prog="tyllm serve")).parse_args(vllm_argv)
    extra = args.additional_config
    extra = dict(json.loads(extra) if isinstance(extra, str) else extra or {})
    args.additional_config = {**extra, CONFIG_KEY: {**extra.get(CONFIG_KEY, {}), **options}}
    validate_parsed_serve_args(args)
    ServeSubcommand.cmd(args)
