"""llama.cpp on one GGUF file, as murmur-bench's inference baseline.

Prints one JSON object per run on stdout: prompt tokens, generated tokens and llama.cpp's
own timings (prompt processing and generation tokens/s). Greedy, end of text ignored, so
every run generates exactly --n-predict tokens.

Usage: python llamacpp_baseline.py --model M.gguf --threads 2 --prompt TEXT --n-predict 60 --runs 3
With --on-request instead of --runs, one run for each line read on stdin: murmur-bench
interleaves them with its own runs, so both see the machine in the same state.
"""
import argparse
import json
import sys

import xllamacpp as xlc


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--n-predict", type=int, default=60)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--on-request", action="store_true")
    args = parser.parse_args()
    params = xlc.CommonParams()
    params.model.path = args.model
    params.n_ctx = 2048
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.n_predict = args.n_predict
    params.sampling.temp = 0
    server = xlc.Server(params)
    if args.on_request:
        # Loaded: the bench measures nothing while this process is still starting.
        print(json.dumps({"ready": True}), flush=True)
    requests = sys.stdin if args.on_request else range(args.runs)
    for _ in requests:
        reply = server.handle_completions(
            {
                "prompt": args.prompt,
                "n_predict": args.n_predict,
                "temperature": 0,
                "ignore_eos": True,
                "cache_prompt": False,
            }
        )
        timings = reply["timings"]
        print(
            json.dumps(
                {
                    "prompt_tokens": timings["prompt_n"],
                    "generated_tokens": timings["predicted_n"],
                    "prompt_per_second": timings["prompt_per_second"],
                    "predicted_per_second": timings["predicted_per_second"],
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
