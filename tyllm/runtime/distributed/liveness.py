"""Whether a rank's process still runs, asked without the job's store (its host may be the one
that ended): every rank listens on a socket that a thread accepts and closes; the kernel
refuses a connection once the process is gone. A process being killed closes its connections
to the other ranks a little before this socket, so a rank is asked a few times."""

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

PROBE_TIMEOUT_S = 1.0  # a host that does not answer within this is taken as lost
ASKED = 5  # times a rank is asked, CHECK_GAP_S apart, before it counts as alive
CHECK_GAP_S = 0.01


class Liveness:
    """This rank's listening socket, answered for as long as the process runs."""

    def __init__(self, address: str):
        self.socket = socket.create_server((address, 0), backlog=64)
        self.port = self.socket.getsockname()[1]
        threading.Thread(target=self._answer, name="tyllm-liveness", daemon=True).start()

    def _answer(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:  # closed
                return
            connection.close()


def gone(peers: dict[int, tuple[str, int]]) -> list[int]:
    """The ranks among `peers` (rank -> (address, port)) whose process no longer answers,
    all asked at once."""
    if not peers:
        return []
    with ThreadPoolExecutor(len(peers)) as pool:
        answers = dict(zip(peers, pool.map(lambda a: process_answers(*a), peers.values()),
                           strict=True))
    return sorted(r for r, alive in answers.items() if not alive)


def process_answers(address: str, port: int) -> bool:
    for i in range(ASKED):
        if i:
            time.sleep(CHECK_GAP_S)
        try:
            socket.create_connection((address, port), timeout=PROBE_TIMEOUT_S).close()
        except OSError:  # refused: the process is gone; timed out: its host is lost
            return False
    return True
