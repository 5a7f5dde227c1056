"""Run a real llama.cpp server (via xllamacpp) on 127.0.0.1 for the end-to-end suite.

Usage: python serve_llamacpp.py MODEL.gguf PORT

The server answers OpenAI-compatible requests on http://127.0.0.1:PORT/v1 and
GET /health. It stops on SIGTERM or SIGINT.

Environment:
  LLMGATE_LLAMACPP_API_KEY  when set, requests other than /health must carry
                            `Authorization: Bearer <value>`.
  LLMGATE_LLAMACPP_THREADS  CPU threads for generation and prompt processing (default 1).
"""

from __future__ import annotations

import os
import signal
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"usage: {argv[0]} MODEL.gguf PORT", file=sys.stderr)
        return 2
    model_path, port = argv[1], int(argv[2])
    if not os.path.isfile(model_path):
        print(f"model file not found: {model_path}", file=sys.stderr)
        return 2

    # Block the stop signals before the server starts its threads so that
    # sigwait below receives them instead of the default handlers.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)

    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = model_path
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_ctx = 2048
    params.n_parallel = 2
    threads = int(os.environ.get("LLMGATE_LLAMACPP_THREADS", "1"))
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.endpoint_metrics = True
    params.endpoint_slots = True
    params.model_alias = {"gemma-3-270m"}
    api_key = os.environ.get("LLMGATE_LLAMACPP_API_KEY")
    if api_key:
        params.api_keys = [api_key]

    server = xlc.Server(params)
    print("listening", server.listening_address, flush=True)
    signal.sigwait(stop_signals)
    print("stopping", flush=True)
    del server
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
