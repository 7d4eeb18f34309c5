//! The one-call path, like transformers' `pipeline("text-generation")`: a model id or folder in,
//! text out.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::generation::streamer::{TextSink, TextStreamer, TextStreamerOptions};
use crate::generation::structured::StructuredOutput;
use crate::generation::{
    generate_seq2seq, generate_with, GenerateInput, GenerateOptions, GenerateOutput,
    GenerationConfig, Seq2SeqInput,
};
use crate::load::Checkpoint;
use crate::models::{load_model, CausalLM, LoadOptions};
use crate::tokenizer::Tokenizer;

/// A loaded model with its tokenizer and generation defaults.
pub struct Pipeline {
    /// The model, with its [`ModelConfig`](crate::models::ModelConfig) (`model.config()`).
    pub model: Box<dyn CausalLM>,
    /// The checkpoint's tokenizer (`tokenizer.json`, `tokenizer_config.json`).
    pub tokenizer: Tokenizer,
    /// The checkpoint's `generation_config.json` (or the generation fields of `config.json`).
    pub generation_config: GenerationConfig,
    /// The checkpoint directory.
    pub dir: PathBuf,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("dir", &self.dir)
            .field("architecture", &self.model.config().architecture)
            .finish()
    }
}

impl Pipeline {
    /// Loads a checkpoint directory or a model id (`org/name[@revision]`, from the local HF cache,
    /// downloaded into it from the Hub when missing) on CPU in f32.
    pub fn from_pretrained(id_or_dir: &str) -> Result<Self> {
        Self::load(id_or_dir, &LoadOptions::default())
    }

    /// Loads with explicit dtype, device and hub options ([`LoadOptions::hub`]: revision, token,
    /// offline).
    ///
    /// With [`LoadOptions::gguf_file`], or when `id_or_dir` is a `.gguf` file, the weights and the
    /// config come from that GGUF file and the tokenizer from `tokenizer.json` beside it (see
    /// [`Checkpoint::from_pretrained`]).
    pub fn load(id_or_dir: &str, options: &LoadOptions) -> Result<Self> {
        Self::load_with(id_or_dir, options, |c| load_model(c, options))
    }

    /// [`Self::load`] with the model split across `shard`'s ranks: this rank's part
    /// ([`crate::models::load_model_sharded`]), and the whole tokenizer and generation config.
    pub fn load_sharded(
        id_or_dir: &str,
        options: &LoadOptions,
        shard: &crate::parallel::Shard,
    ) -> Result<Self> {
        Self::load_with(id_or_dir, options, |c| {
            crate::models::load_model_sharded(c, options, shard)
        })
    }

    fn load_with(
        id_or_dir: &str,
        options: &LoadOptions,
        load: impl FnOnce(&Checkpoint) -> Result<Box<dyn CausalLM>>,
    ) -> Result<Self> {
        let checkpoint =
            Checkpoint::from_pretrained(id_or_dir, options.gguf_file.as_deref(), &options.hub)?;
        let dir = checkpoint.dir.clone();
        if let Some(gguf) = checkpoint.weights.gguf_path() {
            if !dir.join("tokenizer.json").is_file() {
                return Err(Error::Tokenizer(format!(
                    "GGUF file `{}`: no tokenizer.json in `{}`. lmgen does not build a tokenizer \
                     from GGUF metadata; put the original model's tokenizer.json (and \
                     generation_config.json) in that directory, or pass the model's directory \
                     with the GGUF file as `gguf_file`",
                    gguf.display(),
                    dir.display()
                )));
            }
        }
        let model = load(&checkpoint)?;
        let tokenizer = Tokenizer::from_dir(&dir)?;
        let generation_config = GenerationConfig::from_pretrained(&dir)?;
        Ok(Self {
            model,
            tokenizer,
            generation_config,
            dir,
        })
    }

    /// The checkpoint's generation config updated with `overrides` (transformers' precedence).
    pub fn config_with(&self, overrides: &GenerationConfig) -> GenerationConfig {
        let mut config = self.generation_config.clone();
        config.update(overrides);
        config
    }

    /// Generates from token ids.
    pub fn generate(
        &self,
        input: &GenerateInput,
        overrides: &GenerationConfig,
    ) -> Result<GenerateOutput> {
        self.generate_with(input, overrides, GenerateOptions::default())
    }

    /// Generates with the other `generate()` arguments (seed, streamer, user processors and
    /// criteria, ...). The pipeline's tokenizer is passed for `stop_strings` and `token_healing`
    /// unless one is given, and its generation config as the model's (`token_healing`).
    pub fn generate_with<'a>(
        &'a self,
        input: &GenerateInput,
        overrides: &GenerationConfig,
        mut options: GenerateOptions<'a>,
    ) -> Result<GenerateOutput> {
        if options.tokenizer.is_none() {
            options.tokenizer = Some(&self.tokenizer);
        }
        if options.model_generation_config.is_none() {
            options.model_generation_config = Some(&self.generation_config);
        }
        generate_with(
            self.model.as_ref(),
            input,
            &self.config_with(overrides),
            options,
        )
    }

    /// Generates with an encoder-decoder model from its encoder's input (token ids or audio
    /// features) and an optional decoder prompt ([`crate::generation::generate_seq2seq`]). The
    /// pipeline's tokenizer is passed for `stop_strings` unless one is given.
    pub fn generate_seq2seq_with<'a>(
        &'a self,
        input: &Seq2SeqInput,
        overrides: &GenerationConfig,
        mut options: GenerateOptions<'a>,
    ) -> Result<GenerateOutput> {
        if options.tokenizer.is_none() {
            options.tokenizer = Some(&self.tokenizer);
        }
        generate_seq2seq(
            self.model.as_ref(),
            input,
            &self.config_with(overrides),
            options,
        )
    }

    /// Whether the model is an encoder-decoder one (T5, BART, Marian): the prompt is the encoder's
    /// input, and the output is the decoder's sequence, which does not repeat it
    /// ([`GenerateOutput::generated`] skips the decoder's start token).
    pub fn is_encoder_decoder(&self) -> bool {
        self.model.encoder().is_some()
    }

    /// Tokenizes prompts, padding a batch with the pad token (else the first EOS): on the left
    /// for a decoder-only model, on the right for an encoder-decoder model's encoder (as its
    /// tokenizer pads; BART's and Marian's learned or sinusoidal positions count from the first
    /// token, padding or not, so the side matters).
    pub fn encode_prompts(
        &self,
        prompts: &[String],
        overrides: &GenerationConfig,
    ) -> Result<GenerateInput> {
        let rows = prompts
            .iter()
            .map(|p| self.tokenizer.encode(p))
            .collect::<Result<Vec<_>>>()?;
        let pad = self
            .tokenizer
            .pad_token_id()
            .or_else(|| self.config_with(overrides).pad_token_id_or_eos())
            .or(self.model.config().pad_token_id);
        match pad {
            Some(pad) if self.is_encoder_decoder() => Ok(GenerateInput::right_padded(rows, pad)),
            Some(pad) => Ok(GenerateInput::left_padded(rows, pad)),
            None if rows.iter().all(|r| r.len() == rows[0].len()) => Ok(GenerateInput {
                input_ids: rows,
                attention_mask: None,
            }),
            None => Err(Error::input(
                "prompts of different lengths need a pad token, and this tokenizer has neither a pad nor an EOS token; set `pad_token_id`",
            )),
        }
    }

    /// The structured-output compiler for this model's tokenizer: text ends with the resolved
    /// `eos_token_id` (`overrides` applied; the tokenizer's EOS token when the config has none).
    /// Building it indexes the vocabulary once; keep it and call
    /// [`StructuredOutput::processor`] for each request.
    pub fn structured_output(&self, overrides: &GenerationConfig) -> Result<StructuredOutput> {
        let mut eos = self.config_with(overrides).eos_token_ids();
        if eos.is_empty() {
            eos.extend(self.tokenizer.eos_token_id());
        }
        StructuredOutput::new(&self.tokenizer, &eos)
    }

    /// Generates a continuation of `prompt` (for an encoder-decoder model: the decoder's output
    /// for it) and returns only the new text (special tokens skipped).
    pub fn generate_text(&self, prompt: &str, overrides: &GenerationConfig) -> Result<String> {
        let input = self.encode_prompts(&[prompt.to_string()], overrides)?;
        let out = self.generate(&input, overrides)?;
        self.tokenizer.decode(out.generated(0), true)
    }

    /// Generates from one prompt's token ids, sending the new text to `sink` chunk by chunk
    /// (`skip_prompt`, `skip_special_tokens`); returns the whole new text.
    pub fn stream(
        &self,
        input: &GenerateInput,
        overrides: &GenerationConfig,
        seed: Option<u64>,
        sink: impl TextSink,
    ) -> Result<String> {
        let mut streamer = TextStreamer::with_sink(self.tokenizer.clone(), Self::STREAM, sink);
        let out = self.generate_with(
            input,
            overrides,
            GenerateOptions {
                seed,
                streamer: Some(&mut streamer),
                ..GenerateOptions::default()
            },
        )?;
        self.tokenizer.decode(out.generated(0), true)
    }

    /// How [`Pipeline::stream`] streams: new text only, special tokens skipped.
    pub const STREAM: TextStreamerOptions = TextStreamerOptions {
        skip_prompt: true,
        skip_special_tokens: true,
    };

    /// `generate()` options drafting with `assistant` (HF `generate(assistant_model=...)`). When
    /// the two vocabularies differ, both tokenizers are passed too (HF `tokenizer=`,
    /// `assistant_tokenizer=`: universal assisted decoding).
    pub fn assisted_by<'a>(&'a self, assistant: &'a Pipeline) -> GenerateOptions<'a> {
        let same_vocab = assistant.model.config().vocab_size == self.model.config().vocab_size;
        GenerateOptions {
            assistant_model: Some(assistant.model.as_ref()),
            tokenizer: Some(&self.tokenizer),
            assistant_tokenizer: (!same_vocab).then_some(&assistant.tokenizer),
            ..GenerateOptions::default()
        }
    }
}
