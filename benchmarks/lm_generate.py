"""Generation speed: our decode loop vs plain ``model.generate()`` on the same checkpoint.

    .venv/bin/python benchmarks/lm_generate.py [--quick] [--model DIR] [--threads N]

Tokens/s at batch 1 and batch 8, fp32 and int8 dynamic quantization, greedy decoding of a
fixed number of new tokens (EOS ignored so every run decodes the same length). Without
``--model`` a randomly initialised ``small`` checkpoint is built (speed does not depend on
weight values). Results: ``benchmarks/results/lm_generate.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.lm_quality import SHAKESPEARE, make_checkpoint, table, write_result


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", type=Path)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import torch
    from torch.ao.quantization import quantize_dynamic

    from lm.generate import Generator

    torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp())
    model_dir = a.model or make_checkpoint(tmp / "ckpt", a.preset)
    new = 48 if a.quick else 128
    repeats = 2 if a.quick else 3
    text = SHAKESPEARE.read_text(encoding="utf-8")
    prompts = [text[i * 997 : i * 997 + 160] for i in range(8)]
    rows, results = [], {}
    for quant in (False, True):
        ours = Generator.from_dir(model_dir, quantize=quant)
        ours.stop_ids = set()  # decode exactly `new` tokens, like min_new_tokens below
        hf = ours.model
        if quant:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hf = quantize_dynamic(ours.model, {torch.nn.Linear}, dtype=torch.qint8)
        tok = ours.tokenizer
        for batch in (1, 8):
            ps = prompts[:batch]

            def run_ours(ours=ours, ps=ps, batch=batch):
                if batch == 1:
                    ours.generate(ps[0], max_new_tokens=new, temperature=0)
                else:
                    ours.generate_batch(ps, max_new_tokens=new, temperature=0)

            tok.padding_side = "left"
            enc = tok(ps, return_tensors="pt", padding=True, add_special_tokens=False)

            def run_hf(hf=hf, enc=enc, tok=tok):
                with torch.inference_mode():
                    hf.generate(
                        **enc,
                        max_new_tokens=new,
                        min_new_tokens=new,
                        do_sample=False,
                        pad_token_id=tok.pad_token_id,
                    )

            t_ours = _time(run_ours, repeats)
            t_hf = _time(run_hf, repeats)
            tps_ours, tps_hf = batch * new / t_ours, batch * new / t_hf
            label = "int8" if quant else "fp32"
            results[f"{label}_b{batch}"] = {
                "ours_tokens_per_s": tps_ours,
                "hf_generate_tokens_per_s": tps_hf,
                "speedup": tps_ours / tps_hf,
            }
            rows.append([label, batch, tps_hf, tps_ours, f"{tps_ours / tps_hf:.2f}x"])
            print(
                f"  {label} batch {batch}: hf {tps_hf:,.1f} tok/s, ours {tps_ours:,.1f} tok/s",
                flush=True,
            )
    print()
    print(table(rows, ["weights", "batch", "model.generate() tok/s", "ours tok/s", "speed-up"]))
    from lm.model import count_parameters

    params = count_parameters(Generator.from_dir(model_dir).model)
    path = write_result(
        "lm_generate",
        {
            "model": str(a.model or f"random {a.preset}"),
            "parameters": params,
            "new_tokens": new,
            "threads": a.threads,
            "results": results,
        },
    )
    print(f"\n{params:,} parameters, {new} new tokens, greedy, {a.threads} threads. -> {path}")
    print("note: 2-core CPU shared with other agents; timings are noisy.")


if __name__ == "__main__":
    main()
