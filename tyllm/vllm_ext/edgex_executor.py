"""vLLM's side of the boundary: an executor that owns one in-process worker, and that worker.

The worker answers the engine's calls in the order vLLM makes them (`init_device`, `load_model`,
`get_kv_cache_spec`, `get_supported_kv_cache_layouts`, `set_kv_cache_layout`,
`determine_available_memory`, `initialize_from_config`, `compile_or_warm_up_model`,
`reset_mm_cache`, `get_supported_tasks`, `execute_model`, `shutdown`) and leaves the work to
`runner.SlotRunner` on a `tyllm.runtime` session. vLLM's own model code is never loaded.
"""

from concurrent.futures import Future

from vllm.logger import init_logger
from vllm.utils.import_utils import resolve_obj_by_qualname
from vllm.v1.executor.abstract import Executor
from vllm.v1.kv_cache_interface import FullAttentionSpec
from vllm.v1.worker.worker_base import CompilationTimes

from tyllm.dtypes import DTYPES
from tyllm.errors import TyllmError
from tyllm.runtime.distributed import check_engine_rank
from tyllm.runtime.worker_kinds import DISTRIBUTED
from tyllm.vllm_ext.artifacts import BATCH_CAP, engine_tree, ensure_tree
from tyllm.vllm_ext.drafts import Drafts
from tyllm.vllm_ext.names import logger_name
from tyllm.vllm_ext.runner import SlotRunner
from tyllm.vllm_ext.sampling import BatchSampler

logger = init_logger(logger_name(__name__))
WORKER_QUALNAME = "tyllm.vllm_ext.edgex_executor.EdgeXWorker"


class EdgeXWorker:
    """Stands for all dies of one tree: the dies themselves are tyllm runtime workers."""

    def __init__(self, vllm_config):
        self.vllm_config = vllm_config
        self.session = None
        self.draft_session = None  # speculative_config's draft model, on its own tree
        self.runner = None

    def init_device(self) -> None:
        self.tree_request = engine_tree(self.vllm_config)

    def load_model(self) -> None:
        from tyllm import runtime

        path = ensure_tree(self.tree_request)
        if self.tree_request.workers == DISTRIBUTED:
            check_engine_rank()  # any other rank would serve its die here and leave
        self.session = runtime.load(path, workers=self.tree_request.workers)
        self.draft_session = self._load_draft()
        model_config = self.vllm_config.model_config
        sampler = BatchSampler(model_config.get_vocab_size(), model_config.logprobs_mode)
        max_num_seqs = self.vllm_config.scheduler_config.max_num_seqs
        cache = self.vllm_config.cache_config
        self.runner = SlotRunner(self.session, max_num_seqs, sampler,
                                 cache.block_size if cache.enable_prefix_caching else None,
                                 Drafts.of(self.vllm_config, self.session.tree.max_kv,
                                           self.draft_session))
        say_batching(path, self.session.tree.batch_sizes, max_num_seqs)

    def _load_draft(self):
        from tyllm import runtime
        from tyllm.speculate import DraftModel

        draft = self.tree_request.draft
        if draft is None:
            return None
        try:
            session = runtime.load(ensure_tree(draft), workers=draft.workers)
        except TyllmError:
            self.shutdown()
            raise
        try:
            DraftModel(session).check(self.session)
        except TyllmError:
            session.close()
            self.shutdown()
            raise
        return session

    def get_kv_cache_spec(self) -> dict:
        return kv_cache_spec(self.session.tree, self.vllm_config.cache_config.block_size)

    def get_supported_kv_cache_layouts(self) -> list[str]:
        return ["LBNHC"]  # nominal: the dies keep their own [L, H, S, D] caches per slot

    def set_kv_cache_layout(self, layout_name: str) -> None:
        pass

    def determine_available_memory(self) -> int:
        return slot_memory(self.session.tree, self.vllm_config)

    def initialize_from_config(self, kv_cache_config) -> None:
        pass  # slots are allocated by the dies on first use

    def compile_or_warm_up_model(self) -> CompilationTimes:
        return CompilationTimes(language_model=0.0, encoder=0.0)  # compiled ahead of time

    def reset_mm_cache(self) -> None:
        pass

    def get_supported_tasks(self) -> tuple[str, ...]:
        return ("generate",)

    def execute_model(self, scheduler_output):
        return self.runner.execute(scheduler_output)

    def take_draft_token_ids(self):
        """Speculative decoding: the drafts of the last step (drafts.py)."""
        return self.runner.take_draft_token_ids()

    def check_health(self) -> None:
        if self.session is None or self.session.workers is None:
            raise TyllmError("The tyllm session behind this engine is closed: start a new LLM.")

    def shutdown(self) -> None:
        for session in (self.draft_session, self.session):
            if session is not None:
                session.close()


def kv_cache_spec(tree, block_size: int) -> dict[str, FullAttentionSpec]:
    """vLLM's per-layer view of the dies' caches, for its memory accounting only."""
    kv = [tree.kv_cache_for(d)["k_cache"] for d in range(tree.dies)]
    spec = FullAttentionSpec(block_size=block_size, num_kv_heads=sum(k["shape"][1] for k in kv),
                             head_size=kv[0]["shape"][-1], dtype=DTYPES[kv[0]["dtype"]])
    return {f"model.layers.{i}.self_attn.attn": spec for i in range(tree.config["num_layers"])}


def slot_memory(tree, vllm_config) -> int:
    """Exactly the slots the dies hold, in vLLM's blocks: max_num_seqs sequences of
    max_model_len tokens, plus the null block vLLM's block pool holds back for itself."""
    block_size = vllm_config.cache_config.block_size
    specs = kv_cache_spec(tree, block_size)
    per_sequence = -(-vllm_config.model_config.max_model_len // block_size)
    blocks = per_sequence * vllm_config.scheduler_config.max_num_seqs + 1
    return sum(spec.page_size_bytes for spec in specs.values()) * blocks


def say_batching(tree, batches: list[int], max_num_seqs: int) -> None:
    """A log line when the tree cannot decode max_num_seqs sequences in one call."""
    if max(batches) == 1 and max_num_seqs > 1:
        logger.info("tyllm: %s was compiled for batch 1 only, so each decode request runs in a "
                    "call of its own; recompile it with batch sizes (tyllm compile "
                    "--batch-sizes 1,%d, or additional_config tyllm.batch_sizes) to decode "
                    "them together.", tree, min(max_num_seqs, BATCH_CAP))
    elif max(batches) < max_num_seqs:
        logger.info("tyllm: the largest batch compiled into %s is %d; up to max_num_seqs=%d "
                    "decode requests take several calls per step.", tree, max(batches),
                    max_num_seqs)


def worker_class(vllm_config) -> type:
    qualname = vllm_config.parallel_config.worker_cls
    cls = resolve_obj_by_qualname(qualname) if isinstance(qualname, str) else None
    if not (isinstance(cls, type) and issubclass(cls, EdgeXWorker)):
        raise TyllmError(f"EdgeXExecutor runs tyllm's compiled dies and needs "
                         f"worker_cls={WORKER_QUALNAME!r}, not {qualname!r}.")
    return cls


class EdgeXExecutor(Executor):
    """One in-process worker (prefix caching as the platform left it: text trees only)."""

    def _init_executor(self) -> None:
        self.worker = worker_class(self.vllm_config)(self.vllm_config)
        self.worker.init_device()
        self.worker.load_model()

    def _call(self, method, args: tuple, kwargs: dict):
        if callable(method):
            return method(self.worker, *args, **kwargs)
        if not hasattr(self.worker, method):
            raise TyllmError(f"vLLM called {method!r}, which tyllm's EdgeXWorker does not "
                             f"implement: this vLLM feature is not supported with tyllm.")
        return getattr(self.worker, method)(*args, **kwargs)

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None, non_block=False,
                       single_value=False):
        result = self._call(method, args, kwargs or {})
        result = result if single_value else [result]
        return done_future(result) if non_block else result

    def initialize_from_config(self, kv_cache_configs) -> None:
        self.worker.initialize_from_config(kv_cache_configs[0])

    def execute_model(self, scheduler_output, non_block: bool = False):
        output = self.worker.execute_model(scheduler_output)
        return done_future(output) if non_block else output

    def sample_tokens(self, grammar_output, non_block: bool = False):
        raise TyllmError("EdgeXWorker samples inside execute_model; vLLM should not call "
                         "sample_tokens (structured output is not supported with tyllm).")

    def check_health(self) -> None:
        self.worker.check_health()

    def shutdown(self) -> None:
        if getattr(self, "worker", None) is not None:
            self.worker.shutdown()
            self.worker = None


def done_future(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future
