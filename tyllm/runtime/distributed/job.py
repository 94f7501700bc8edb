"""This process's place in a torchrun job, and the join every rank makes before its die runs.

torchrun gives each process RANK, WORLD_SIZE, LOCAL_RANK and the job's store (MASTER_ADDR,
MASTER_PORT: a TCPStore on the first host's agent). Rank r runs die r of the tree. At the join
every rank posts its host, pid and the digest of its copy of the tree's manifest; rank 0 waits
for all of them (`join_timeout_s`) and posts the verdict: go, or one sentence every rank raises
(ranks that never came, with the store's address; copies of the tree that differ; a job whose
rank count is not the tree's die count)."""

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from datetime import timedelta

from tyllm.errors import TyllmError

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
LAUNCH = ("torchrun --nnodes H --nproc-per-node K --rdzv-backend c10d --rdzv-endpoint "
          "ADDR:PORT -m tyllm run TREE --workers distributed ...")
VERDICT = "verdict"


@dataclass(frozen=True)
class Job:
    rank: int
    world: int
    local_rank: int
    local_world: int  # the ranks on this host
    store_addr: str
    store_port: int
    run: str  # the job's id and restart count: keys of another run never mix with ours

    @classmethod
    def from_env(cls, env=os.environ) -> "Job":
        missing = [k for k in TORCHRUN_ENV if k not in env]
        if missing:
            raise TyllmError(f"workers=\"distributed\" runs each die as a rank of a torchrun job, "
                             f"but {', '.join(missing)} is not set: start it on every host with "
                             f"`{LAUNCH}`.")
        return cls(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                   int(env.get("LOCAL_WORLD_SIZE", 1)), env["MASTER_ADDR"], int(env["MASTER_PORT"]),
                   f"{env.get('TORCHELASTIC_RUN_ID', 'none')}/"
                   f"{env.get('TORCHELASTIC_RESTART_COUNT', '0')}")

    @property
    def endpoint(self) -> str:
        return f"{self.store_addr}:{self.store_port}"

    def store(self, timeout_s: float):
        """A client of the job's store, under this run's own prefix."""
        import torch.distributed as dist

        try:
            raw = dist.TCPStore(self.store_addr, self.store_port, is_master=False,
                                timeout=timedelta(seconds=timeout_s), wait_for_workers=False)
        except RuntimeError as e:
            raise TyllmError(f"Rank {self.rank} cannot reach the job's store at {self.endpoint} "
                             f"({e}): start every host with the same --rdzv-endpoint.") from None
        return dist.PrefixStore(f"tyllm/{self.run}/", raw)

    def local_address(self) -> str:
        """This host's address on the route to the job's store: the one address gloo listens
        on (not every interface)."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((self.store_addr, self.store_port))
            return s.getsockname()[0]


def manifest_digest(tree_root) -> str:
    from tyllm.artifacts import layout

    return hashlib.sha256((tree_root / layout.MANIFEST).read_bytes()).hexdigest()


def join(job: Job, store, tree_root, dies: int, timeout_s: float,
         probe_port: int) -> dict[int, dict]:
    """Posts this rank (with the port its liveness is asked on), then waits for rank 0's
    verdict; returns every rank's record."""
    me = {"host": socket.gethostname(), "pid": os.getpid(), "address": job.local_address(),
          "probe": probe_port, "manifest": manifest_digest(tree_root), "tree": str(tree_root)}
    store.set(f"join/{job.rank}", json.dumps(me))
    if job.rank == 0:
        store.set(VERDICT, json.dumps(verdict(job, store, dies, timeout_s)))
    else:
        wait_for(store, VERDICT, job, timeout_s + 10)
    said = json.loads(store.get(VERDICT))
    if said.get("error"):
        raise TyllmError(said["error"])
    return {int(r): record for r, record in said["ranks"].items()}


def verdict(job: Job, store, dies: int, timeout_s: float) -> dict:
    if job.world != dies:
        return {"error": f"The job has {job.world} ranks but the tree has {dies} dies: one rank "
                         f"runs one die, so the --nproc-per-node of all hosts must add up to "
                         f"{dies}."}
    deadline = time.monotonic() + timeout_s
    keys = [f"join/{r}" for r in range(job.world)]
    while not store.check(keys):
        if time.monotonic() > deadline:
            missing = [r for r in range(job.world) if not store.check([f"join/{r}"])]
            return {"error": f"Ranks {missing} of {job.world} did not join within {timeout_s:g} s "
                             f"(the job's store is {job.endpoint}): check that every host runs "
                             f"torchrun with the same --rdzv-endpoint and that their tyllm "
                             f"started (their own output says why not)."}
        time.sleep(0.05)
    ranks = {r: json.loads(store.get(f"join/{r}")) for r in range(job.world)}
    digests = {record["manifest"] for record in ranks.values()}
    if len(digests) > 1:
        odd = [f"rank {r} on {rec['host']}" for r, rec in ranks.items()
               if rec["manifest"] != ranks[0]["manifest"]]
        return {"error": f"The tree differs between hosts: {', '.join(odd)} hold(s) a tree whose "
                         f"manifest differs from rank 0's ({ranks[0]['tree']} on "
                         f"{ranks[0]['host']}): copy the same compiled tree to every host."}
    return {"ranks": ranks}


def wait_for(store, key: str, job: Job, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not store.check([key]):
        if time.monotonic() > deadline:
            raise TyllmError(f"Rank {job.rank} waited {timeout_s:g} s for rank 0 at the job's "
                             f"store {job.endpoint}: rank 0 never joined (its own output says "
                             f"why).")
        time.sleep(0.05)
