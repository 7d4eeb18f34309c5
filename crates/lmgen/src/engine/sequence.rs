//! A request inside the engine: its tokens, its blocks, and its own processors, stopping criteria
//! and seeded sampler, built once when it is added.

use std::sync::Arc;
use std::time::Instant;

use crate::cache::paged::prefix_cache::BlockHash;
use crate::cache::paged::{BlockAllocator, BlockTable, CrossSlots};
use crate::cache::CacheImplementation;
use crate::cache::LayerStates;
use crate::error::{Error, Result};
use crate::generation::context::{GenerationContext, Rows, StopVocabulary};
use crate::generation::encoder_decoder::decoder_start_token_ids;
use crate::generation::logits::{LogitsProcessorList, Scores};
use crate::generation::sampler::Sampler;
use crate::generation::stop_strings::CleanTokenizerVocab;
use crate::generation::stopping::StoppingCriteriaList;
use crate::generation::{log_sum_exp, FinishReason, GenerateOptions, Mode};
use crate::models::seq2seq::EncoderInput;
use crate::models::CausalLM;
use crate::TokenId;

use super::request::{OutputSink, Request, RequestStatus, RequestUpdate, TokenLogprob};

/// One request's state on the engine thread.
pub(crate) struct Sequence {
    pub id: String,
    /// Order of arrival: the scheduler serves (and preempts) by it.
    pub arrival: u64,
    pub prompt_len: usize,
    /// Prompt then generated tokens.
    pub tokens: Vec<TokenId>,
    /// Tokens whose keys and values are in the cache.
    pub computed: usize,
    pub table: BlockTable,
    /// Its recurrent layers' states (linear attention, convolutions): its state slot, empty
    /// until its first step and again once it ends or is preempted.
    pub states: LayerStates,
    /// An encoder-decoder model's cross-attention state (see [`EncoderState`]); `None` for a
    /// decoder-only model.
    pub encoder: Option<EncoderState>,
    /// Prefix hashes of the full blocks registered (or shared) so far.
    pub hashes: Vec<BlockHash>,
    /// Absolute `max_length`, for the admission check.
    pub max_length: usize,
    pub status: RequestStatus,
    pub cached_prompt_tokens: usize,
    processors: LogitsProcessorList<'static>,
    stopping: StoppingCriteriaList<'static>,
    sampler: Sampler,
    logprobs: Option<usize>,
    sink: Box<dyn OutputSink>,
}

impl std::fmt::Debug for Sequence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequence")
            .field("id", &self.id)
            .field("tokens", &self.tokens.len())
            .field("computed", &self.computed)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// An encoder-decoder sequence's encoder output and the blocks of its cross-attention keys and
/// values ([`crate::cache::paged::cross`]).
///
/// The encoder runs once, when the request is added; its output is kept beside the pool until
/// the request ends, so that a preempted sequence recomputes its cross-attention keys and values
/// (a projection per layer) without running the encoder again. The keys and values take
/// `ceil(s / block_size)` blocks of the pool from admission until the sequence finishes, is
/// preempted or cancelled.
#[derive(Debug)]
pub(crate) struct EncoderState {
    /// `[1, s, hidden]`: the encoder's last hidden state.
    output: candle_core::Tensor,
    /// `s`.
    len: usize,
    /// Blocks holding the cross-attention keys and values of the `s` encoder positions.
    table: BlockTable,
    /// Whether those blocks hold them (a forward wrote them since the blocks were allocated).
    written: bool,
}

impl EncoderState {
    /// Encoder positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes of the encoder output kept beside the pool.
    pub fn bytes(&self) -> usize {
        self.output.elem_count() * self.output.dtype().size_in_bytes()
    }

    /// This step's view of its blocks: the encoder output goes along until a forward wrote the
    /// keys and values.
    pub fn slots(&self, block_size: usize, device: &candle_core::Device) -> Result<CrossSlots> {
        let slots = self.table.slots(self.len(), block_size);
        let to_write = (!self.written).then(|| self.output.clone());
        CrossSlots::new(slots, to_write, device)
    }

    /// A forward wrote the keys and values into the blocks.
    pub fn mark_written(&mut self) {
        self.written = true;
    }

    fn release(&mut self, alloc: &mut BlockAllocator) {
        self.table.release(alloc);
        self.written = false;
    }
}

/// Config fields transformers builds from the prompt rows or the model, which a per-request list
/// cannot hold; refused rather than ignored.
fn refuse_unsupported(request: &Request) -> Result<()> {
    let c = &request.generation_config;
    let field = if c.encoder_repetition_penalty.is_some_and(|p| p != 1.0) {
        Some("encoder_repetition_penalty")
    } else if c.encoder_no_repeat_ngram_size.is_some_and(|n| n > 0) {
        Some("encoder_no_repeat_ngram_size")
    } else if c.guidance_scale.is_some_and(|g| g != 1.0) {
        Some("guidance_scale")
    } else if c.num_return_sequences.is_some_and(|n| n != 1) {
        Some("num_return_sequences")
    } else {
        None
    };
    match field {
        Some(f) => Err(Error::unsupported(format!(
            "`{f}` is not supported by the continuous batching engine (use generate(); for \
             `num_return_sequences`, submit one request per sequence)"
        ))),
        None => Ok(()),
    }
}

impl Sequence {
    /// Validates `request` against the model and builds its state. For an encoder-decoder model
    /// the encoder runs here, on the request's prompt (the sequence then decodes from
    /// `decoder_start_token_id`) or on its `input_features` (then `input_ids` are the decoder's
    /// prompt).
    pub fn new(
        id: String,
        arrival: u64,
        mut request: Request,
        llm: &dyn CausalLM,
        stop_vocab: Option<&CleanTokenizerVocab>,
        sink: Box<dyn OutputSink>,
    ) -> Result<Self> {
        refuse_unsupported(&request)?;
        let model = llm.config();
        let config = &request.generation_config;
        let features = request.input_features.take();
        if request.input_ids.is_empty() && features.is_none() {
            return Err(Error::input(
                "a prompt has no tokens; generation needs at least one",
            ));
        }
        if let Some(&id) = request
            .input_ids
            .iter()
            .find(|&&i| i as usize >= model.vocab_size)
        {
            return Err(Error::input(format!(
                "token id {id} is outside the vocabulary (vocab_size {})",
                model.vocab_size
            )));
        }
        let encoder =
            match (llm.encoder(), features) {
                (Some(encoder), features) => {
                    let out = match features {
                        // [n_mels, frames] -> [1, n_mels, frames]; the decoder prompt is `input_ids`.
                        Some(features) => {
                            let features = features
                                .to_device(llm.device())?
                                .to_dtype(llm.dtype())?
                                .unsqueeze(0)?;
                            encoder.encode(&EncoderInput::Features(&features))?
                        }
                        // The prompt is the encoder's input; the decoder starts from
                        // `decoder_start_token_id`.
                        None => {
                            let ids = candle_core::Tensor::new(
                                std::mem::take(&mut request.input_ids).as_slice(),
                                llm.device(),
                            )?
                            .unsqueeze(0)?; // [1, s]
                            encoder.encode(&EncoderInput::Ids {
                                input_ids: &ids,
                                attention_mask: None,
                            })?
                        }
                    };
                    if request.input_ids.is_empty() {
                        request.input_ids = decoder_start_token_ids(config, 1)?;
                    }
                    Some(EncoderState {
                        len: out.last_hidden_state.dim(1)?,
                        output: out.last_hidden_state,
                        table: BlockTable::new(),
                        written: false,
                    })
                }
                (None, Some(_)) => return Err(Error::input(
                    "`input_features` are the input of an encoder-decoder model's audio encoder; \
                     this model is decoder-only",
                )),
                (None, None) => None,
            };
        let config = &request.generation_config;
        let t = request.input_ids.len();
        let options = GenerateOptions {
            seed: request.seed,
            logits_processors: request.logits_processors,
            ..GenerateOptions::default()
        };
        let g = config.resolve(model, 1, t, &options)?;
        if !matches!(g.mode, Mode::Greedy | Mode::Sample) {
            return Err(Error::unsupported(format!(
                "generation mode {} in the continuous batching engine (greedy search and sampling only)",
                g.mode.generation_mode()
            )));
        }
        // Settings that change what the engine would return. Its paged cache stands in for the
        // dynamic, static and offloaded caches (the same tokens) and it chunks prompts itself.
        let refused = if matches!(g.cache, CacheImplementation::Quantized(_)) {
            Some("`cache_implementation=\"quantized\"`")
        } else if g.confidence_threshold.is_some() {
            Some("`is_assistant` (the assistant's confidence stopping criterion)")
        } else if g.output_hidden_states || g.output_attentions {
            Some("`output_hidden_states` / `output_attentions`")
        } else if config.token_healing == Some(true) {
            Some("`token_healing` (it re-tokenizes each prompt's end before generating)")
        } else {
            None
        };
        if let Some(setting) = refused {
            return Err(Error::unsupported(format!(
                "{setting} in the continuous batching engine; use `generate()` for it"
            )));
        }
        let lengths = g.lengths;
        if lengths.max_length > model.max_position_embeddings {
            return Err(Error::input(format!(
                "the prompt ({t} tokens) plus the tokens to generate ({}) exceed the model's maximum context length of {} tokens",
                lengths.max_length - t,
                model.max_position_embeddings
            )));
        }
        if let Some(at) = model.recompute_cache_at {
            if t <= at && lengths.max_length > at {
                return Err(Error::unsupported(format!(
                    "this model runs the whole sequence again once it passes {at} tokens (its \
                     LongRoPE's `original_max_position_embeddings`, as transformers' Phi-3 does), \
                     which the continuous batching engine does not do yet: keep the prompt plus \
                     `max_new_tokens` within {at} tokens, or send a prompt longer than {at}"
                )));
            }
        }
        let rows = Rows::Engine {
            vocab_size: model.vocab_size,
        };
        let ctx = GenerationContext::new(
            &g,
            config,
            options,
            rows,
            stop_vocab.map(StopVocabulary::Clean),
        )?;
        Ok(Self {
            id,
            arrival,
            prompt_len: t,
            tokens: request.input_ids,
            computed: 0,
            table: BlockTable::new(),
            states: LayerStates::default(),
            encoder,
            hashes: Vec::new(),
            max_length: lengths.max_length,
            status: RequestStatus::Pending,
            cached_prompt_tokens: 0,
            processors: ctx.processors,
            stopping: ctx.stopping,
            sampler: ctx.sampler,
            logprobs: request.logprobs,
            sink,
        })
    }

    /// Blocks this sequence needs for `tokens` decoder tokens, its encoder output's included.
    pub fn blocks_for(&self, tokens: usize, block_size: usize) -> usize {
        let encoder = self.encoder.as_ref().map_or(0, EncoderState::len);
        tokens.div_ceil(block_size) + encoder.div_ceil(block_size)
    }

    /// Grows its blocks to hold `tokens` decoder tokens, and, first, its cross-attention keys and
    /// values when it has none (its admission); `false` when the pool has too few free blocks
    /// (what was taken stays until [`Sequence::preempt`]).
    pub fn grow(&mut self, tokens: usize, alloc: &mut BlockAllocator) -> bool {
        if let Some(encoder) = &mut self.encoder {
            let len = encoder.len();
            if !encoder.table.grow(len, alloc) {
                return false;
            }
        }
        self.table.grow(tokens, alloc)
    }

    /// Frees every block it holds (decoder and cross-attention) and its recurrent states.
    pub fn release(&mut self, alloc: &mut BlockAllocator) {
        self.table.release(alloc);
        self.states.clear();
        if let Some(encoder) = &mut self.encoder {
            encoder.release(alloc);
        }
    }

    /// Tokens still to compute before the next token can be sampled.
    pub fn pending(&self) -> usize {
        self.tokens.len() - self.computed
    }

    /// Shares the cached full blocks of its prefix (never its last token: the step that computes
    /// it gives the logits of the next one). Returns the tokens it got from the cache.
    pub fn share_prefix(&mut self, alloc: &mut BlockAllocator) -> usize {
        let bs = alloc.block_size();
        let shareable = (self.tokens.len() - 1) / bs;
        let mut parent = None;
        for i in 0..shareable {
            let tokens = &self.tokens[i * bs..(i + 1) * bs];
            let hash = crate::cache::paged::prefix_cache::block_hash(parent, tokens);
            match alloc.lookup(hash, tokens) {
                Some(block) => {
                    self.table.push(block);
                    self.hashes.push(hash);
                    parent = Some(hash);
                }
                None => break,
            }
        }
        self.computed = self.hashes.len() * bs;
        self.computed
    }

    /// Registers the blocks that became full with this step's tokens in the prefix cache.
    pub fn register_full_blocks(&mut self, alloc: &mut BlockAllocator) {
        let bs = alloc.block_size();
        while (self.hashes.len() + 1) * bs <= self.computed {
            let i = self.hashes.len();
            let tokens = &self.tokens[i * bs..(i + 1) * bs];
            let hash =
                crate::cache::paged::prefix_cache::block_hash(self.hashes.last().copied(), tokens);
            alloc.register(self.table.blocks()[i], hash, tokens);
            self.hashes.push(hash);
        }
    }

    /// Frees its blocks and starts over from the first token (preemption by recompute: what was
    /// generated so far is kept and recomputed with the prompt when it is scheduled again).
    pub fn preempt(&mut self, alloc: &mut BlockAllocator) {
        self.release(alloc);
        self.hashes.clear();
        self.computed = 0;
        self.status = RequestStatus::Pending;
    }

    /// Picks the next token from this step's raw `logits` (`[vocab]`), appends it and checks the
    /// stopping criteria; returns the update to send.
    pub fn sample(&mut self, logits: Vec<f32>) -> Result<RequestUpdate> {
        let vocab = logits.len();
        let logprob_row = self.logprobs.map(|_| {
            let lse = log_sum_exp(&logits);
            logits.iter().map(|&x| x - lse).collect::<Vec<f32>>()
        });
        let mut scores = Scores::new(logits, 1, vocab);
        self.processors
            .process(std::slice::from_ref(&self.tokens), &mut scores)?;
        let token = self.sampler.select(&scores)?[0];
        let logprobs = match (logprob_row, self.logprobs) {
            (Some(row), Some(k)) => vec![token_logprob(&row, token, k)],
            _ => Vec::new(),
        };
        Ok(self.accept(token, logprobs))
    }

    /// Whether this step's token is the raw logits' argmax and needs nothing else of the row:
    /// greedy, no processor, at most the chosen token's log-probability asked for (no
    /// alternatives). Such a row can be picked on the device ([`Sequence::take_greedy`]).
    pub fn greedy_only(&self) -> bool {
        matches!(self.sampler, Sampler::Greedy)
            && self.processors.is_empty()
            && self.logprobs.is_none_or(|k| k == 0)
    }

    /// [`Sequence::sample`] for a [`Sequence::greedy_only`] row whose argmax `token` and its
    /// log-probability were found on the device.
    pub fn take_greedy(&mut self, token: TokenId, logprob: f32) -> RequestUpdate {
        debug_assert!(self.greedy_only());
        let logprobs = match self.logprobs {
            Some(_) => vec![TokenLogprob {
                token,
                logprob,
                top: Vec::new(),
            }],
            None => Vec::new(),
        };
        self.accept(token, logprobs)
    }

    /// Appends the step's `token`, checks the stopping criteria; the update to send.
    fn accept(&mut self, token: TokenId, logprobs: Vec<TokenLogprob>) -> RequestUpdate {
        self.tokens.push(token);
        let finish = self.stopping.check(&self.tokens);
        self.status = if finish.is_some() {
            RequestStatus::Finished
        } else {
            RequestStatus::Decoding
        };
        self.update(vec![token], logprobs, finish, None)
    }

    /// An update from this sequence.
    pub fn update(
        &self,
        new_tokens: Vec<TokenId>,
        logprobs: Vec<TokenLogprob>,
        finish_reason: Option<FinishReason>,
        error: Option<Arc<Error>>,
    ) -> RequestUpdate {
        RequestUpdate {
            request_id: self.id.clone(),
            new_tokens,
            logprobs,
            status: self.status,
            finish_reason,
            error,
            cached_prompt_tokens: self.cached_prompt_tokens,
            at: Instant::now(),
        }
    }

    /// Sends an update; `false` when the receiver is gone.
    pub fn send(&mut self, update: RequestUpdate) -> bool {
        self.sink.send(update)
    }

    /// Ends the request with `status` (cancelled or failed) and frees its blocks.
    pub fn end(
        &mut self,
        status: RequestStatus,
        error: Option<Arc<Error>>,
        alloc: &mut BlockAllocator,
    ) {
        self.release(alloc);
        self.status = status;
        let update = self.update(Vec::new(), Vec::new(), None, error);
        self.send(update);
    }
}

/// The chosen token's log-probability and the `k` best alternatives.
fn token_logprob(row: &[f32], token: TokenId, k: usize) -> TokenLogprob {
    let mut top: Vec<(TokenId, f32)> = Vec::with_capacity(k);
    if k > 0 {
        let mut idx: Vec<usize> = (0..row.len()).collect();
        let k = k.min(row.len());
        idx.select_nth_unstable_by(k.saturating_sub(1), |&a, &b| row[b].total_cmp(&row[a]));
        idx.truncate(k);
        idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        top = idx.into_iter().map(|i| (i as TokenId, row[i])).collect();
    }
    TokenLogprob {
        token,
        logprob: row[token as usize],
        top,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_logprobs_are_best_first() {
        let row = [-3.0f32, -0.5, -2.0, -0.1];
        let lp = token_logprob(&row, 2, 2);
        assert_eq!(lp.logprob, -2.0);
        assert_eq!(lp.top, vec![(3, -0.1), (1, -0.5)]);
        assert!(token_logprob(&row, 0, 0).top.is_empty());
    }
}
