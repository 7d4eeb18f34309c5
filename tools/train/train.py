#!/usr/bin/env python3
"""Train one of the shipped models (a small Llama) on the Jane Austen corpus, with transformers.

Runs on the device machine (torch + transformers there; CPU works too, slowly, for a dry run):

    python3 tools/train/train.py --preset main  --corpus .train/corpus --tokenizer .train/tokenizer \
        --out models/tiny-austen --minutes 4
    python3 tools/train/train.py --preset draft --corpus .train/corpus --tokenizer .train/tokenizer \
        --out models/tiny-austen-draft --minutes 1.5 --teacher models/tiny-austen

Data: each novel is a stream of paragraph tokens, "\\n\\n" between paragraphs and `</s>` at its end;
a training window starts at a random paragraph, behind `<s>` (as a prompt is tokenized), and holds
SEQ_LEN tokens. The learning rate follows the wall clock (warm-up, then cosine to a tenth), so a
run ends inside its time budget whatever the machine. Residual and embedding dropout (hooks on
`o_proj`, `down_proj` and `embed_tokens`; Llama has none built in) and the checkpoint of lowest
validation loss fight overfitting on a corpus of about a million tokens. The draft model learns
from the main one (`--teacher`: half cross-entropy, half KL divergence to the teacher's
distribution) and is kept where its argmax agrees most with the teacher's, which is what assisted
decoding accepts. The saved checkpoint is
bf16 (`save_pretrained`: tied embeddings stored once), with generation_config.json, the tokenizer
and `train_log.json` (losses, steps, tokens seen).
"""

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

SEQ_LEN = 512
BOS_ID, EOS_ID = 0, 1

PRESETS = {
    # About 14M parameters (tied embeddings).
    "main": dict(
        model=dict(
            hidden_size=384,
            intermediate_size=1024,
            num_hidden_layers=8,
            num_attention_heads=6,
            num_key_value_heads=2,
            head_dim=64,
        ),
        lr=1e-3,
        batch=64,
        dropout=0.3,
        attention_dropout=0.1,
    ),
    # About 1M parameters: the assistant (draft) model for assisted decoding.
    "draft": dict(
        model=dict(
            hidden_size=128,
            intermediate_size=384,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,
        ),
        lr=3e-3,
        batch=64,
        dropout=0.1,
        attention_dropout=0.0,
    ),
}

# Sampling defaults of the shipped generation_config.json.
GENERATION = dict(
    do_sample=True,
    temperature=0.8,
    top_k=40,
    top_p=0.9,
    repetition_penalty=1.1,
    max_new_tokens=60,
)


def encode_split(tok: Tokenizer, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The token stream of a split and the positions where its paragraphs start."""
    sep = tok.encode("\n\n", add_special_tokens=False).ids
    ids: list[int] = []
    starts: list[int] = []
    for novel in text.strip("\n").split("\n\n\n"):
        paras = [p for p in novel.split("\n\n") if p.strip()]
        encoded = tok.encode_batch(paras, add_special_tokens=False)
        for i, enc in enumerate(encoded):
            starts.append(len(ids))
            ids.extend(enc.ids)
            ids.extend(sep if i + 1 < len(encoded) else [EOS_ID])
    return torch.tensor(ids, dtype=torch.long), torch.tensor(starts, dtype=torch.long)


def windows(stream: torch.Tensor, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs `<s> t[s : s+L-1]` and targets `t[s : s+L]` for each start s; [N, SEQ_LEN] each."""
    offsets = torch.arange(SEQ_LEN, device=stream.device)
    targets = stream[starts[:, None] + offsets]
    bos = torch.full_like(targets[:, :1], BOS_ID)
    return torch.cat([bos, targets[:, :-1]], dim=1), targets


def add_dropout(model: LlamaForCausalLM, p: float) -> None:
    """Dropout on the embeddings and on each residual branch (attention and MLP outputs)."""

    def hook(module, inputs, output):
        return F.dropout(output, p, module.training)

    model.model.embed_tokens.register_forward_hook(hook)
    for layer in model.model.layers:
        layer.self_attn.o_proj.register_forward_hook(hook)
        layer.mlp.down_proj.register_forward_hook(hook)


def distill_loss(logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) per token, averaged: the student learns the teacher's distribution."""
    t = F.log_softmax(teacher.float(), dim=-1)
    s = F.log_softmax(logits.float(), dim=-1)
    return (t.exp() * (t - s)).sum(-1).mean()


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, batch: int, amp, teacher=None):
    """Mean cross-entropy on (x, y), and with a teacher the share of positions where the model's
    argmax equals the teacher's (what greedy assisted decoding accepts)."""
    model.eval()
    total, agree = 0.0, 0
    for i in range(0, len(x), batch):
        with amp():
            logits = model(input_ids=x[i : i + batch]).logits
            if teacher is not None:
                agree += int((teacher(input_ids=x[i : i + batch]).logits.argmax(-1) == logits.argmax(-1)).sum())
        total += F.cross_entropy(
            logits.float().flatten(0, 1), y[i : i + batch].flatten(), reduction="sum"
        ).item()
    model.train()
    return total / y.numel(), agree / y.numel()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", choices=PRESETS, required=True)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, required=True, help="training time budget")
    ap.add_argument("--eval-seconds", type=float, default=3.0)
    ap.add_argument("--max-steps", type=int, default=None, help="stop earlier (dry runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--teacher",
        type=Path,
        default=None,
        help="a trained checkpoint to distil (loss: half cross-entropy, half KL to the teacher); "
        "the checkpoint kept is then the one that agrees most with the teacher's argmax on validation",
    )
    args = ap.parse_args()
    preset = PRESETS[args.preset]
    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    def amp():
        return torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")

    tok = Tokenizer.from_file(str(args.tokenizer / "tokenizer.json"))
    assert tok.token_to_id("<s>") == BOS_ID and tok.token_to_id("</s>") == EOS_ID
    train, train_starts = encode_split(tok, (args.corpus / "train.txt").read_text("utf-8"))
    valid, valid_starts = encode_split(tok, (args.corpus / "valid.txt").read_text("utf-8"))
    train_starts = train_starts[train_starts + SEQ_LEN <= len(train)]
    valid_starts = valid_starts[valid_starts + SEQ_LEN <= len(valid)]
    # Fixed evaluation windows: up to 128 spread over the validation split, 128 over training.
    val_x, val_y = windows(valid, valid_starts[:: max(1, len(valid_starts) // 128)][:128])
    trn_x, trn_y = windows(train, train_starts[:: max(1, len(train_starts) // 128)][:128])
    train, train_starts = train.to(device), train_starts.to(device)
    val_x, val_y, trn_x, trn_y = (t.to(device) for t in (val_x, val_y, trn_x, trn_y))
    print(
        f"[{args.preset}] train {len(train)} tokens ({len(train_starts)} starts), "
        f"valid {len(valid)} tokens; device {device}",
        flush=True,
    )

    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        max_position_embeddings=SEQ_LEN,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=None,
        initializer_range=0.02,
        **preset["model"],
    )
    config._attn_implementation = "sdpa"
    config.attention_dropout = preset["attention_dropout"]
    model = LlamaForCausalLM(config).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[{args.preset}] {n_params / 1e6:.2f}M parameters", flush=True)
    add_dropout(model, preset["dropout"])
    teacher = None
    if args.teacher is not None:
        teacher = LlamaForCausalLM.from_pretrained(args.teacher, dtype=torch.bfloat16).to(device).eval()
        teacher.requires_grad_(False)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=preset["lr"],
        betas=(0.9, 0.95),
        fused=device == "cuda",
    )
    budget = args.minutes * 60.0
    warmup = 100
    batch = preset["batch"]
    log = {"preset": args.preset, "parameters": n_params, "evals": []}
    best = (math.inf, None, 0)
    start = time.time()
    last_eval = -math.inf
    step = 0
    model.train()
    while True:
        elapsed = time.time() - start
        done = elapsed >= budget or (args.max_steps is not None and step >= args.max_steps)
        if done or elapsed - last_eval >= args.eval_seconds:
            last_eval = elapsed
            v, agree = evaluate(model, val_x, val_y, 32, amp, teacher)
            t, _ = evaluate(model, trn_x, trn_y, 32, amp)
            entry = dict(step=step, seconds=round(elapsed, 1), train=t, valid=v)
            if teacher is not None:
                entry["valid_agreement"] = agree
            log["evals"].append(entry)
            print(f"[{args.preset}] {entry}", flush=True)
            # Lower is better: validation loss, or disagreement with the teacher.
            score = v if teacher is None else 1.0 - agree
            if score < best[0]:
                state = {k: x.detach().to("cpu", copy=True) for k, x in model.state_dict().items()}
                best = (score, state, step)
        if done:
            break
        frac = min(1.0, elapsed / budget)
        lr = preset["lr"] * min(1.0, (step + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(len(train_starts), (batch,), device=device)
        x, y = windows(train, train_starts[idx])
        with amp():
            logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        if teacher is not None:
            with torch.no_grad(), amp():
                target = teacher(input_ids=x).logits
            loss = 0.5 * loss + 0.5 * distill_loss(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1

    log.update(
        steps=step,
        seconds=round(time.time() - start, 1),
        tokens_seen=step * batch * SEQ_LEN,
        train_tokens=len(train),
        best_step=best[2],
        best=next(e for e in log["evals"] if e["step"] == best[2]),
    )
    model.load_state_dict(best[1])
    model.config.attention_dropout = 0.0
    model.to("cpu", torch.bfloat16)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    GenerationConfig(
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID, **GENERATION
    ).save_pretrained(args.out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(args.tokenizer / name, args.out / name)
    (args.out / "train_log.json").write_text(json.dumps(log, indent=1) + "\n")
    print(
        f"[{args.preset}] saved step {best[2]} ({log['best']}) of {step} steps, "
        f"{log['tokens_seen'] / 1e6:.0f}M tokens seen -> {args.out}",
        flush=True,
    )


if __name__ == "__main__":
    main()
