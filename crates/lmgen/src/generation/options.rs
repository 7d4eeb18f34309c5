//! What `generate()` takes besides the inputs and the config: the arguments of transformers'
//! `generate()` that are not `GenerationConfig` fields.

use crate::generation::constraints::Constraint;
use crate::generation::logits::{LogitsProcessor, PrefixAllowedTokensFn};
use crate::generation::stopping::StoppingCriterion;
use crate::generation::streamer::TokenStreamer;
use crate::generation::GenerationConfig;
use crate::models::CausalLM;
use crate::tokenizer::Tokenizer;
use crate::TokenId;

/// Extra arguments of `generate()` (HF `generate(logits_processor=..., stopping_criteria=...,
/// prefix_allowed_tokens_fn=..., streamer=..., tokenizer=..., negative_prompt_ids=...)`).
#[derive(Default)]
pub struct GenerateOptions<'a> {
    /// Seed of the sampler's RNG: the same seed gives the same tokens. `None` draws one from the OS.
    /// (transformers uses torch's global RNG; lmgen never has a global RNG.)
    pub seed: Option<u64>,
    /// Needed for `stop_strings` and `token_healing`, as in transformers.
    pub tokenizer: Option<&'a Tokenizer>,
    /// The model's own generation config (HF `model.generation_config`: the checkpoint's
    /// `generation_config.json`), which `token_healing`'s one-token `generate()` starts from, as
    /// in transformers. `None` stands for an empty one (global defaults);
    /// [`crate::Pipeline`] passes its checkpoint's.
    pub model_generation_config: Option<&'a GenerationConfig>,
    /// The caller's processors, merged as transformers does: one of the same type as a built-in
    /// replaces it in place, the others run after the built-ins and before the sampling warpers.
    pub logits_processors: Vec<Box<dyn LogitsProcessor + 'a>>,
    /// The caller's stopping criteria, checked after the built-in ones.
    pub stopping_criteria: Vec<Box<dyn StoppingCriterion + 'a>>,
    /// HF `prefix_allowed_tokens_fn`: restricts each step to the tokens it returns.
    pub prefix_allowed_tokens_fn: Option<PrefixAllowedTokensFn>,
    /// Classifier-free guidance negative prompt (`negative_prompt_ids`); default: the last prompt token.
    pub negative_prompt_ids: Option<Vec<Vec<TokenId>>>,
    /// Its attention mask (`negative_prompt_attention_mask`).
    pub negative_prompt_attention_mask: Option<Vec<Vec<u8>>>,
    /// Receives the prompt, then each step's tokens (batch size 1 only, as in transformers).
    pub streamer: Option<&'a mut dyn TokenStreamer>,
    /// HF `constraints`: tokens the output must contain; non-empty selects constrained beam search
    /// (with `force_words_ids`, whose constraints come after these).
    pub constraints: Vec<Constraint>,
    /// Assisted decoding with this draft model (HF `assistant_model`); batch size 1, greedy search
    /// or sampling. With another vocabulary size it needs `tokenizer` and `assistant_tokenizer`.
    pub assistant_model: Option<&'a dyn CausalLM>,
    /// The draft's tokenizer when it differs from the target's (HF `assistant_tokenizer`,
    /// universal assisted decoding).
    pub assistant_tokenizer: Option<&'a Tokenizer>,
}

impl std::fmt::Debug for GenerateOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerateOptions")
            .field("seed", &self.seed)
            .field("tokenizer", &self.tokenizer.is_some())
            .field(
                "model_generation_config",
                &self.model_generation_config.is_some(),
            )
            .field("logits_processors", &self.logits_processors.len())
            .field("stopping_criteria", &self.stopping_criteria.len())
            .field(
                "prefix_allowed_tokens_fn",
                &self.prefix_allowed_tokens_fn.is_some(),
            )
            .field("streamer", &self.streamer.is_some())
            .field("constraints", &self.constraints)
            .field("assistant_model", &self.assistant_model.is_some())
            .field("assistant_tokenizer", &self.assistant_tokenizer.is_some())
            .finish()
    }
}
