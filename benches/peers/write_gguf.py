"""Writes a GGUF file (llama.cpp's format) from an lmgen/HF safetensors checkpoint, with gguf-py.

Usage: python write_gguf.py CHECKPOINT_DIR OUT.gguf TYPE [F32.gguf]
       (TYPE: f32 | f16 | q8_0_py | q8_0 | q4_k_s | q4_k_m; F32.gguf: for q8_0/q4_k_*, an f32 file
       this script wrote from the same checkpoint, quantized instead of writing a new one)

f32 and f16 are written directly. q8_0_py is written directly too, with gguf-py's Q8_0 quantizer
(`gguf.quants.quantize`, bit-exact with ggml's reference `quantize_row_q8_0`) on every 2-D weight,
as llama.cpp's Q8_0 file type does (norms and biases stay f32); it needs no llama.cpp. The other
quantized types are made from the f32 file by llama.cpp's own
quantizer (llama_model_quantize through llama-cpp-python), with its rules for which tensors get
which block type. The vocabulary is a dummy one (token ids are fed directly, never text). As
convert_hf_to_gguf.py does, Llama q/k rows are permuted to llama.cpp's rotary layout, so the
GGUF computes the same function as the checkpoint.

qwen3, qwen3_moe, gemma3_text, phi3, olmo2 and granite checkpoints go through `write_converter`, which
follows llama.cpp's converter (`convert_hf_to_gguf.py`, its `conversion/` package, at
ggml-org/llama.cpp@0c1e57098) step by step for these architectures: its model classes'
`set_gguf_parameters` key by key and in the same order, its `modify_tensors` transforms (Gemma 3's
+1 on every `*norm.weight`, Granite's q/k row permutation), gguf-py's own tensor name map
(`gguf.get_tensor_name_map`), its tensor order (names sorted) and its per-tensor type rules
(`ModelBase.prepare_tensors`: 1-D and `*_norm.weight` tensors F32; with q8_0 every other weight
Q8_0, F16 where its rows are not whole 32-value blocks), and its `general.*` metadata
(`gguf.Metadata`). For qwen3_moe (Qwen3MoeModel -> Qwen2MoeModel, conversion/qwen.py) also the
MoE keys (`expert_count`, `expert_used_count`, `expert_feed_forward_length`), the router
`mlp.gate` as `blk.N.ffn_gate_inp` kept F32, and every expert's projections stacked into one
`[n_expert, out, in]` tensor per layer (`blk.N.ffn_{gate,up,down}_exps`). Two things differ: the vocabulary (a dummy one as above, because the
converter's tokenizer step needs transformers and rejects these tiny tokenizers; the special
token ids are gguf-py's `SpecialVocab` ones, as the converter writes them), and Gemma 3's
`layer_types`, which are also written as the per-layer bool array
`gemma3.attention.sliding_window_pattern` that llama.cpp reads (the converter writes none, and
llama.cpp's default period of 6 disagrees with a 4-layer checkpoint whose last layer is full). llama and qwen2 keep the short
writer above, so their committed fixtures stay byte-identical. See
crates/lmgen/tests/fixtures/gguf/README.md for the per-architecture mapping.

After writing (f32, f16, q8_0_py), the file is read back with gguf-py's GGUFReader: its metadata
and tensors are listed, every tensor is mapped back to its HF name by an independent table,
its transforms undone and its values compared with the safetensors checkpoint (exact for F32;
for Q8_0 the blocks must equal gguf-py's Q8_0 of the transformed HF tensor, for F16 its float16
rounding). Any mismatch exits non-zero.
"""
import json
import os
import struct
import sys

import gguf
import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16}


def read_safetensors(path):
    # The file is mapped, not read: F32 tensors are views of the mapping (no copy), so a checkpoint
    # of several GB (the Qwen3-30B-A3B shape) costs no more memory than the tensors being written.
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    data = np.memmap(path, np.uint8, mode="r", offset=8 + n)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = data[a:b]
        if info["dtype"] == "BF16":
            v = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            v = raw.view(DTYPES[info["dtype"]]).astype(np.float32, copy=False)
        out[name] = v.reshape(info["shape"])
    return out


def permute(w, n_head):
    # convert_hf_to_gguf.py LlamaModel.permute: HF rotate_half layout -> llama.cpp interleaved.
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


PER_LAYER = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def write(ckpt, out, float_type):
    cfg = json.load(open(os.path.join(ckpt, "config.json")))
    arch = cfg["model_type"]
    assert arch in ("llama", "qwen2"), arch
    w = gguf.GGUFWriter(out, arch)
    nh, nkv, h = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["hidden_size"]
    hd = cfg.get("head_dim") or h // nh
    w.add_context_length(4096)
    w.add_embedding_length(h)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_rope_dimension_count(hd)
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
    w.add_file_type({"f32": 0, "f16": 1, "q8_0_py": 7}[float_type])
    vocab = cfg["vocab_size"]
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<t{i}>".encode() for i in range(vocab)])
    w.add_token_scores([0.0] * vocab)
    w.add_token_types([1] * vocab)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    tensors = read_safetensors(os.path.join(ckpt, "model.safetensors"))
    for k, v in tensors.items():
        if k == "model.embed_tokens.weight":
            n = "token_embd.weight"
        elif k == "model.norm.weight":
            n = "output_norm.weight"
        elif k == "lm_head.weight":
            n = "output.weight"
        else:
            parts = k.split(".")  # model.layers.N.<mod>.<sub>.weight|bias
            i, rest = parts[2], ".".join(parts[3:-1])
            n = f"blk.{i}.{PER_LAYER[rest]}.{parts[-1]}"
            if arch == "llama" and rest == "self_attn.q_proj":
                v = permute(v, nh)
            elif arch == "llama" and rest == "self_attn.k_proj":
                v = permute(v, nkv)
        if v.ndim == 2 and float_type == "q8_0_py" and v.shape[1] % 32 == 0:
            q8 = gguf.GGMLQuantizationType.Q8_0
            w.add_tensor(n, gguf.quants.quantize(np.ascontiguousarray(v, dtype=np.float32), q8), raw_dtype=q8)
        elif v.ndim == 2 and float_type == "f16":
            w.add_tensor(n, v.astype(np.float16))
        else:
            w.add_tensor(n, np.ascontiguousarray(v, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---------------------------------------------------------------------------------------------
# llama.cpp's converter, for the architectures added after llama/qwen2.
# Line references are to llama.cpp@0c1e57098 (the copy vendored in llama-cpp-python 0.3.36):
# conversion/base.py (ModelBase, TextModel), conversion/qwen.py (Qwen2Model, Qwen3Model),
# conversion/gemma.py (Gemma3Model), conversion/phi.py (Phi3MiniModel), conversion/olmo.py
# (Olmo2Model), conversion/llama.py (LlamaModel), conversion/granite.py (GraniteModel).

# HF model_type -> (gguf.MODEL_ARCH member, converter class)
CONVERTER_ARCHES = {
    "qwen3": ("QWEN3", "Qwen3Model"),
    "gemma3_text": ("GEMMA3", "Gemma3Model"),
    "phi3": ("PHI3", "Phi3MiniModel"),
    "olmo2": ("OLMO2", "Olmo2Model"),
    "granite": ("GRANITE", "GraniteModel"),
    "qwen3_moe": ("QWEN3MOE", "Qwen3MoeModel"),
}


def find_hparam(hp, keys, optional=False):
    # ModelBase.find_hparam
    key = next((k for k in keys if k in hp), None)
    if key is not None:
        return hp[key]
    if optional:
        return None
    raise KeyError(f"could not find any of: {keys}")


def rope_parameters(hp):
    # TextModel.__init__: rope_parameters, with the global values mirrored into it.
    rp = dict(hp.get("rope_parameters", hp.get("rope_scaling")) or {})
    rope_theta = find_hparam(hp, ["global_rope_theta", "rope_global_theta", "rope_theta_global", "rope_theta",
                                  "rotary_emb_base"], optional=True)
    local_rope_theta = find_hparam(hp, ["local_rope_theta", "rope_local_theta", "rope_theta_local", "swa_rope_theta",
                                        "rope_local_base_freq"], optional=True)
    partial = find_hparam(hp, ["partial_rotary_factor", "rope_pct", "rope_percent"], optional=True)
    orig_max = find_hparam(hp, ["original_max_position_embeddings"], optional=True)
    if "full_attention" not in rp and "sliding_attention" not in rp:
        if local_rope_theta is not None:
            rp["sliding_attention"] = {"rope_theta": local_rope_theta}
        if "rope_theta" not in rp and rope_theta is not None:
            rp["rope_theta"] = rope_theta
        if "rope_type" not in rp and (rope_type := rp.get("type")) is not None:
            rp["rope_type"] = rope_type
        if "partial_rotary_factor" not in rp and partial is not None:
            rp["partial_rotary_factor"] = partial
        if "original_max_position_embeddings" not in rp and orig_max is not None:
            rp["original_max_position_embeddings"] = orig_max
    return rp


def text_model_params(w, hp, rp, block_count, ftype):
    # TextModel.set_gguf_parameters, for the keys these dense, non-MoE checkpoints can reach.
    w.add_block_count(block_count)
    if (n_ctx := find_hparam(hp, ["max_position_embeddings", "n_ctx", "n_positions", "max_length",
                                  "max_sequence_length", "model_max_length"], optional=True)) is not None:
        w.add_context_length(n_ctx)
    if (n_embd := find_hparam(hp, ["hidden_size", "n_embd", "dim"], optional=True)) is not None:
        w.add_embedding_length(n_embd)
    if (n_ff := find_hparam(hp, ["prefix_dense_intermediate_size", "dense_intermediate_size", "intermediate_size",
                                 "n_inner", "hidden_dim"], optional=True)) is not None:
        w.add_feed_forward_length(n_ff)
    if (n_head := find_hparam(hp, ["num_attention_heads", "n_head", "n_heads"], optional=True)) is not None:
        w.add_head_count(n_head)
    if (n_head_kv := find_hparam(hp, ["num_key_value_heads", "n_kv_heads"], optional=True)) is not None:
        w.add_head_count_kv(n_head_kv)
    if hp.get("is_causal") is False:
        w.add_causal_attention(False)
    rope = rp.get("full_attention", rp)
    if (rope_type := rope.get("rope_type")) is not None:
        factor = rope.get("factor")
        if rope_type == "linear" and factor is not None:
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(factor)
        elif rope_type not in ("default",):
            raise NotImplementedError(f"rope_type {rope_type!r}: not reproduced here (see TextModel)")
    if "mrope_section" in rp:
        raise NotImplementedError("mrope_section")
    if (theta := rope.get("rope_theta")) is not None:
        w.add_rope_freq_base(theta)
    if (local_theta := rp.get("sliding_attention", {}).get("rope_theta")) is not None:
        w.add_rope_freq_base_swa(local_theta)
    if (eps := find_hparam(hp, ["rms_norm_eps", "norm_eps"], optional=True)) is not None:
        w.add_layer_norm_rms_eps(eps)
    if (eps := find_hparam(hp, ["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"], optional=True)) is not None:
        w.add_layer_norm_eps(eps)
    if (n_experts := find_hparam(hp, ["num_local_experts", "num_experts", "n_routed_experts"], optional=True)) is not None:
        w.add_expert_count(n_experts)
    if (n_used := find_hparam(hp, ["num_experts_per_tok", "num_experts_per_token", "top_k_experts"],
                              optional=True)) is not None:
        w.add_expert_used_count(n_used)
    for keys in (["n_group"], ["topk_group"],
                 ["score_function", "scoring_func", "score_func", "moe_router_activation",
                  "moe_router_activation_func", "expert_selection_fn"]):
        if find_hparam(hp, keys, optional=True) is not None:
            raise NotImplementedError(f"MoE key {keys[0]}: not reproduced here")
    if (head_dim := hp.get("head_dim")) is not None:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_file_type(ftype)


def set_gguf_parameters(w, model_type, hp, rp, block_count, ftype):
    if model_type == "qwen3":
        # Qwen3Model -> Qwen2Model.set_gguf_parameters: TextModel's, then _try_set_pooling_type
        # (nothing without modules.json / classifier_pooling); no rerank keys (not a reranker).
        text_model_params(w, hp, rp, block_count, ftype)
        assert hp.get("classifier_pooling") is None
    elif model_type == "qwen3_moe":
        # Qwen3MoeModel -> Qwen2MoeModel.set_gguf_parameters (conversion/qwen.py): TextModel's (with
        # expert_count and expert_used_count), then the experts' width; no shared expert in Qwen3.
        text_model_params(w, hp, rp, block_count, ftype)
        if (moe_ff := hp.get("moe_intermediate_size")) is not None:
            w.add_expert_feed_forward_length(moe_ff)
        assert hp.get("shared_expert_intermediate_size") is None
    elif model_type == "gemma3_text":
        # Gemma3Model.set_gguf_parameters: TextModel's, then these (repeated keys overwrite in
        # place: GGUFWriter.add_key_value keeps a dict).
        text_model_params(w, hp, rp, block_count, ftype)
        w.add_context_length(hp.get("max_position_embeddings", 131072))
        w.add_head_count(hp.get("num_attention_heads", 8))
        w.add_layer_norm_rms_eps(hp.get("rms_norm_eps", 1e-6))
        w.add_key_length(hp.get("head_dim", 256))
        w.add_value_length(hp.get("head_dim", 256))
        w.add_rope_freq_base(rp.get("full_attention", rp).get("rope_theta", 1_000_000.0))
        assert hp.get("attn_logit_softcapping") is None
        if final_logit_softcap := hp.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(final_logit_softcap)
        if hp.get("sliding_window_pattern") != 1:
            w.add_sliding_window(hp["sliding_window"])
        w.add_head_count_kv(hp.get("num_key_value_heads", 4))
        # Deviation from the converter, which writes no pattern: llama.cpp then assumes a period of
        # 6 (`load_swa_pattern(ml, 6)`), which makes every layer of a model with fewer than 6 layers
        # sliding, while `layer_types` says otherwise (the golden checkpoint's layer 3 is full). The
        # per-layer array llama.cpp also accepts (`gguf.GGUFWriter.add_sliding_window_pattern`)
        # carries `layer_types` as it is.
        if (layer_types := hp.get("layer_types")) is not None:
            w.add_sliding_window_pattern([t == "sliding_attention" for t in layer_types])
    elif model_type == "phi3":
        # Phi3MiniModel.set_gguf_parameters (does not call TextModel's).
        n_embd = find_hparam(hp, ["hidden_size", "n_embd"])
        n_head = find_hparam(hp, ["num_attention_heads", "n_head"])
        n_head_kv = find_hparam(hp, ["num_key_value_heads", "n_head_kv"])
        rms_eps = find_hparam(hp, ["rms_norm_eps"])
        max_pos = find_hparam(hp, ["n_positions", "max_position_embeddings"])
        orig_max_pos = rp["original_max_position_embeddings"]
        rot_pct = rp.get("partial_rotary_factor", 1.0)
        rope_dims = int(rot_pct * n_embd) // n_head
        w.add_context_length(max_pos)
        w.add_rope_scaling_orig_ctx_len(orig_max_pos)
        w.add_embedding_length(n_embd)
        w.add_feed_forward_length(find_hparam(hp, ["intermediate_size"]))
        w.add_block_count(block_count)
        w.add_head_count(n_head)
        w.add_head_count_kv(n_head_kv)
        w.add_layer_norm_rms_eps(rms_eps)
        w.add_rope_dimension_count(rope_dims)
        w.add_rope_freq_base(rp.get("full_attention", rp)["rope_theta"])
        w.add_file_type(ftype)
        sliding_window = hp.get("sliding_window")
        w.add_sliding_window(0 if sliding_window is None else sliding_window)
        # Phi3MiniModel.generate_extra_tensors writes rope_factors_{long,short} only with long_factor.
        assert not rp.get("long_factor"), "longrope factors: not reproduced here"
    elif model_type == "olmo2":
        # Olmo2Model.set_gguf_parameters
        text_model_params(w, hp, rp, block_count, ftype)
        if "sliding_window" in hp:
            raise NotImplementedError("Olmo3 sliding window: not reproduced here")
    elif model_type == "granite":
        # GraniteModel.set_gguf_parameters -> LlamaModel.set_gguf_parameters -> TextModel's
        if head_dim := hp.pop("head_dim", None):
            print(f"Ignoring head_dim ({head_dim}) from config for Granite")
        text_model_params(w, hp, rp, block_count, ftype)
        w.add_vocab_size(hp["vocab_size"])
        if (rope_dim := hp.get("head_dim")) is None:
            rope_dim = hp["hidden_size"] // hp["num_attention_heads"]
        w.add_rope_dimension_count(rope_dim)
        if attention_scale := hp.get("attention_multiplier"):
            w.add_attention_scale(attention_scale)
        if embedding_scale := hp.get("embedding_multiplier"):
            w.add_embedding_scale(embedding_scale)
        if residual_scale := hp.get("residual_multiplier"):
            w.add_residual_scale(residual_scale)
        if logits_scale := hp.get("logits_scaling"):
            w.add_logit_scale(logits_scale)
        assert not (hp.get("spatial_target_layers") or hp.get("deepstack_layer_map"))
    else:
        raise ValueError(model_type)


def llama_permute(weights, n_head, n_head_kv):
    # LlamaModel.permute (conversion/llama.py): for k, the kv head count.
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(
        weights.shape)


def modify_tensor(model_type, hp, ckpt, name, data):
    """The model class's modify_tensors before ModelBase's name mapping: (hf_name, data)."""
    if model_type == "gemma3_text":
        # Gemma3Model.modify_tensors: drop out-of-vocabulary embedding rows, +1 on norms.
        if "embed_tokens.weight" in name:
            with open(os.path.join(ckpt, "tokenizer.json"), encoding="utf-8") as f:
                tok = json.load(f)
            n_vocab_real = len(tok["model"]["vocab"]) + len(tok["added_tokens"])
            data = data[:n_vocab_real]
        if name.endswith("norm.weight"):
            data = data + np.float32(1.0)
    elif model_type == "granite":
        # LlamaModel.modify_tensors (undo_permute = True)
        n_head = find_hparam(hp, ["n_heads", "num_attention_heads"])
        n_kv_head = find_hparam(hp, ["n_kv_heads", "num_key_value_heads"])
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            data = llama_permute(data, n_head, n_head)
        if name.endswith(("k_proj.weight", "k_proj.bias")):
            data = llama_permute(data, n_head, n_kv_head)
    # Qwen3Model, Phi3MiniModel, Olmo2Model: no transform.
    return data


def stack_experts(model_type, hp, experts, name, data):
    """Qwen2MoeModel.modify_tensors (conversion/qwen.py), for per-expert HF tensors: an expert's
    projections are held until all `num_experts * 3` of its layer have been seen, then each
    projection of every expert is stacked into one `[n_expert, out, in]` tensor named
    `model.layers.N.mlp.experts.{down,gate,up}_proj.weight` (gguf-py maps it to
    `blk.N.ffn_{down,gate,up}_exps`), in that order. Every other tensor passes through."""
    if model_type != "qwen3_moe" or "experts" not in name:
        yield name, data
        return
    if name.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
        raise NotImplementedError("fused (transformers 5) expert tensors: not reproduced here")
    n_experts = find_hparam(hp, ["num_local_experts", "num_experts"])
    bid = next(int(p) for p in name.split(".") if p.isdecimal())
    layer = experts.setdefault(bid, {})
    layer[name] = data
    if len(layer) < n_experts * 3:
        return
    for w_name in ("down_proj", "gate_proj", "up_proj"):
        stacked = np.stack([layer.pop(f"model.layers.{bid}.mlp.experts.{x}.{w_name}.weight")
                            for x in range(n_experts)], axis=0)
        yield f"model.layers.{bid}.mlp.experts.{w_name}.weight", stacked


def tensor_qtype(new_name, n_dims, ftype):
    # ModelBase.prepare_tensors: which GGML type each tensor gets.
    if n_dims <= 1 or new_name.endswith("_norm.weight"):
        return gguf.GGMLQuantizationType.F32
    if new_name[-7:] not in (".weight", ".lora_a", ".lora_b"):
        return gguf.GGMLQuantizationType.F32
    if new_name.endswith(".ffn_gate_inp.weight"):
        # MODEL_TENSOR.FFN_GATE_INP (the MoE router) is always F32, as llama.cpp's quantizer keeps it
        return gguf.GGMLQuantizationType.F32
    return {gguf.LlamaFileType.ALL_F32: gguf.GGMLQuantizationType.F32,
            gguf.LlamaFileType.MOSTLY_F16: gguf.GGMLQuantizationType.F16,
            gguf.LlamaFileType.MOSTLY_Q8_0: gguf.GGMLQuantizationType.Q8_0}[ftype]


def quantize(data, qtype):
    # ModelBase.prepare_tensors: gguf.quants.quantize, F16 when the rows are not whole blocks.
    try:
        return gguf.quants.quantize(data, qtype), qtype
    except gguf.QuantError:
        qtype = gguf.GGMLQuantizationType.F16
        return gguf.quants.quantize(data, qtype), qtype


def write_converter(ckpt, out, float_type):
    from pathlib import Path

    cfg = json.load(open(os.path.join(ckpt, "config.json")))
    model_type = cfg["model_type"]
    arch_member, _cls = CONVERTER_ARCHES[model_type]
    arch = gguf.MODEL_ARCH[arch_member]
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "q8_0_py": gguf.LlamaFileType.MOSTLY_Q8_0}[float_type]
    # hparams: the converter takes AutoConfig.from_pretrained(dir).to_dict(); for the keys read
    # here that is config.json's values (transformers 5 writes rope_parameters, which it reads).
    hp = dict(cfg)
    rp = rope_parameters(hp)
    block_count = find_hparam(hp, ["n_layers", "num_hidden_layers", "n_layer", "num_layers"])
    tensor_map = gguf.get_tensor_name_map(arch, block_count)
    w = gguf.GGUFWriter(out, gguf.MODEL_ARCH_NAMES[arch])

    # ModelBase.prepare_tensors: tensors in SafetensorsLocal order (names sorted).
    tensors = read_safetensors(os.path.join(ckpt, "model.safetensors"))
    experts = {}  # Qwen2MoeModel.modify_tensors' `_experts`: per layer, HF name -> tensor
    for name in sorted(tensors):
        if name.endswith((".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")):
            continue
        data = modify_tensor(model_type, hp, ckpt, name, tensors[name].astype(np.float32, copy=False))
        for name, data in stack_experts(model_type, hp, experts, name, data):
            new_name = tensor_map.get_name(key=name, try_suffixes=(".weight", ".bias"))
            if new_name is None:
                raise ValueError(f"Can not map tensor {name!r}")
            data = np.ascontiguousarray(data)
            data, qtype = quantize(data, tensor_qtype(new_name, data.ndim, ftype))
            w.add_tensor(new_name, data, raw_dtype=qtype)
    if any(experts.values()):
        raise ValueError(f"Unprocessed experts: {[k for d in experts.values() for k in d]}")

    # ModelBase.prepare_metadata
    total_params, shared_params, expert_params, expert_count = w.get_total_parameter_count()
    metadata = gguf.Metadata.load(None, Path(ckpt), None, total_params)
    if metadata.name is None:
        metadata.name = Path(ckpt).name
    if metadata.size_label is None and total_params > 0:
        metadata.size_label = gguf.size_label(total_params, shared_params, expert_params, expert_count)
    w.add_type(gguf.GGUFType.MODEL)
    metadata.set_gguf_meta_model(w)
    set_gguf_parameters(w, model_type, hp, rp, block_count, ftype)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    # TextModel.prepare_metadata -> set_vocab. A dummy vocabulary (see the docstring), then the
    # special token ids / add_*_token flags / chat template gguf.SpecialVocab reads.
    vocab = cfg["vocab_size"]
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<t{i}>".encode() for i in range(vocab)])
    w.add_token_scores([0.0] * vocab)
    w.add_token_types([1] * vocab)
    gguf.SpecialVocab(Path(ckpt), load_merges=False, n_vocab=vocab).add_to_gguf(w, quiet=True)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_any(ckpt, out, float_type):
    cfg = json.load(open(os.path.join(ckpt, "config.json")))
    if cfg["model_type"] in CONVERTER_ARCHES:
        write_converter(ckpt, out, float_type)
    else:
        write(ckpt, out, float_type)


# ---------------------------------------------------------------------------------------------
# Read-back check: an independent GGUF -> HF table per architecture, transforms undone.

TOP_BACK = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
            "output.weight": "lm_head.weight"}
_ATTN = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
         "attn_output": "self_attn.o_proj"}
_MLP = {"ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
_QK_NORM = {"attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}
LAYER_BACK = {
    "llama": {"attn_norm": "input_layernorm", **_ATTN, "ffn_norm": "post_attention_layernorm", **_MLP},
    "qwen2": {"attn_norm": "input_layernorm", **_ATTN, "ffn_norm": "post_attention_layernorm", **_MLP},
    "qwen3": {"attn_norm": "input_layernorm", **_ATTN, **_QK_NORM, "ffn_norm": "post_attention_layernorm", **_MLP},
    "gemma3": {"attn_norm": "input_layernorm", **_ATTN, **_QK_NORM, "post_attention_norm": "post_attention_layernorm",
               "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm", **_MLP},
    "phi3": {"attn_norm": "input_layernorm", "attn_qkv": "self_attn.qkv_proj", "attn_output": "self_attn.o_proj",
             "ffn_norm": "post_attention_layernorm", "ffn_up": "mlp.gate_up_proj", "ffn_down": "mlp.down_proj"},
    "olmo2": {**_ATTN, **_QK_NORM, "post_attention_norm": "post_attention_layernorm",
              "post_ffw_norm": "post_feedforward_layernorm", **_MLP},
    "granite": {"attn_norm": "input_layernorm", **_ATTN, "ffn_norm": "post_attention_layernorm", **_MLP},
    "qwen3moe": {"attn_norm": "input_layernorm", **_ATTN, **_QK_NORM, "ffn_norm": "post_attention_layernorm",
                 "ffn_gate_inp": "mlp.gate"},
}
# Stacked experts: GGUF module -> the HF projection each expert `mlp.experts.E.<proj>` holds.
EXPERTS_BACK = {"ffn_gate_exps": "gate_proj", "ffn_up_exps": "up_proj", "ffn_down_exps": "down_proj"}


def expert_names_of(cfg, gguf_name):
    """The HF names of the experts stacked in `gguf_name` (in expert order), or None."""
    blk, i, module, kind = gguf_name.split(".")
    if module not in EXPERTS_BACK:
        return None
    n = cfg.get("num_experts") or cfg["num_local_experts"]
    return [f"model.layers.{i}.mlp.experts.{e}.{EXPERTS_BACK[module]}.{kind}" for e in range(n)]


def hf_name_of(arch, gguf_name):
    if gguf_name in TOP_BACK:
        return TOP_BACK[gguf_name]
    blk, i, module, kind = gguf_name.split(".")
    assert blk == "blk", gguf_name
    return f"model.layers.{i}.{LAYER_BACK[arch][module]}.{kind}"


def unpermute(w, n_head):
    # Inverse of LlamaModel.permute: GGUF row (head h, j, s) -> HF row (head h, s, j).
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def verify(ckpt, out):
    cfg = json.load(open(os.path.join(ckpt, "config.json")))
    hf = read_safetensors(os.path.join(ckpt, "model.safetensors"))
    r = gguf.GGUFReader(out)
    arch = r.fields["general.architecture"].contents()
    print(f"== {out}: general.architecture = {arch}")
    for field in r.fields.values():
        if field.name.startswith("GGUF."):
            continue
        v = field.contents()
        if isinstance(v, list) and len(v) > 8:
            v = f"[{len(v)} values: {v[:3]} ...]"
        elif isinstance(v, str) and len(v) > 60:
            v = repr(v[:57] + "...")
        print(f"  {field.name} = {v}")
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    seen, failures = set(), []
    for t in r.tensors:
        stacked = expert_names_of(cfg, t.name) if t.name.startswith("blk.") else None
        if stacked is not None:
            # one [n_expert, out, in] tensor for the experts' per-expert HF tensors
            hf_name = stacked[0].replace(".experts.0.", ".experts.E.", 1)
            seen.update(stacked)
            ref = np.stack([hf[n] for n in stacked], axis=0)
        else:
            hf_name = hf_name_of(arch, t.name)
            seen.add(hf_name)
            ref = hf[hf_name]
        shape = tuple(int(d) for d in reversed(t.shape))  # GGUF lists ggml's ne order
        qtype = t.tensor_type
        got = gguf.quants.dequantize(t.data, qtype).reshape(shape).astype(np.float32)
        # the forward transform, for the block/rounding checks
        if arch == "gemma3" and hf_name.endswith("norm.weight"):
            fwd = ref + np.float32(1.0)
        elif arch in ("llama", "granite") and hf_name.endswith("q_proj.weight"):
            fwd = permute(ref, nh)
        elif arch in ("llama", "granite") and hf_name.endswith("k_proj.weight"):
            fwd = permute(ref, nkv)
        else:
            fwd = ref
        # undo the transform on what the file holds
        back = got
        if arch == "gemma3" and hf_name.endswith("norm.weight"):
            back = got - np.float32(1.0)
        elif arch in ("llama", "granite") and hf_name.endswith("q_proj.weight"):
            back = unpermute(got, nh)
        elif arch in ("llama", "granite") and hf_name.endswith("k_proj.weight"):
            back = unpermute(got, nkv)
        if back.shape != ref.shape:
            failures.append(f"{t.name}: shape {back.shape} vs HF {ref.shape}")
            continue
        undo_diff = float(np.max(np.abs(back - ref)))
        if qtype == gguf.GGMLQuantizationType.F32:
            fwd_diff = float(np.max(np.abs(got - fwd)))
            ok = fwd_diff == 0.0 and (undo_diff == 0.0 or arch == "gemma3")
            note = f"max|gguf-fwd(hf)|={fwd_diff:g} max|undo(gguf)-hf|={undo_diff:g}"
        elif qtype == gguf.GGMLQuantizationType.F16:
            fwd_diff = float(np.max(np.abs(got - fwd.astype(np.float16).astype(np.float32))))
            ok = fwd_diff == 0.0
            note = f"max|gguf-f16(fwd(hf))|={fwd_diff:g} max|undo(gguf)-hf|={undo_diff:g}"
        elif qtype == gguf.GGMLQuantizationType.Q8_0:
            same = np.array_equal(np.asarray(t.data).reshape(-1),
                                  gguf.quants.quantize(np.ascontiguousarray(fwd), qtype).reshape(-1))
            ok = same
            note = f"blocks==Q8_0(fwd(hf)):{same} max|undo(gguf)-hf|={undo_diff:g}"
        else:
            ok, note = True, f"{qtype.name}: not compared"
        print(f"  {t.name:32s} {qtype.name:5s} {str(shape):16s} <- {hf_name:48s} {note}{'' if ok else '  MISMATCH'}")
        del ref, got, fwd, back
        if not ok:
            failures.append(f"{t.name}: {note}")
    tied = cfg.get("tie_word_embeddings", False)
    missing = [k for k in hf if k not in seen and not (tied and k == "lm_head.weight")]
    if missing:
        failures.append(f"HF tensors not in the file: {missing}")
    if failures:
        sys.exit(f"{out}: verification FAILED:\n  " + "\n  ".join(failures))
    print(f"  OK: {len(r.tensors)} tensors map back to the checkpoint")


def main():
    ckpt, out, typ = sys.argv[1:4]
    if typ in ("f32", "f16", "q8_0_py"):
        write_any(ckpt, out, typ)
        verify(ckpt, out)
        return
    import llama_cpp
    ftype = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_k_s": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_S,
             "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}[typ]
    # An f32 file already written from the same checkpoint (4th argument) is quantized as it is;
    # otherwise one is written first and removed after.
    src = sys.argv[4] if len(sys.argv) > 4 else None
    tmp = src or out + ".f32.gguf"
    if src is None:
        write_any(ckpt, tmp, "f32")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 1
    rc = llama_cpp.llama_model_quantize(tmp.encode(), out.encode(), params)
    if src is None:
        os.remove(tmp)
    if rc != 0:
        sys.exit(f"llama_model_quantize failed with {rc}")


if __name__ == "__main__":
    main()
