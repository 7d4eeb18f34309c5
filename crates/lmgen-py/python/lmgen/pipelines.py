"""`pipeline("text-generation", model=...)`: prompt in, text out, as transformers'."""

from .modeling import AutoModelForCausalLM, LmgenModelForCausalLM
from .tokenization import AutoTokenizer


class TextGenerationPipeline:
    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def __call__(self, text_inputs, return_full_text=True, **generate_kwargs):
        single = isinstance(text_inputs, str)
        prompts = [text_inputs] if single else list(text_inputs)
        results = []
        for prompt in prompts:
            ids = self.tokenizer.encode(prompt)
            out = self.model.generate(input_ids=[ids], **generate_kwargs)
            # As transformers 5: the new tokens decoded on their own, after the prompt text.
            texts = []
            for row in out:
                new = self.tokenizer.decode(row[len(ids):], skip_special_tokens=True)
                texts.append({"generated_text": prompt + new if return_full_text else new})
            results.append(texts)
        return results[0] if single else results


def pipeline(task, model=None, tokenizer=None, dtype=None, torch_dtype=None, device=None, **kwargs):
    """transformers' `pipeline(task, model=...)`; `task` must be "text-generation"."""
    if task != "text-generation":
        raise ValueError(f"lmgen's pipeline() supports the task 'text-generation', got {task!r}")
    if kwargs:
        raise ValueError(f"pipeline() got arguments lmgen does not take: {sorted(kwargs)}")
    if not isinstance(model, LmgenModelForCausalLM):
        model = AutoModelForCausalLM.from_pretrained(
            model, dtype=dtype if dtype is not None else torch_dtype, device=device)
    if tokenizer is None:
        tokenizer = model.tokenizer
    elif isinstance(tokenizer, str):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    return TextGenerationPipeline(model, tokenizer)
