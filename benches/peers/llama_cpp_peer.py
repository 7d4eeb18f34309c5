"""Times llama.cpp (llama-cpp-python) on a GGUF file as `lmgen bench` times lmgen: prefill of P
tokens (one eval), decode of N tokens at batch 1 after a 128-token prompt. Same token ids as
lmgen bench: (7 + 31 i) % vocab. Prints one JSON line with medians over REPS (after one warm-up).

Usage: python llama_cpp_peer.py FILE.gguf THREADS PREFILL_LEN DECODE_TOKENS REPS
"""
import json
import statistics
import sys
import time

from llama_cpp import Llama


def main():
    path, threads, prefill, decode, reps = sys.argv[1], *map(int, sys.argv[2:6])
    llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=1024, n_batch=512,
                verbose=False)
    vocab = llm.n_vocab()
    ids = lambda n: [(7 + 31 * i) % vocab for i in range(n)]
    p_ids, d_ids = ids(prefill), ids(128 + decode)
    pre, dec = [], []
    for rep in range(reps + 1):
        llm.reset()
        t = time.perf_counter()
        llm.eval(p_ids)
        tp = time.perf_counter() - t
        llm.reset()
        llm.eval(d_ids[:128])
        t = time.perf_counter()
        for i in range(decode):
            llm.eval([d_ids[128 + i]])
        td = time.perf_counter() - t
        if rep > 0:
            pre.append(prefill / tp)
            dec.append(decode / td)
    print(json.dumps({"engine": "llama.cpp", "prefill_tok_s": statistics.median(pre),
                      "ttft_s": prefill / statistics.median(pre), "decode_tok_s": statistics.median(dec)}))


if __name__ == "__main__":
    main()
