"""A tiny gpt-oss checkpoint whose experts are stored as MXFP4 blocks and scales (the layout the
published gpt-oss checkpoints use), and transformers' float32 logits for it, loaded with
`Mxfp4Config(dequantize=True)`, computed in float32.

    python tools/make_gpt_oss_mxfp4.py OUTDIR

writes OUTDIR/gpt_oss_mxfp4/{config.json, model.safetensors} and OUTDIR/forward.safetensors
(`input_ids` [13], `logits` [13, vocab]). Needs torch and transformers 5.17.
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import GptOssConfig, GptOssForCausalLM, Mxfp4Config

FP4 = torch.tensor(
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]
)


def pack(w):
    """`w` [experts, in, out] (transformers' dequantized layout) -> blocks [experts, out, in/32,
    16] u8 (two FP4 codes a byte, the low nibble first) and scales [experts, out, in/32] u8
    (the power-of-two exponent + 127)."""
    wt = w.transpose(1, 2).contiguous()  # [E, out, in]
    e_, r, c = wt.shape
    g = wt.reshape(e_, r, c // 32, 32)
    amax = g.abs().amax(-1).clamp(min=1e-30)
    exp = torch.ceil(torch.log2(amax / 6.0)).clamp(-126, 127)
    scaled = g / torch.pow(2.0, exp)[..., None]
    idx = (scaled[..., None] - FP4).abs().argmin(-1)
    blocks = (idx[..., 0::2] | (idx[..., 1::2] << 4)).to(torch.uint8)
    scales = (exp + 127).to(torch.uint8)
    return blocks, scales


def main(out):
    torch.manual_seed(0)
    config = GptOssConfig(
        vocab_size=800,
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        num_local_experts=4,
        num_experts_per_tok=2,
        sliding_window=6,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=512,
        initializer_range=0.25,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=4,
        pad_token_id=None,
    )
    model = GptOssForCausalLM(config).float().eval()
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    for name in list(state):
        if name.endswith("mlp.experts.gate_up_proj") or name.endswith("mlp.experts.down_proj"):
            blocks, scales = pack(state.pop(name))
            state[name + "_blocks"] = blocks
            state[name + "_scales"] = scales
    folder = os.path.join(out, "gpt_oss_mxfp4")
    os.makedirs(folder, exist_ok=True)
    save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    cfg = config.to_dict()
    cfg["quantization_config"] = {
        "quant_method": "mxfp4",
        "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"],
    }
    cfg["architectures"] = ["GptOssForCausalLM"]
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    loaded = GptOssForCausalLM.from_pretrained(
        folder, quantization_config=Mxfp4Config(dequantize=True), dtype=torch.float32
    ).eval()
    # transformers dequantizes into bf16 (exact for MXFP4 values); compute in float32 as lmgen's
    # float32 model does.
    loaded = loaded.float()
    ids = torch.tensor([[0, 17, 250, 3, 99, 512, 42, 42, 7, 300, 11, 799, 5]])
    with torch.no_grad():
        logits = loaded(ids).logits[0].float().contiguous()
    save_file(
        {"input_ids": ids[0].to(torch.int64), "logits": logits},
        os.path.join(out, "forward.safetensors"),
    )
    print("saved", folder, logits.shape, float(logits.abs().max()))


if __name__ == "__main__":
    main(sys.argv[1])
