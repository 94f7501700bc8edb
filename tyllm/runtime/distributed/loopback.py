"""Several "hosts" on one machine: one torchrun launch per host, all joined at one c10d
rendezvous on loopback (the tests' and the benchmark's multi-host jobs)."""

import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_loopback(hosts: list[tuple[int, list[str]]], env: dict,
                    stdout=subprocess.PIPE) -> list[subprocess.Popen]:
    """One torchrun per host in `hosts` ((its --nproc-per-node, the command torchrun runs));
    stderr is piped, text."""
    endpoint = f"127.0.0.1:{free_port()}"
    return [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(len(hosts)),
         "--nproc-per-node", str(n), "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
         "--local-addr", "127.0.0.1", *command],
        stdout=stdout, stderr=subprocess.PIPE, text=True, env=env) for n, command in hosts]
