"""A tiny Qwen3.5-MoE text model (HF `Qwen3_5MoeForCausalLM`, the language model of
Qwen3.5-35B-A3B) saved by transformers, with its float32 full-prompt logits and greedy tokens.

    python tools/make_qwen3_5_moe.py OUTDIR

writes OUTDIR/qwen3_5_moe_text/{config.json, model.safetensors} and OUTDIR/reference.safetensors
(`input_ids` [13], `logits` [13, vocab], `greedy` [13 + 24]). Needs torch and transformers 5.17.

`initializer_range` 0.1 rather than the golden-arch models' 0.25: with 0.25 some positions are so
ill-conditioned (queries and keys near zero before their L2 norm) that transformers' own float32
logits are 1e-4 off the float64 ones, which golden_arch.rs checks on qwen3_next instead.
"""

import os
import sys

import torch
from safetensors.torch import save_file
from transformers import Qwen3_5MoeForCausalLM, Qwen3_5MoeTextConfig


def main(out):
    torch.manual_seed(1)
    config = Qwen3_5MoeTextConfig(
        vocab_size=800,
        hidden_size=48,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=24,
        linear_conv_kernel_dim=4,
        linear_key_head_dim=12,
        linear_value_head_dim=12,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        moe_intermediate_size=24,
        shared_expert_intermediate_size=24,
        num_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=512,
        initializer_range=0.1,
        eos_token_id=2,
        pad_token_id=0,
    )
    model = Qwen3_5MoeForCausalLM(config).float().eval()
    folder = os.path.join(out, "qwen3_5_moe_text")
    model.save_pretrained(folder)
    model = Qwen3_5MoeForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 17, 250, 3, 99, 512, 42, 42, 7, 300, 11, 799, 5]])
    with torch.no_grad():
        logits = model(ids).logits[0].float().contiguous()
        greedy = model.generate(ids, max_new_tokens=24, do_sample=False, min_new_tokens=24)[0]
    save_file(
        {"input_ids": ids[0], "logits": logits, "greedy": greedy.contiguous()},
        os.path.join(out, "reference.safetensors"),
    )
    print("saved", folder, logits.shape, greedy.tolist())


if __name__ == "__main__":
    main(sys.argv[1])
