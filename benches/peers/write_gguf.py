"""Writes a GGUF file (llama.cpp's format) from an lmgen/HF safetensors checkpoint, with gguf-py.

Usage: python write_gguf.py CHECKPOINT_DIR OUT.gguf TYPE
       (TYPE: f32 | f16 | q8_0_py | q8_0 | q4_k_s | q4_k_m)

f32 and f16 are written directly. q8_0_py is written directly too, with gguf-py's Q8_0 quantizer
(`gguf.quants.quantize`, bit-exact with ggml's reference `quantize_row_q8_0`) on every 2-D weight,
as llama.cpp's Q8_0 file type does (norms and biases stay f32); it needs no llama.cpp. The other
quantized types are made from the f32 file by llama.cpp's own
quantizer (llama_model_quantize through llama-cpp-python), with its rules for which tensors get
which block type. The vocabulary is a dummy one (token ids are fed directly, never text). As
convert_hf_to_gguf.py does, Llama q/k rows are permuted to llama.cpp's rotary layout, so the
GGUF computes the same function as the checkpoint.
"""
import json
import os
import struct
import sys

import gguf
import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = data[a:b]
        if info["dtype"] == "BF16":
            v = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            v = np.frombuffer(raw, DTYPES[info["dtype"]]).astype(np.float32)
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


def main():
    ckpt, out, typ = sys.argv[1:4]
    if typ in ("f32", "f16", "q8_0_py"):
        write(ckpt, out, typ)
        return
    import llama_cpp
    ftype = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_k_s": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_S,
             "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}[typ]
    tmp = out + ".f32.gguf"
    write(ckpt, tmp, "f32")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 1
    rc = llama_cpp.llama_model_quantize(tmp.encode(), out.encode(), params)
    os.remove(tmp)
    if rc != 0:
        sys.exit(f"llama_model_quantize failed with {rc}")


if __name__ == "__main__":
    main()
