"""lmgen: transformers' `generate()` API on lmgen (Hugging Face text generation in Rust).

Replace `from transformers import ...` with `from lmgen import ...`:

    from lmgen import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained("path/to/checkpoint")
    tokenizer = AutoTokenizer.from_pretrained("path/to/checkpoint", padding_side="left")
    inputs = tokenizer(["A list of colors: red, blue"], return_tensors="np")
    ids = model.generate(**inputs, max_new_tokens=20)
    print(tokenizer.batch_decode(ids, skip_special_tokens=True)[0])
"""

from .generation_config import GenerationConfig
from .modeling import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSpeechSeq2Seq,
    ContinuousBatchingManager,
    LmgenModelForCausalLM,
)
from .outputs import (
    GenerateBeamDecoderOnlyOutput,
    GenerateBeamEncoderDecoderOutput,
    GenerateDecoderOnlyOutput,
    GenerateEncoderDecoderOutput,
    ModelOutput,
)
from .pipelines import TextGenerationPipeline, pipeline
from .processors import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from .streamers import TextIteratorStreamer
from .tokenization import AutoTokenizer, BatchEncoding, PreTrainedTokenizer

__all__ = [
    "AutoModelForCausalLM",
    "AutoModelForSeq2SeqLM",
    "AutoModelForSpeechSeq2Seq",
    "AutoTokenizer",
    "BatchEncoding",
    "ContinuousBatchingManager",
    "GenerateBeamDecoderOnlyOutput",
    "GenerateBeamEncoderDecoderOutput",
    "GenerateDecoderOnlyOutput",
    "GenerateEncoderDecoderOutput",
    "GenerationConfig",
    "LmgenModelForCausalLM",
    "LogitsProcessor",
    "LogitsProcessorList",
    "ModelOutput",
    "PreTrainedTokenizer",
    "StoppingCriteria",
    "StoppingCriteriaList",
    "TextGenerationPipeline",
    "TextIteratorStreamer",
    "pipeline",
]
