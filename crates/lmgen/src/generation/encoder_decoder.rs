//! `generate()` for encoder-decoder models: HF `_prepare_encoder_decoder_kwargs_for_generation`
//! (the encoder runs once on the caller's rows) and `_prepare_decoder_input_ids_for_generation`
//! (the decoder starts from `decoder_start_token_id`), then the same decoding loops as a
//! decoder-only model, over a cache that carries the encoder's output
//! ([`crate::cache::EncoderDecoderCache`]).
//!
//! As in transformers, `max_length`, `min_length` and `max_new_tokens` count decoder tokens (the
//! start token included), `sequences` holds the decoder's tokens from its start token on, and the
//! encoder processors (`encoder_repetition_penalty`, `encoder_no_repeat_ngram_size`) read the
//! encoder's input ids, unexpanded (audio features have none: both are then ignored with a
//! warning, as transformers does).

use candle_core::Tensor;
use serde_json::Value;

use super::context::{GenerationContext, Rows, StopVocabulary};
use super::resolve::{DraftSource, Mode};
use super::strategies;
use super::{memory, GenerateInput, GenerateOptions, GenerateOutput, GenerationConfig};
use crate::error::{Error, Result};
use crate::models::seq2seq::{Encoder, EncoderInput};
use crate::models::CausalLM;
use crate::TokenId;

/// What the encoder of an encoder-decoder `generate()` reads.
#[derive(Debug, Clone)]
pub enum EncoderInputs {
    /// Token ids with their padding mask (HF `input_ids`, `attention_mask`): T5, BART, Marian.
    /// Rows padded on either side; the mask says which positions are real.
    Ids(GenerateInput),
    /// `[b, n_mels, frames]` f32 audio features (HF `input_features`): Whisper.
    Features(Tensor),
}

/// The inputs of an encoder-decoder `generate()`.
#[derive(Debug, Clone)]
pub struct Seq2SeqInput {
    /// The encoder's input.
    pub encoder: EncoderInputs,
    /// The decoder's prompt, one row per encoder row, all of one length (HF `decoder_input_ids`);
    /// `None` starts every row from `decoder_start_token_id`. A prompt whose rows all start with
    /// another token gets the start token prepended, as transformers does (except for models that
    /// take the prompt as given: Whisper).
    pub decoder_input_ids: Option<Vec<Vec<TokenId>>>,
    /// `[b][t]` padding of `decoder_input_ids` (HF `decoder_attention_mask`: 1 = real token,
    /// 0 = padding, e.g. Whisper's left-padded earlier text); `None`: nothing is padded.
    pub decoder_attention_mask: Option<Vec<Vec<u8>>>,
}

impl Seq2SeqInput {
    /// Text in, decoding from the start token.
    pub fn ids(input: GenerateInput) -> Self {
        Self {
            encoder: EncoderInputs::Ids(input),
            decoder_input_ids: None,
            decoder_attention_mask: None,
        }
    }

    /// Audio features in, decoding from the start token.
    pub fn features(input_features: Tensor) -> Self {
        Self {
            encoder: EncoderInputs::Features(input_features),
            decoder_input_ids: None,
            decoder_attention_mask: None,
        }
    }
}

/// HF `generate()` on an encoder-decoder model (one whose [`CausalLM::encoder`] is `Some`).
pub fn generate_seq2seq(
    model: &dyn CausalLM,
    input: &Seq2SeqInput,
    config: &GenerationConfig,
    mut options: GenerateOptions<'_>,
) -> Result<GenerateOutput> {
    let encoder = model.encoder().ok_or_else(|| {
        Error::input(format!(
            "`{}` is a decoder-only model: pass its prompt as `input_ids` (encoder inputs and \
             `decoder_input_ids` are for encoder-decoder models)",
            model.config().architecture.model_type()
        ))
    })?;
    let vocab_size = model.config().vocab_size;
    let (batch, encoder_ids, encoder_output) = match &input.encoder {
        EncoderInputs::Ids(ids) => {
            expect_input(encoder, "input_ids")?;
            let (batch, _) = ids.validate(vocab_size)?;
            let t = Tensor::new(ids.input_ids.clone(), model.device())?; // [b, s]
            let out = encoder.encode(&EncoderInput::Ids {
                input_ids: &t,
                attention_mask: ids.attention_mask.as_deref(),
            })?;
            (batch, Some(&ids.input_ids), out)
        }
        EncoderInputs::Features(features) => {
            expect_input(encoder, "input_features")?;
            let (batch, _, _) = features.dims3().map_err(|_| {
                Error::input(format!(
                    "`input_features` must be [batch, n_mels, frames], got {:?}",
                    features.dims()
                ))
            })?;
            if batch == 0 {
                return Err(Error::input(
                    "`input_features` is empty: pass at least one row",
                ));
            }
            let features = features.to_device(model.device())?;
            (
                batch,
                None,
                encoder.encode(&EncoderInput::Features(&features))?,
            )
        }
    };
    let start = decoder_start_token_ids(config, batch)?;
    let input_ids = decoder_input_ids(
        input.decoder_input_ids.as_deref(),
        &start,
        encoder.prepends_decoder_start(),
    )?;
    let prepended = input
        .decoder_input_ids
        .as_ref()
        .and_then(|rows| rows.first())
        .is_some_and(|row| input_ids.first().is_some_and(|r| r.len() > row.len()));
    let attention_mask = input.decoder_attention_mask.as_ref().map(|rows| {
        rows.iter()
            .map(|r| {
                let start = prepended.then_some(1u8);
                start.into_iter().chain(r.iter().copied()).collect()
            })
            .collect()
    });
    let decoder = GenerateInput {
        input_ids,
        attention_mask,
    };
    let (_, decoder_len) = decoder.validate(vocab_size).map_err(|e| match e {
        Error::Input { message, .. } => Error::input(format!("`decoder_input_ids`: {message}")),
        other => other,
    })?;
    let mut g = config.resolve(model.config(), batch, decoder_len, &options)?;
    refuse_decoder_only_modes(&g, config, &options)?;
    g.encoder = Some(encoder_output);
    memory::check_fits(model, &g, memory::Prompt::Masked)?;
    let copies = g.copies();
    let expand = |rows: &GenerateInput| match copies {
        1 => rows.clone(),
        n => strategies::sample::expand(rows, n),
    };
    let decoder = expand(&decoder);
    let assistant_encoder_output = match options.assistant_model {
        Some(draft) => Some(draft_encoder_output(model, draft, &input.encoder)?),
        None => None,
    };
    let assistant = strategies::assisted::Assistant {
        model: options.assistant_model.take(),
        tokenizer: options.tokenizer,
        assistant_tokenizer: options.assistant_tokenizer.take(),
        encoder_output: assistant_encoder_output,
    };
    let stop_vocabulary = options.tokenizer.map(StopVocabulary::Tokenizer);
    // The encoder processors read the encoder's ids as given, not expanded (transformers'
    // `encoder_input_ids`: `EncoderRepetitionPenalty` changes only the first `batch` rows of the
    // scores, `EncoderNoRepeatNGram` maps hypothesis `h` to encoder row `h / num_beams`).
    let rows = Rows::Generate {
        model,
        prompt_ids: encoder_ids.map(Vec::as_slice),
    };
    let ctx = GenerationContext::new(&g, config, options, rows, stop_vocabulary)?;
    super::dispatch(model, &decoder, &g, ctx, assistant)
}

/// HF `assistant_encoder_outputs`: an encoder-decoder draft's own encoder run on the call's
/// encoder input (before expansion; assisted decoding has one row).
fn draft_encoder_output(
    model: &dyn CausalLM,
    draft: &dyn CausalLM,
    input: &EncoderInputs,
) -> Result<crate::models::seq2seq::EncoderOutput> {
    let encoder = draft.encoder().ok_or_else(|| {
        Error::input(format!(
            "the assistant model `{}` is decoder-only; an encoder-decoder model (`{}`) drafts with an encoder-decoder assistant",
            draft.config().architecture.model_type(),
            model.config().architecture.model_type()
        ))
    })?;
    if draft.config().vocab_size != model.config().vocab_size {
        return Err(Error::unsupported(
            "an encoder-decoder model's draft must share its vocabulary (`assistant_tokenizer`, universal assisted decoding, is for decoder-only models)",
        ));
    }
    match input {
        EncoderInputs::Ids(ids) => {
            expect_input(encoder, "input_ids")?;
            let t = Tensor::new(ids.input_ids.clone(), draft.device())?; // [b, s]
            encoder.encode(&EncoderInput::Ids {
                input_ids: &t,
                attention_mask: ids.attention_mask.as_deref(),
            })
        }
        EncoderInputs::Features(features) => {
            expect_input(encoder, "input_features")?;
            encoder.encode(&EncoderInput::Features(
                &features.to_device(draft.device())?,
            ))
        }
    }
}

/// The encoder reads `name` (`input_ids` or `input_features`).
fn expect_input(encoder: &dyn Encoder, name: &str) -> Result<()> {
    let wants = encoder.main_input_name();
    if wants == name {
        return Ok(());
    }
    Err(Error::input(format!(
        "this model's encoder reads `{wants}`, not `{name}`{}",
        if wants == "input_features" {
            ": pass audio features (a log-mel spectrogram), e.g. through `lmgen transcribe`"
        } else {
            ""
        }
    )))
}

/// HF `_prepare_special_tokens`: `decoder_start_token_id` (one id, or one per row), else
/// `bos_token_id`.
pub(crate) fn decoder_start_token_ids(
    config: &GenerationConfig,
    batch: usize,
) -> Result<Vec<TokenId>> {
    let id = |v: &Value| {
        v.as_u64()
            .and_then(|id| TokenId::try_from(id).ok())
            .ok_or_else(|| {
                Error::config(format!(
                    "`decoder_start_token_id` must be a token id or a list of them, got {v}"
                ))
            })
    };
    match config.decoder_start_token_id.as_ref() {
        Some(Value::Array(ids)) => {
            if ids.len() != batch {
                return Err(Error::config(format!(
                    "`decoder_start_token_id` expected to have length {batch} but got {}",
                    ids.len()
                )));
            }
            ids.iter().map(id).collect()
        }
        Some(Value::Null) | None => match config.bos_token_id {
            Some(bos) => Ok(vec![bos; batch]),
            None => Err(Error::config(
                "`decoder_start_token_id` or `bos_token_id` has to be defined for encoder-decoder generation.",
            )),
        },
        Some(v) => Ok(vec![id(v)?; batch]),
    }
}

/// HF `_prepare_decoder_input_ids_for_generation`: the start token alone, or the caller's
/// prompt, with the start token prepended when every row starts with another token (and the
/// model expects it, see [`Encoder::prepends_decoder_start`]).
fn decoder_input_ids(
    given: Option<&[Vec<TokenId>]>,
    start: &[TokenId],
    prepend: bool,
) -> Result<Vec<Vec<TokenId>>> {
    let Some(given) = given else {
        return Ok(start.iter().map(|&s| vec![s]).collect());
    };
    if given.len() != start.len() {
        return Err(Error::input(format!(
            "`decoder_input_ids` has {} rows but the encoder input has {}",
            given.len(),
            start.len()
        )));
    }
    let all_differ = given
        .iter()
        .zip(start)
        .all(|(row, &s)| row.first() != Some(&s));
    if prepend && all_differ {
        return Ok(given
            .iter()
            .zip(start)
            .map(|(row, &s)| std::iter::once(s).chain(row.iter().copied()).collect())
            .collect());
    }
    Ok(given.to_vec())
}

/// What runs on decoder-only models only.
fn refuse_decoder_only_modes(
    g: &super::ResolvedGeneration,
    config: &GenerationConfig,
    options: &GenerateOptions<'_>,
) -> Result<()> {
    if let Mode::Dola(_) = g.mode {
        // transformers 4.47's `_dola_decoding` raises the same.
        return Err(Error::config(
            "DoLa decoding is only available for decoder-only models (`dola_layers`)",
        ));
    }
    if let Mode::Assisted(a) = g.mode {
        if matches!(a.draft.source, DraftSource::Model { .. })
            && options.assistant_tokenizer.is_some()
        {
            return Err(Error::unsupported(
                "an encoder-decoder model's draft must share its tokenizer (`assistant_tokenizer`, universal assisted decoding, is for decoder-only models)",
            ));
        }
    }
    if config.token_healing == Some(true) {
        // transformers heals the decoder's start tokens (and fails on T5, which has no BOS token).
        return Err(Error::config(
            "`token_healing` re-tokenizes a decoder-only prompt; it does not apply to an encoder-decoder model",
        ));
    }
    if config.guidance_scale.is_some_and(|s| s != 1.0) {
        return Err(Error::unsupported(
            "classifier-free guidance (`guidance_scale`) runs the model on a negative prompt without the encoder's output; it is not built for encoder-decoder models",
        ));
    }
    if g.output_attentions {
        return Err(Error::unsupported(
            "`output_attentions` on an encoder-decoder model (encoder, decoder and cross-attention weights) is not built yet",
        ));
    }
    if options.negative_prompt_ids.is_some() {
        return Err(Error::unsupported(
            "`negative_prompt_ids` is for classifier-free guidance, which is not built for encoder-decoder models",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config(v: Value) -> GenerationConfig {
        GenerationConfig::from_json(&v, super::super::config::UnknownFields::Reject).unwrap()
    }

    #[test]
    fn start_token_falls_back_to_bos_and_checks_lengths() {
        let c = config(json!({"decoder_start_token_id": 5}));
        assert_eq!(decoder_start_token_ids(&c, 2).unwrap(), [5, 5]);
        let c = config(json!({"decoder_start_token_id": [5, 6]}));
        assert_eq!(decoder_start_token_ids(&c, 2).unwrap(), [5, 6]);
        assert!(decoder_start_token_ids(&c, 3).is_err());
        let c = config(json!({"bos_token_id": 1}));
        assert_eq!(decoder_start_token_ids(&c, 1).unwrap(), [1]);
        let err = decoder_start_token_ids(&config(json!({})), 1).unwrap_err();
        assert!(err.to_string().contains("decoder_start_token_id"), "{err}");
    }

    #[test]
    fn start_token_is_prepended_only_when_every_row_lacks_it() {
        let start = [0, 0];
        assert_eq!(decoder_input_ids(None, &start, true).unwrap(), [[0], [0]]);
        let given = vec![vec![4, 5], vec![6, 7]];
        assert_eq!(
            decoder_input_ids(Some(&given), &start, true).unwrap(),
            [[0, 4, 5], [0, 6, 7]]
        );
        assert_eq!(
            decoder_input_ids(Some(&given), &start, false).unwrap(),
            given
        );
        let mixed = vec![vec![0, 5], vec![6, 7]];
        assert_eq!(
            decoder_input_ids(Some(&mixed), &start, true).unwrap(),
            mixed
        );
        assert!(decoder_input_ids(Some(&given[..1]), &start, true).is_err());
    }
}
